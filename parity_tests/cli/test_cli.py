"""torch_lm/cli and scripts/*.py, run as subprocesses the way a user runs them:
exit codes, one-line errors without tracebacks, and train -> evaluate -> generate end to end."""

from __future__ import annotations

import json
import math
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
from conftest import (
    OFFLINE,
    REPO,
    TINY_MODEL,
    TINY_SHAKESPEARE,
    assert_in_process_error,
    call,
    needs_tiny_shakespeare,
    script,
    synthetic_text,
)

from numpy_ref.config import ModelConfig
from torch_lm.cli.download_data import main as download_main
from torch_lm.cli.evaluate import main as evaluate_main
from torch_lm.cli.generate import main as generate_main
from torch_lm.cli.train import build_parser as train_parser
from torch_lm.cli.train import configs_from_args
from torch_lm.cli.train import main as train_main
from torch_lm.training.checkpoint import load_checkpoint, save_checkpoint
from torch_lm.training.config import TrainConfig
from torch_lm.training.step import TrainingStep


def assert_one_line_error(result: subprocess.CompletedProcess, code: int, pattern: str) -> None:
    """Exit ``code``, no traceback, and exactly one stderr line, matching ``pattern``."""
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert re.search(pattern, lines[0]), lines[0]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A working directory with a small text file ``text.txt``."""
    path = tmp_path_factory.mktemp("cli")
    (path / "text.txt").write_text(synthetic_text())
    return path


@pytest.fixture(scope="module")
def trained(workdir) -> tuple[Path, subprocess.CompletedProcess]:
    """A 30-step CLI training run in ``workdir/runs/cli``."""
    result = script(
        "train",
        "--data",
        "text.txt",
        *TINY_MODEL,
        "--max-steps",
        "30",
        "--eval-interval",
        "15",
        "--log-interval",
        "5",
        "--run-dir",
        "runs/cli",
        cwd=workdir,
    )
    assert result.returncode == 0, result.stderr
    return workdir / "runs" / "cli", result


# ----------------------------------------------------------------------------- help
@pytest.mark.parametrize("name", ["train", "evaluate", "generate", "download_data"])
def test_every_script_has_help(name, tmp_path):
    result = script(name, "--help", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.startswith("usage:") and not result.stderr
    if name == "train":  # every docs/DESIGN.md §6 flag, defaults read from the dataclasses
        flat = " ".join(result.stdout.split())
        for flag in (
            "--context",
            "--embed-dim",
            "--hidden-dim",
            "--fusion",
            "--n-blocks",
            "--activation",
            "--norm",
            "--dropout",
            "--batch-size",
            "--lr",
            "--max-steps",
            "--time-budget",
            "--eval-interval",
            "--log-interval",
            "--run-dir",
            "--resume",
            "--seed",
            "--device",
            "--dtype",
            "--data",
            "--compile",
            "--grad-clip",
            "--ema-decay",
            "--checkpoint-interval",
        ):
            assert flag in flat, flag
        assert f"(default: {TrainConfig().lr})" in flat
        assert f"(default: {ModelConfig().hidden_dim})" in flat


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "args, pattern",
    [
        (["--lr", "-1"], r"^train\.py: error: TrainConfig: lr must be a finite number > 0, got -1\.0$"),
        (["--context", "0"], r"context must be a positive integer, got 0"),
        (["--dropout", "1.5"], r"dropout must be a probability in \[0, 1\), got 1\.5"),
        (["--device", "tpu"], r"device must be auto, cpu, cuda or cuda:N, got 'tpu'"),
        (["--ema-decay", "1"], r"ema_decay must be a probability in \[0, 1\), got 1\.0"),
    ],
)
def test_train_rejects_bad_values_with_one_line_and_exit_2(args, pattern, workdir):
    assert_one_line_error(script("train", "--data", "text.txt", *args, cwd=workdir), 2, pattern)


def test_train_without_data_offline_says_how_to_install_it(tmp_path):
    # A copy of the code whose data/ directory is empty, so the default copy is missing.
    repo = tmp_path / "repo"
    for package in ("torch_lm", "numpy_ref", "scripts"):
        shutil.copytree(REPO / package, repo / package, ignore=shutil.ignore_patterns("__pycache__"))
    result = script("train", "--max-steps", "1", cwd=tmp_path, repo=repo)
    assert_one_line_error(
        result,
        1,
        r"no copy of Tiny Shakespeare at .*data/tinyshakespeare\.txt "
        r"and the download .* failed .*; if offline, run python "
        r"scripts/download_data\.py --from FILE$",
    )


@pytest.mark.parametrize("name", ["evaluate", "generate"])
def test_unreadable_checkpoints(name, tmp_path):
    (tmp_path / "garbage.pt").write_bytes(b"\x00not a checkpoint" * 50)
    result = script(name, "--checkpoint", "garbage.pt", "--device", "cpu", cwd=tmp_path)
    assert_one_line_error(result, 1, r"cannot read checkpoint garbage\.pt")


def test_generate_rejects_a_prompt_outside_the_vocabulary(trained, workdir):
    result = script(
        "generate", "--checkpoint", str(trained[0] / "last.pt"), "--prompt", "ROMEO:", "--device", "cpu", cwd=workdir
    )
    assert_one_line_error(
        result,
        2,
        r"^generate\.py: error: --prompt: ':', 'E', 'M', 'O', 'R' "
        r"not in the vocabulary of \d+ characters$",
    )


# ----------------------------------------------------------------------------- end to end
def test_train_prints_a_summary_and_writes_the_run(trained):
    run_dir, result = trained
    assert re.fullmatch(
        r"completed: 30 steps, val loss \d\.\d{4} nats/char \(perplexity "
        r"[\d.]+, [\d.]+ bpc\), best \d\.\d{4}; (the EMA of the weights \(decay [\d.]+\); )?(full|bfloat16) products; checkpoints and events in "
        r"runs/cli\n",
        result.stdout.splitlines()[-1] + "\n",
    )
    assert {"last.pt", "best.pt", "projector_config.pbtxt"} <= set(os.listdir(run_dir))
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(run_dir))


def test_evaluate_json_reports_the_heldout_protocol(trained, workdir, capsys):
    run_dir, _ = trained
    result = script(
        "evaluate",
        "--checkpoint",
        str(run_dir / "best.pt"),
        "--json",
        "--data",
        "text.txt",
        "--device",
        "cpu",
        cwd=workdir,
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert set(figures) == {"mode", "val_loss", "val_ppl", "bpc", "positions"} and figures["mode"] == "static"
    assert figures["positions"] == 300  # every val character of the 3000-character text
    best = load_checkpoint(run_dir / "best.pt")["best_val_loss"]
    assert figures["val_loss"] == pytest.approx(best, rel=1e-6)
    assert figures["val_ppl"] == pytest.approx(math.exp(figures["val_loss"]), rel=1e-9)
    assert figures["bpc"] == pytest.approx(figures["val_loss"] / math.log(2), rel=1e-9)
    assert (
        evaluate_main(
            ["--checkpoint", str(run_dir / "best.pt"), "--device", "cpu", "--data", str(workdir / "text.txt")]
        )
        == 0
    )
    assert re.fullmatch(
        r"val loss \d\.\d{4} nats/char \(static\), perplexity [\d.]+, [\d.]+ bits/char "
        r"over 300 positions\n",
        capsys.readouterr().out,
    )


def test_a_checkpoint_of_the_window_recipe_evaluates_and_resumes_as_it_was_trained(trained, workdir, tmp_path):
    """Checkpoints written before training on sequence rows have no targets_per_row: they evaluate
    as before and resume on windows, whatever today's default."""
    run_dir, _ = trained
    old = tmp_path / "old"
    shutil.copytree(run_dir, old)
    for name in ("best.pt", "last.pt"):
        checkpoint = load_checkpoint(old / name)
        del checkpoint["train_config"]["targets_per_row"]
        save_checkpoint(old / name, checkpoint)
    common = ["--json", "--data", "text.txt"]
    before = json.loads(script("evaluate", "--checkpoint", str(run_dir / "best.pt"), *common, cwd=workdir).stdout)
    after = json.loads(script("evaluate", "--checkpoint", str(old / "best.pt"), *common, cwd=workdir).stdout)
    assert after == before
    args = train_parser().parse_args(["--resume", "--run-dir", str(old), "--max-steps", "40"])
    _, config = configs_from_args(args)
    assert config.targets_per_row == 1 and config.max_steps == 40
    assert TrainConfig.from_dict({**TrainConfig().to_dict(), "targets_per_row": 5}).targets_per_row == 5


def test_evaluate_dynamic_is_its_own_mode_with_its_settings(trained, workdir):
    run_dir, _ = trained
    common = ["evaluate", "--checkpoint", str(run_dir / "best.pt"), "--json", "--data", "text.txt"]
    static = json.loads(script(*common, cwd=workdir).stdout)
    result = script(*common, "--dynamic", "--segment", "20", "--dynamic-lr", "0", "--dynamic-decay", "0", cwd=workdir)
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["mode"] == "dynamic" and figures["positions"] == 300
    assert figures["dynamic"] == {"segment": 20, "lr": 0.0, "decay": 0.0, "rule": "rms"}
    assert figures["val_loss"] == pytest.approx(static["val_loss"], rel=1e-6)  # no step: the static figure
    adapted = json.loads(script(*common, "--dynamic", "--segment", "20", "--dynamic-rule", "sgd", cwd=workdir).stdout)
    assert adapted["val_loss"] != figures["val_loss"]
    bad = script(*common, "--dynamic", "--dynamic-decay", "1.5", cwd=workdir)
    assert_one_line_error(bad, 2, "decay must lie in")


def test_a_diverging_dynamic_evaluation_says_so_and_writes_strict_json(trained, workdir):
    """A new user's step size: the adapted model diverges. The figures are still printed, as JSON
    that every parser reads (a non-finite one null, with its reason), one line on stderr says what
    happened and what to do, and the exit code is 1."""
    args = ["--checkpoint", str(trained[0] / "best.pt"), "--data", "text.txt", "--dynamic", "--dynamic-lr", "1000"]
    result = script("evaluate", *args, "--json", cwd=workdir)
    assert_one_line_error(
        result, 1, r"^evaluate\.py: error: dynamic evaluation diverged \(val loss .*\); try a smaller --dynamic-lr"
    )
    assert "Infinity" not in result.stdout and "NaN" not in result.stdout

    def refuse(constant):
        raise AssertionError(f"{constant} in the JSON")

    figures = json.loads(result.stdout, parse_constant=refuse)
    assert figures["mode"] == "dynamic" and figures["positions"] == 300 and figures["dynamic"]["lr"] == 1000.0
    assert figures["val_ppl"] is None
    assert re.fullmatch(r"not finite \((inf|nan)\): dynamic evaluation diverged", figures["val_ppl_reason"])
    for key in ("val_loss", "bpc"):  # finite, or null with its reason
        assert isinstance(figures[key], float) or figures[f"{key}_reason"].endswith("dynamic evaluation diverged")
    plain = script("evaluate", *args, cwd=workdir)
    assert_one_line_error(plain, 1, r"dynamic evaluation diverged")
    assert plain.stdout.startswith("val loss ")


def test_generate_continues_the_prompt_reproducibly(trained, workdir, capsys):
    args = [
        "--checkpoint",
        str(trained[0] / "last.pt"),
        "--prompt",
        "the king",
        "--length",
        "60",
        "--seed",
        "5",
        "--temperature",
        "0.8",
        "--top-k",
        "5",
        "--device",
        "cpu",
    ]
    result = script("generate", *args, cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("the king") and len(result.stdout) == len("the king") + 60 + 1
    samples = []
    for seed in ("5", "5", "6"):
        assert generate_main(args + ["--seed", seed]) == 0  # the last --seed wins
        samples.append(capsys.readouterr().out)
    assert samples[0] == samples[1] != samples[2]


@pytest.mark.slow
def test_sigint_saves_last_pt_exits_130_and_resume_continues(workdir):
    run_dir = workdir / "runs" / "sigint"
    env = {**os.environ, "OMP_NUM_THREADS": "1", **OFFLINE}
    process = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "scripts" / "train.py"),
            "--data",
            "text.txt",
            *TINY_MODEL,
            "--max-steps",
            "1000000",
            "--eval-interval",
            "20",
            "--log-interval",
            "10",
            "--run-dir",
            str(run_dir),
        ],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (run_dir / "last.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    last_line = stderr.strip().splitlines()[-1]
    match = re.fullmatch(
        r"train\.py: error: interrupted at step (\d+); saved .*last\.pt "
        r"\(continue with --resume\)",
        last_line,
    )
    assert match, last_line
    stopped = int(match.group(1))
    assert load_checkpoint(run_dir / "last.pt")["step"] == stopped

    # Only --run-dir and --resume: every other setting comes from the checkpoint.
    result = script(
        "train",
        "--data",
        "text.txt",
        "--run-dir",
        str(run_dir),
        "--resume",
        "--max-steps",
        str(stopped + 10),
        cwd=workdir,
    )
    assert result.returncode == 0, result.stderr
    resumed = load_checkpoint(run_dir / "last.pt")
    assert resumed["step"] == stopped + 10
    assert resumed["train_config"]["max_steps"] == stopped + 10
    assert resumed["model_config"]["hidden_dim"] == 16


# ----------------------------------------------------------------------------- in-process
# The same entry points called in this process (no interpreter start-up) for more bad inputs.
@pytest.mark.parametrize(
    "args, code, pattern",
    [
        (["--device", "cuda:7"], 2, r"cuda:7 requested but"),
        (["--context", "8", "--fusion", "2,3"], 2, r"fusion \(2, 3\) multiplies to 6, but context is 8"),
        (["--fusion", "two"], 2, r"argument --fusion: expected comma-separated integers"),
        (["--betas", "0.9"], 2, r"argument --betas: expected two comma-separated numbers"),
        (["--betas", "0.9,1.5"], 2, r"betas must be two numbers in \[0, 1\)"),
        (["--lr", "fast"], 2, r"argument --lr: invalid float value: 'fast'"),
        (["--activation", "sigmoid"], 2, r"argument --activation: invalid choice: 'sigmoid'"),
        (["--min-lr", "1", "--lr", "0.1"], 2, r"min_lr must not exceed lr"),
        (["--batch-size", "0"], 2, r"batch_size must be a positive integer, got 0"),
        (["--dropout", "-0.1"], 2, r"dropout must be a probability in \[0, 1\), got -0\.1"),
        (["--checkpoint-interval", "-5"], 2, r"checkpoint_interval must be an integer >= 0, got -5"),
        (["--resume", "--run-dir", "nowhere"], 1, r"--resume: no checkpoint at nowhere/last\.pt"),
        (["--data", "absent.txt"], 1, r"data file absent\.txt not found"),
    ],
)
def test_more_bad_train_inputs(args, code, pattern, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert_in_process_error(call(capsys, train_main, *args), code, pattern)


def test_train_refuses_a_too_short_text(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("short.txt").write_text("to be")
    assert_in_process_error(
        call(capsys, train_main, "--data", "short.txt", *TINY_MODEL),
        1,
        r"the text is too short: 5 characters split into 4 train / 1 val",
    )


def test_train_resume_problems(trained, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(trained[0], "copy")
    shutil.copy(trained[0].parent.parent / "text.txt", "text.txt")
    Path("other.txt").write_text(Path("text.txt").read_text().replace("q", "Q"))
    outcome = call(capsys, train_main, "--data", "text.txt", "--run-dir", "copy", "--resume", "--hidden-dim", "24")
    assert_in_process_error(outcome, 1, r"different model .*hidden_dim 16 vs 24")
    outcome = call(capsys, train_main, "--data", "other.txt", "--run-dir", "copy", "--resume")
    assert_in_process_error(outcome, 1, r"does not match the data's .*adds \['Q'\]")
    outcome = call(capsys, train_main, "--data", "text.txt", *TINY_MODEL, "--run-dir", "copy")
    assert_in_process_error(outcome, 2, r"copy/last\.pt already exists; pass --resume")


@pytest.mark.parametrize("flag, value", [("--temperature", "0"), ("--top-k", "0"), ("--length", "-3")])
def test_generate_rejects_bad_numbers(flag, value, trained, capsys):
    outcome = call(capsys, generate_main, "--checkpoint", str(trained[0] / "last.pt"), flag, value)
    assert_in_process_error(outcome, 2, rf"argument {flag}: value must be a")


def test_evaluate_rejects_data_outside_the_vocabulary(trained, tmp_path, capsys):
    (tmp_path / "other.txt").write_text("Zebras quietly vex jumping fowl.\n" * 20)
    outcome = call(
        capsys,
        evaluate_main,
        "--checkpoint",
        str(trained[0] / "last.pt"),
        "--data",
        str(tmp_path / "other.txt"),
        "--device",
        "cpu",
    )
    assert_in_process_error(outcome, 1, r"the data does not fit checkpoint .*last\.pt: .*'Z'")


def test_a_float64_run_is_evaluated_in_float64(workdir, tmp_path, capsys):
    run_dir = tmp_path / "f64"
    assert (
        train_main(
            [
                "--data",
                str(workdir / "text.txt"),
                *TINY_MODEL,
                "--dtype",
                "float64",
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
    capsys.readouterr()
    assert (
        evaluate_main(
            ["--checkpoint", str(run_dir / "last.pt"), "--json", "--device", "cpu", "--data", str(workdir / "text.txt")]
        )
        == 0
    )
    figures = json.loads(capsys.readouterr().out)
    assert figures["val_loss"] == pytest.approx(load_checkpoint(run_dir / "last.pt")["best_val_loss"], rel=1e-13)
    assert load_checkpoint(run_dir / "last.pt")["model"]["output.weight"].dtype == torch.float64


def test_sigterm_exits_143_after_saving(workdir, tmp_path, monkeypatch, capsys):
    original = TrainingStep.__call__

    def step_then_terminate(self, step, *args, **kwargs):
        loss = original(self, step, *args, **kwargs)
        if step + 1 == 3:
            signal.raise_signal(signal.SIGTERM)
        return loss

    monkeypatch.setattr(TrainingStep, "__call__", step_then_terminate)
    run_dir = tmp_path / "term"
    outcome = call(
        capsys,
        train_main,
        "--data",
        str(workdir / "text.txt"),
        *TINY_MODEL,
        "--max-steps",
        "50",
        "--run-dir",
        str(run_dir),
    )
    code, err = outcome
    assert code == 143, err
    assert re.fullmatch(
        r"train\.py: error: interrupted \(SIGTERM\) at step 3; saved .*last\.pt "
        r"\(continue with --resume\)",
        err.strip().splitlines()[-1],
    ), err
    assert load_checkpoint(run_dir / "last.pt")["step"] == 3


def test_missing_checkpoints(tmp_path, capsys):
    for main in (evaluate_main, generate_main):
        outcome = call(capsys, main, "--checkpoint", str(tmp_path / "missing.pt"), "--device", "cpu")
        assert_in_process_error(outcome, 1, r"checkpoint .*missing\.pt not found")
    assert_in_process_error(call(capsys, evaluate_main), 2, r"the following arguments are required: --checkpoint")


def test_download_offline_says_how_to_install(tmp_path, monkeypatch, capsys):
    for name, value in OFFLINE.items():
        monkeypatch.setenv(name, value)
    outcome = call(capsys, download_main, "--dest", str(tmp_path / "t.txt"))
    assert_in_process_error(outcome, 1, r"download .* failed .*download_data\.py --from FILE$")
    assert not (tmp_path / "t.txt").exists()


# ----------------------------------------------------------------------------- download
@needs_tiny_shakespeare
def test_download_from_a_local_copy_verifies_and_installs(tmp_path, capsys):
    dest = tmp_path / "data" / "tinyshakespeare.txt"
    result = script("download_data", "--from", str(TINY_SHAKESPEARE), "--dest", str(dest), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "sha256 verified" in result.stdout and dest.read_bytes() == TINY_SHAKESPEARE.read_bytes()
    assert download_main(["--dest", str(dest)]) == 0
    assert "already present (sha256 verified)" in capsys.readouterr().out


def test_download_refuses_a_wrong_file(tmp_path):
    (tmp_path / "wrong.txt").write_text("not the play\n")
    dest = tmp_path / "tinyshakespeare.txt"
    result = script("download_data", "--from", "wrong.txt", "--dest", str(dest), cwd=tmp_path)
    assert_one_line_error(result, 1, r"wrong\.txt has sha256 [0-9a-f]{64}, expected 86c4e6aa")
    assert not dest.exists()
