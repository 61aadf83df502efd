"""torch_lm/training/distributed.py: data-parallel training. ``torchrun`` with two gloo ranks on
the CPU and a global batch B gives, step for step, the losses and final weights of one process
with batch B (with an EMA of the weights, the same average: every rank keeps its own, and the
sharded evaluation of it agrees), and rank 0 alone writes the run; the launch checks fail in one line before any
process group is formed."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import torch
from conftest import OFFLINE, REPO, TINY_MODEL, synthetic_text

from torch_lm.cli.train import main as train_main
from torch_lm.training.checkpoint import load_checkpoint
from torch_lm.training.distributed import DistEnv, check_batch_divisible, rank_device, shard_bounds
from torch_lm.training.tensorboard_log import METRICS_FILE, read_metrics

STEPS = 20
# Dropout 0: with DDP each rank draws its own masks, so only without dropout can two ranks
# reproduce the single process (see torch_lm/training/trainer.py). float64 makes the rounding ~1e-16: two
# ranks sum the batch's gradient in a different order than one process.
RUN = [
    *TINY_MODEL,
    "--dropout",
    "0",
    "--dtype",
    "float64",
    "--max-steps",
    str(STEPS),
    "--log-interval",
    "1",
    "--eval-interval",
    "10",
    "--lr",
    "0.01",
    "--warmup-steps",
    "3",
]
EXACT = dict(rtol=1e-12, atol=1e-15)


def losses(records: list[dict], tag: str) -> tuple[list[int], torch.Tensor]:
    """Steps and values of ``tag`` in ``metrics.jsonl`` records."""
    picked = [(r["step"], r[tag]) for r in records if tag in r]
    return [step for step, _ in picked], torch.tensor([v for _, v in picked], dtype=torch.float64)


@pytest.mark.slow
@pytest.mark.parametrize("targets_per_row, ema_decay", [(1, "0"), (3, "0"), (3, "0.8")], ids=["1", "3", "3-ema"])
def test_torchrun_two_ranks_reproduce_one_process_with_the_same_global_batch(
    targets_per_row, ema_decay, tmp_path, capsys
):
    (tmp_path / "tiny.txt").write_text(synthetic_text())
    env = {**os.environ, "OMP_NUM_THREADS": "1", **OFFLINE}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(REPO / "scripts" / "train.py"),
        "--data",
        "tiny.txt",
        *RUN,
        "--run-dir",
        "runs/two",
    ]
    command.extend(["--targets-per-row", str(targets_per_row), "--ema-decay", ema_decay])
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    one_process = [*RUN, "--targets-per-row", str(targets_per_row), "--ema-decay", ema_decay]
    one_process += ["--run-dir", str(tmp_path / "runs" / "one")]
    assert train_main(["--data", str(tmp_path / "tiny.txt"), *one_process]) == 0
    capsys.readouterr()

    # Rank 0 alone printed the summary and wrote the run: one event file, each record once.
    summaries = [line for line in result.stdout.splitlines() if line.startswith("completed:")]
    assert len(summaries) == 1 and summaries[0].startswith(f"completed: {STEPS} steps")
    two, one = tmp_path / "runs" / "two", tmp_path / "runs" / "one"
    assert len([name for name in os.listdir(two) if name.startswith("events.out.tfevents")]) == 1
    records, reference = read_metrics(two / METRICS_FILE), read_metrics(one / METRICS_FILE)
    for tag in ("loss/train", "loss/val"):
        steps, values = losses(records, tag)
        expected_steps, expected = losses(reference, tag)
        assert steps == expected_steps, tag
        torch.testing.assert_close(values, expected, **EXACT, msg=tag)
    assert losses(records, "loss/train")[0] == list(range(1, STEPS + 1))

    last, reference_last = load_checkpoint(two / "last.pt"), load_checkpoint(one / "last.pt")
    assert last["step"] == reference_last["step"] == STEPS
    for key in ("model", "training_weights") if float(ema_decay) else ("model",):
        for name, value in reference_last[key].items():
            torch.testing.assert_close(last[key][name], value, **EXACT, msg=f"{key}[{name}]")
    assert last.get("ema_updates") == reference_last.get("ema_updates") == (STEPS if float(ema_decay) else None)
    assert load_checkpoint(two / "best.pt")["step"] == STEPS
    assert sorted(last["rng"]) == ["dropout", "dropout/rank1"]  # both ranks' dropout streams


# ----------------------------------------------------------------------------- launch checks
TORCHRUN_ENV = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}


def test_the_launch_environment_is_read_and_checked():
    assert DistEnv.from_env({}) == DistEnv(rank=0, world_size=1, local_rank=0)
    env = DistEnv.from_env(TORCHRUN_ENV)
    assert (env.rank, env.world_size, env.local_rank, env.is_main) == (1, 2, 1, False)
    for broken, message in [
        ({"RANK": "0"}, "RANK set but WORLD_SIZE, LOCAL_RANK not"),
        ({**TORCHRUN_ENV, "WORLD_SIZE": "two"}, "WORLD_SIZE must be an integer, got 'two'"),
        ({**TORCHRUN_ENV, "RANK": "2"}, r"need 0 <= RANK < WORLD_SIZE .*RANK=2, WORLD_SIZE=2"),
        ({**TORCHRUN_ENV, "MASTER_PORT": ""}, "MASTER_PORT not set; start .* with torchrun"),
    ]:
        with pytest.raises(ValueError, match=message):
            DistEnv.from_env(broken)


def test_the_global_batch_must_split_evenly():
    check_batch_divisible(32, 4)
    with pytest.raises(ValueError, match="--batch-size 30 .* divisible by the 4 data-parallel"):
        check_batch_divisible(30, 4)


@pytest.mark.parametrize("n", [0, 1, 5, 111_540])
@pytest.mark.parametrize("world_size", [1, 2, 3, 8])
def test_val_shards_partition_the_positions(n, world_size):
    bounds = [shard_bounds(n, rank, world_size) for rank in range(world_size)]
    covered = [i for start, stop in bounds for i in range(start, stop)]
    assert covered == list(range(n))  # each position once, in order
    sizes = [stop - start for start, stop in bounds]
    assert max(sizes) - min(sizes) <= 1


def test_rank_devices():
    two = DistEnv(rank=1, world_size=2, local_rank=1)
    assert rank_device("cpu", two) == torch.device("cpu")
    assert rank_device("cpu", DistEnv()) == torch.device("cpu")
    if not torch.cuda.is_available():
        assert rank_device("auto", two) == torch.device("cpu")
    with pytest.raises(
        ValueError,
        match=r"use cuda \(each rank takes cuda:LOCAL_RANK\) or cpu, "
        r"not 'cuda:0'",
    ):
        rank_device("cuda:0", two)


@pytest.mark.parametrize(
    "environ, args, pattern",
    [
        (
            TORCHRUN_ENV,
            ["--batch-size", "33"],
            r"^train\.py\[rank 1\]: error: --batch-size 33 is the global batch and must be divisible "
            r"by the 2 data-parallel ranks",
        ),
        (
            {**TORCHRUN_ENV, "RANK": "0", "LOCAL_RANK": "0"},
            ["--device", "cuda:0"],
            r"^train\.py: error: device: with 2 data-parallel ranks use cuda",
        ),
        (
            {"WORLD_SIZE": "2"},
            [],
            r"^train\.py: error: distributed launch: WORLD_SIZE set but RANK, "
            r"LOCAL_RANK not",
        ),
    ],
)
def test_bad_launches_fail_in_one_line_before_any_process_group(environ, args, pattern, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert train_main(["--data", "absent.txt", *args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and re.search(pattern, lines[0]), lines
