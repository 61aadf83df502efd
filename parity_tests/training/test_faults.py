"""Runs that survive faults: kill -9 mid-run then ``--resume`` reproduces the
uninterrupted run step for step; a crash in the middle of a checkpoint write never leaves a bad
``last.pt``; a diverging run stops naming the step and keeps its last good checkpoint; a
truncated, garbage or code-carrying ``last.pt`` stops ``--resume`` with one line.

Covered elsewhere (not repeated here): SIGINT saves ``last.pt`` and exits 130 with one line
(test_cli ``test_sigint_saves_last_pt_exits_130_and_resume_continues``, in-process exact resume in
test_train ``test_resume_after_sigint_gives_the_same_numbers_as_a_straight_run``); checkpoints
whose vocabulary or model config do not fit the data or the flags (test_train
``test_resume_refuses_other_data_or_another_model``, test_cli ``test_train_resume_problems``,
``test_evaluate_rejects_data_outside_the_vocabulary``, test_checkpoint ``*_mismatch_*``);
``weights_only`` refusing pickled code and truncated/garbage files at the loader (test_checkpoint);
bad command-line values (test_cli ``test_train_rejects_bad_values_with_one_line_and_exit_2``,
``test_more_bad_train_inputs``, ``test_train_without_data_offline_says_how_to_install_it``);
bad data-parallel launches (test_distributed).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import OFFLINE, REPO, TINY_MODEL, assert_in_process_error, call, synthetic_text
from test_checkpoint import CodePayload
from test_train import read_events, scalar_values

from numpy_ref.config import ModelConfig
from torch_lm.cli.train import main as train_main
from torch_lm.neural_lm import NeuralLM
from torch_lm.training import text as text_module
from torch_lm.training.checkpoint import (
    CheckpointError,
    build_checkpoint,
    load_checkpoint,
    remove_stale_temporaries,
    save_checkpoint,
)
from torch_lm.training.config import TrainConfig
from torch_lm.training.step import parameter_groups
from torch_lm.training.tensorboard_log import METRICS_FILE, MetricsFile, TensorBoardLogger, read_metrics
from torch_lm.training.vocab import CharVocab


@pytest.fixture(scope="module")
def text_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("faults") / "text.txt"
    path.write_text(synthetic_text())
    return path


def train_records(run_dir: Path) -> list[tuple[int, float]]:
    """(step, train loss) of every log step in ``metrics.jsonl``."""
    return [(r["step"], r["loss/train"]) for r in read_metrics(run_dir / METRICS_FILE) if "loss/train" in r]


def complete_records(run_dir: Path) -> list[str]:
    """The lines of a live or killed run's ``metrics.jsonl`` that were written whole."""
    path = run_dir / METRICS_FILE
    return path.read_text().split("\n")[:-1] if path.exists() else []


# ----------------------------------------------------------------------------- kill -9
@pytest.mark.slow
def test_kill_9_mid_run_then_resume_gives_the_uninterrupted_losses(text_file, tmp_path, capsys):
    # A constant lr (warmup 0, min_lr = lr) makes the numbers independent of --max-steps, so the
    # killed run can be open-ended and the straight run stop wherever the resumed one does.
    flags = [
        "--data",
        str(text_file),
        *TINY_MODEL,
        "--lr",
        "0.01",
        "--min-lr",
        "0.01",
        "--warmup-steps",
        "0",
        "--log-interval",
        "1",
        "--checkpoint-interval",
        "10",
        "--eval-interval",
        "1000000",
    ]
    killed = tmp_path / "killed"
    process = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "scripts" / "train.py"),
            *flags,
            "--max-steps",
            "1000000",
            "--run-dir",
            str(killed),
        ],
        env={**os.environ, "OMP_NUM_THREADS": "1", **OFFLINE},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(complete_records(killed)) < 25:
            time.sleep(0.02)
    finally:
        process.kill()  # SIGKILL: no handler runs, no file is closed properly
        process.wait()
    assert process.returncode == -signal.SIGKILL
    saved_step = load_checkpoint(killed / "last.pt")["step"]
    assert saved_step >= 20 and saved_step % 10 == 0  # every 10 steps, at least twice
    final_step = len(complete_records(killed)) + 10  # one record per step, beyond the kill
    # What a kill in the middle of a checkpoint write leaves behind; the resumed run removes it.
    stale = killed / ".last.pt.crashed.tmp"
    stale.write_bytes(b"half a checkpoint")

    assert (
        train_main(["--data", str(text_file), "--run-dir", str(killed), "--resume", "--max-steps", str(final_step)])
        == 0
    )
    straight = tmp_path / "straight"
    assert train_main([*flags, "--max-steps", str(final_step), "--run-dir", str(straight)]) == 0
    capsys.readouterr()

    assert train_records(killed) == train_records(straight)  # exact, every step once
    assert [step for step, _ in train_records(killed)] == list(range(1, final_step + 1))
    assert scalar_values(read_events(killed), "loss/train") == scalar_values(read_events(straight), "loss/train")
    resumed, reference = load_checkpoint(killed / "last.pt"), load_checkpoint(straight / "last.pt")
    for name, value in reference["model"].items():
        assert torch.equal(resumed["model"][name], value), name
    assert not stale.exists()


def test_a_resumed_run_drops_the_metrics_logged_after_its_checkpoint(tmp_path):
    path = tmp_path / METRICS_FILE
    path.write_text(
        "".join(f'{{"step": {step}, "loss/train": {step / 10}}}\n' for step in range(1, 8)) + '{"step": 8, "loss/tr'
    )  # torn by a crash
    metrics = MetricsFile(path, purge_step=5)
    metrics.write(5, {"loss/train": 9.0})
    metrics.close()
    assert [(r["step"], r["loss/train"]) for r in read_metrics(path)] == [
        (1, 0.1),
        (2, 0.2),
        (3, 0.3),
        (4, 0.4),
        (5, 9.0),
    ]
    MetricsFile(path).close()  # a fresh run starts the file anew
    assert path.read_text() == ""


def test_a_run_restarted_within_the_same_second_writes_the_event_file_that_sorts_last(tmp_path):
    # TensorBoard replays a run's event files in name order; names begin with whole seconds.
    predecessor = f"events.out.tfevents.{int(time.time())}.~host-sorting-last.1.0"
    (tmp_path / predecessor).write_bytes(b"")
    TensorBoardLogger(tmp_path, purge_step=5).close()
    names = sorted(path.name for path in tmp_path.glob("events.out.tfevents.*"))
    assert len(names) == 2 and names[0] == predecessor


# ----------------------------------------------------------------------------- divergence
def test_a_diverging_run_stops_naming_the_step_and_keeps_the_last_good_checkpoint(text_file, tmp_path, capsys):
    # lr 1e30: the first AdamW step moves every weight by ~1e30, and within a step or two the
    # float32 weights or loss overflow. No test hook: the run diverges the way a real one does.
    run_dir = tmp_path / "diverged"
    outcome = call(
        capsys,
        train_main,
        "--data",
        str(text_file),
        *TINY_MODEL,
        "--lr",
        "1e30",
        "--warmup-steps",
        "0",
        "--log-interval",
        "1",
        "--checkpoint-interval",
        "1",
        "--max-steps",
        "10",
        "--run-dir",
        str(run_dir),
    )
    code, err = outcome
    # stderr also holds the progress bar the run drew before it stopped; the error is the end.
    assert code == 1 and "Traceback" not in err
    # The weights can overflow a step before the loss does: the checkpoint refuses them.
    last_line = err.strip().splitlines()[-1]
    match = re.fullmatch(
        r"train\.py: error: (training loss|weights) became non-finite at step "
        r"(\d+); stopped \(the last good checkpoint is .*last\.pt \(step "
        r"(\d+)\)\); try a lower --lr or --grad-clip",
        last_line,
    )
    assert match, err
    bad_step, kept_step = int(match.group(2)), int(match.group(3))
    assert 1 < bad_step < 10 and kept_step == bad_step - 1
    last = load_checkpoint(run_dir / "last.pt")
    assert last["step"] == kept_step
    assert all(torch.isfinite(value).all() for value in last["model"].values())
    # Every finite loss was logged (through the bad step when only the weights overflowed).
    last_finite = bad_step if match.group(1) == "weights" else bad_step - 1
    assert [step for step, _ in train_records(run_dir)] == list(range(1, last_finite + 1))


# ----------------------------------------------------------------------------- unusable last.pt
@pytest.fixture(scope="module")
def finished_run(text_file, tmp_path_factory) -> Path:
    """A 4-step run directory with a good ``last.pt``."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    assert (
        train_main(
            [
                "--data",
                str(text_file),
                *TINY_MODEL,
                "--max-steps",
                "4",
                "--eval-interval",
                "4",
                "--run-dir",
                str(run_dir),
            ]
        )
        == 0
    )
    return run_dir


@pytest.mark.parametrize(
    "spoil, pattern",
    [
        (
            lambda data, marker: data[: len(data) // 2],
            r"cannot read checkpoint .*last\.pt: truncated or not a torch checkpoint",
        ),
        (lambda data, marker: b"\x00garbage" * 100, r"cannot read checkpoint .*last\.pt"),
        (
            lambda data, marker: code_carrying_checkpoint(data, marker),
            r"refusing checkpoint .*last\.pt: it references (posix|nt)\.system, which is not plain data",
        ),
    ],
    ids=["truncated", "garbage", "pickled code"],
)
def test_resume_from_an_unusable_last_pt_fails_in_one_line(spoil, pattern, finished_run, text_file, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    marker = tmp_path / "payload_ran"
    last = run_dir / "last.pt"
    last.write_bytes(spoil(last.read_bytes(), marker))
    outcome = call(
        capsys, train_main, "--data", str(text_file), "--run-dir", str(run_dir), "--resume", "--max-steps", "8"
    )
    assert_in_process_error(outcome, 1, pattern)
    assert not marker.exists()


def code_carrying_checkpoint(data: bytes, marker: Path) -> bytes:
    """The checkpoint in ``data`` with its weights replaced by a pickled ``os.system`` call."""
    checkpoint = torch.load(io.BytesIO(data), weights_only=True)
    buffer = io.BytesIO()
    torch.save({**checkpoint, "model": CodePayload(marker)}, buffer)
    return buffer.getvalue()


# ----------------------------------------------------------------------------- a crash mid-save
def small_checkpoint(step: int) -> dict:
    """A real checkpoint of a tiny model after one AdamW step, labelled ``step``."""
    vocab = CharVocab.from_text("abc d\n")
    config = ModelConfig(vocab_size=len(vocab), context=2, embed_dim=3, hidden_dim=5)
    model = NeuralLM(config)
    optimizer = torch.optim.AdamW(parameter_groups(model, 0.1))
    model(torch.zeros(2, 2, dtype=torch.int64), torch.ones(2, dtype=torch.int64))[1].backward()
    optimizer.step()
    return build_checkpoint(
        model,
        optimizer,
        config,
        TrainConfig().to_dict(),
        vocab,
        step,
        float("inf"),
        {"dropout": torch.Generator().get_state()},
        0.0,
        0,
    )


def die(*args, **kwargs) -> None:
    """What a power cut or kill -9 does at this point: the process ends, no cleanup runs."""
    os.kill(os.getpid(), signal.SIGKILL)


REAL_FDOPEN = os.fdopen


class HalfWriteThenDie:
    """A file that writes the first half of what it is given, flushes it, and dies."""

    def __init__(self, file):
        self.file = file

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def write(self, data) -> None:
        data = bytes(data)
        self.file.write(data[: len(data) // 2])
        self.file.flush()
        die()


def fdopen_half_write_then_die(fd, *args, **kwargs):
    """Stands in for ``os.fdopen`` in ``write_atomically``: the temporary file gets torn."""
    return HalfWriteThenDie(REAL_FDOPEN(fd, *args, **kwargs))


@pytest.mark.parametrize(
    "target, attribute, crash, survivor",
    [
        (torch, "save", die, 1),  # still serialising in memory: no file touched yet
        (os, "fdopen", fdopen_half_write_then_die, 1),  # half the bytes in the temporary file
        (os, "replace", die, 1),  # the temporary file is complete and fsynced, not yet renamed
        (text_module, "fsync_directory", die, 2),  # renamed: the new checkpoint is in place
    ],
    ids=["inside torch.save", "mid-write", "before the rename", "after the rename"],
)
def test_a_crash_while_writing_a_checkpoint_leaves_a_loadable_last_pt(target, attribute, crash, survivor, tmp_path):
    path = save_checkpoint(tmp_path / "last.pt", small_checkpoint(step=1))
    newer = small_checkpoint(step=2)
    pid = os.fork()
    if pid == 0:  # the child patches its own copy of the module, saves, and dies mid-way
        try:
            setattr(target, attribute, crash)
            save_checkpoint(path, newer)
        finally:
            os._exit(3)  # only reached if the crash did not happen
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert load_checkpoint(path)["step"] == survivor
    leftovers = sorted(tmp_path.glob(".last.pt.*.tmp"))
    assert len(leftovers) == (1 if attribute in ("fdopen", "replace") else 0)
    if crash is fdopen_half_write_then_die:
        with pytest.raises(CheckpointError, match="truncated"):
            load_checkpoint(leftovers[0])  # the crash really did tear the file it was writing
    assert remove_stale_temporaries(tmp_path) == leftovers
    assert os.listdir(tmp_path) == ["last.pt"]
