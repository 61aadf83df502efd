"""The engines side by side: the NumPy reference's training step against torch's, the torch step
as the model grows, the count models' fit and held-out score, and the parity suite's wall time."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from numpy_ref import trajectory as numpy_trajectory
from numpy_ref.config import ModelConfig
from numpy_ref.neural_lm import init_params
from numpy_ref.ngram import NGramLM
from torch_lm.bench.plan import BenchPlan
from torch_lm.bench.timing import best_and_median, matmul_flops, time_calls
from torch_lm.neural_lm import NeuralLM
from torch_lm.training.batches import split_ids
from torch_lm.training.config import DTYPES, TrainConfig
from torch_lm.training.heldout import ngram_heldout
from torch_lm.training.step import build_training_step
from torch_lm.training.trajectory import run_of
from torch_lm.training.vocab import CharVocab

REPO = Path(__file__).resolve().parents[2]
COMPARE_BLOCK = 5  # numpy vs torch: timed steps per turn of an engine


def random_batch(
    config: ModelConfig, batch: int, seed: int = 0, targets_per_row: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """x (B, T) windows and y (B,) int64 ids in [0, V); with P targets per row, sequence rows
    x (B, T + P - 1) and y (B, P)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, config.vocab_size, (batch, config.context + targets_per_row - 1))
    y_shape = batch if targets_per_row == 1 else (batch, targets_per_row)
    return x, rng.integers(0, config.vocab_size, y_shape)


def numpy_step(
    config: ModelConfig, train: TrainConfig, params: dict, x: np.ndarray, y: np.ndarray
) -> Callable[[], None]:
    """One ``numpy_ref`` training step per call on (x, y), updating ``params`` in place: the
    trajectory parity's step (``numpy_ref.trajectory.train_step``) with the recipe's optimiser,
    schedule and clipping, dropout drawn from a seeded generator."""
    run = run_of(train, train.max_steps)
    optimizer = numpy_trajectory.make_optimizer(run, params)
    rng = np.random.default_rng(train.seed)
    count = itertools.count()

    def step() -> None:
        s = next(count)
        numpy_trajectory.train_step(params, optimizer, config, x, y, run.lr_at(s), run.grad_clip, rng=rng)

    return step


def torch_step(
    config: ModelConfig,
    train: TrainConfig,
    x: np.ndarray,
    y: np.ndarray,
    dtype: torch.dtype,
    params: dict | None = None,
) -> Callable[[], None]:
    """One ``torch_lm`` training step per call on (x, y): the trainer's step as the trainer builds
    it (``build_training_step``), from ``params`` (numpy weights) or a fresh initialisation."""
    model = NeuralLM(config).to(dtype).train()
    if params is not None:
        model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in params.items()})
    step = build_training_step(model, train)
    generator = torch.Generator().manual_seed(train.seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    count = itertools.count()
    return lambda: step(next(count), xt, yt, generator=generator)


def numpy_vs_torch(plan: BenchPlan) -> dict:
    """Seconds per step of both engines on the same weights and batch, float64 and float32."""
    x, y = random_batch(plan.model, plan.train.batch_size, targets_per_row=plan.train.targets_per_row)
    result = {}
    for np_dtype, torch_dtype in ((np.float64, torch.float64), (np.float32, torch.float32)):
        params = init_params(plan.model, np.random.default_rng(plan.train.seed), np_dtype)
        engines = {
            "torch": torch_step(plan.model, plan.train, x, y, torch_dtype, params),
            "numpy": numpy_step(plan.model, plan.train, params, x, y),
        }
        seconds = {name: [] for name in engines}
        # Blocks of steps, the engines taking turns, so both see the same contention. Each block
        # starts with an untimed step: after the other engine's step, its thread pool (OpenMP
        # for torch, OpenBLAS's own for NumPy) still spins for a while and would slow this one.
        block = min(COMPARE_BLOCK, plan.compare_steps)
        for _ in range(max(1, plan.compare_steps // block)):
            for name, step in engines.items():
                seconds[name] += time_calls(step, block, warmup=1)
        timing = {name: {k: v * 1e3 for k, v in best_and_median(s).items()} for name, s in seconds.items()}
        result[np.dtype(np_dtype).name] = {
            "numpy_ms": timing["numpy"],
            "torch_ms": timing["torch"],
            "numpy_over_torch": timing["numpy"]["best"] / timing["torch"]["best"],
            "numpy_over_torch_median": timing["numpy"]["median"] / timing["torch"]["median"],
        }
    return result


def doubled_context(config: ModelConfig) -> ModelConfig:
    """Twice the context; a fusing model gets one more level of 2 so the groups still fit."""
    fusion = (*config.fusion, 2) if config.fusion else ()
    return replace(config, context=2 * config.context, fusion=fusion)


def scaling(plan: BenchPlan, peak_gflops: float) -> list[dict]:
    """torch step time (forward + backward + AdamW) as batch, context and hidden size double."""
    base, batch = plan.model, plan.train.batch_size
    rows = [
        ("base", base, batch),
        ("2x batch", base, 2 * batch),
        ("2x context", doubled_context(base), batch),
        ("2x hidden", replace(base, hidden_dim=2 * base.hidden_dim), batch),
    ]
    dtype = DTYPES[plan.train.dtype]
    results = []
    for name, config, b in rows:
        x, y = random_batch(config, b, targets_per_row=plan.train.targets_per_row)
        seconds = best_and_median(time_calls(torch_step(config, plan.train, x, y, dtype), plan.scaling_steps))
        flops = matmul_flops(config, b, plan.train.targets_per_row)
        results.append(
            {
                "row": name,
                "batch_size": b,
                "context": config.context,
                "hidden_dim": config.hidden_dim,
                "fusion": list(config.fusion),
                "step_ms": seconds["best"] * 1e3,
                "step_ms_median": seconds["median"] * 1e3,
                "gflops": flops / seconds["best"] / 1e9,
                "to_peak": flops / seconds["best"] / 1e9 / peak_gflops,
            }
        )
    for row in results:
        row["x_base"] = row["step_ms"] / results[0]["step_ms"]
    return results


def ngram_timings(text: str, orders: Sequence[int], smoothings: Sequence[str]) -> list[dict]:
    """``numpy_ref.ngram`` fit on train + held-out score on val (``ngram_heldout``), timed per
    (smoothing, order)."""
    vocab = CharVocab.from_text(text)
    ids = vocab.encode(text).numpy()
    n_train = len(split_ids(torch.from_numpy(ids))[0])
    rows = []
    for smoothing in smoothings:
        for order in orders:
            score = ngram_heldout(NGramLM, ids, n_train, order, len(vocab), smoothing)
            rows.append(
                {
                    "order": order,
                    "smoothing": smoothing,
                    "fit_s": score.fit_s,
                    "score_s": score.score_s,
                    "fit_score_s": score.fit_s + score.score_s,
                    "val_loss": score.result.loss,
                }
            )
    return rows


def parity_suite(repo: Path = REPO, timeout: float = 3600.0) -> dict:
    """Wall time and outcome of ``python -m pytest -q -p no:cacheprovider`` in ``repo``."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    return {
        "seconds": time.perf_counter() - start,
        "returncode": proc.returncode,
        "summary": lines[-1].strip("= ") if lines else "",
    }
