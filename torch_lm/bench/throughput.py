"""Training throughput: the trainer's loop (its ``TrainingStep``, batches and log step) timed
piece by piece, interval by interval, between repetitions of the GEMM peak. Tokens are targets:
a row of P targets (sequence rows) counts P."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from numpy_ref.config import ModelConfig
from torch_lm.bench.plan import PIECES, BenchPlan
from torch_lm.bench.timing import GemmPeak, Laps, matmul_flops, minor_page_faults
from torch_lm.neural_lm import NeuralLM
from torch_lm.training.batches import BatchSampler
from torch_lm.training.config import DTYPES, TrainConfig
from torch_lm.training.step import build_training_step
from torch_lm.training.tensorboard_log import TensorBoardLogger


class TrainLoop:
    """The trainer's loop on the CPU, timed piece by piece: ``BatchSampler``, then the trainer's
    own step (``build_training_step``; its ``laps`` hook charges the forward, backward,
    diagnostics, optimiser and bookkeeping), then the trainer's log step (``close_interval``). ``run_interval`` is
    ``log_interval`` steps whose last captures the diagnostics and is followed by the log step.
    """

    def __init__(self, model_config: ModelConfig, config: TrainConfig, ids: torch.Tensor, log_dir: Path):
        self.config = config
        model = NeuralLM(model_config).to(DTYPES[config.dtype]).train()
        self.train_step = build_training_step(model, config)
        self.sampler = BatchSampler(
            ids, model_config.context, config.batch_size, config.seed, targets_per_row=config.targets_per_row
        )
        self.generator = torch.Generator().manual_seed(config.seed)
        self.logger = TensorBoardLogger(log_dir)
        self.step = 0

    def run_interval(self) -> list[dict[str, float]]:
        """``log_interval`` steps and the log step: wall seconds per piece of every step.

        Keys: ``PIECES`` plus ``"log_work"``, the diagnostics of the interval's last step and
        the log step, charged to that last step (zero on the others).
        """
        interval = self.config.log_interval
        steps = [self._step(capture=i == interval - 1) for i in range(interval)]
        steps[-1]["log_work"] += self._log(sum(sum(step.values()) for step in steps))
        return steps

    def _step(self, capture: bool) -> dict[str, float]:
        laps = Laps((*PIECES, "log_work"))
        x, y = self.sampler.batch(self.step)
        laps.lap("sampling")
        self.train_step(self.step, x, y, capture=capture, generator=self.generator, laps=laps)
        self.step += 1
        return laps.seconds

    def _log(self, elapsed: float) -> float:
        """The trainer's log step after ``elapsed`` seconds of steps; returns its wall seconds."""
        start = time.perf_counter()
        int(self.train_step.first_bad_step)  # the trainer's finiteness check: one host sync
        self.train_step.close_interval(
            self.logger, self.step, self.config.log_interval, elapsed, self.config.targets_per_step
        )
        return time.perf_counter() - start

    def close(self) -> None:
        self.logger.close()


def training_throughput(plan: BenchPlan, ids: torch.Tensor, gemm: GemmPeak) -> dict:
    """Tokens/s, achieved GFLOP/s and the step split of the default training loop.

    The figure is built like the GEMM peak, from the least disturbed measurements: the fastest
    ordinary step, plus the fastest interval's log work divided by ``log_interval`` (it happens
    once per interval). The median step and the sustained rate (all measured wall time, every
    disturbance included) are reported beside it. Each window is one log interval, preceded by
    ``gemm_per_window`` GEMM repetitions, so both sections see the same contention.
    """
    with tempfile.TemporaryDirectory(prefix="torch-lm-bench-") as log_dir:
        loop = TrainLoop(plan.model, plan.train, ids, Path(log_dir))
        try:
            for _ in range(plan.warmup_windows):
                loop.run_interval()
            windows, faults = [], minor_page_faults()
            for _ in range(plan.windows):
                for _ in range(plan.gemm_per_window):
                    gemm.run_once()
                windows.append(loop.run_interval())
            faults = minor_page_faults() - faults
        finally:
            loop.close()
    interval, batch, targets = plan.train.log_interval, plan.train.batch_size, plan.train.targets_per_step
    ordinary = [step for window in windows for step in window[:-1]] or [w[-1] for w in windows]
    log_work = [window[-1]["log_work"] for window in windows]
    totals = [sum(step[piece] for piece in PIECES) for step in ordinary]
    split = dict(ordinary[int(np.argmin(totals))])
    split["logging"] += min(log_work) / interval
    del split["log_work"]
    step_s = {"best": sum(split.values()), "median": float(np.median(totals)) + float(np.median(log_work)) / interval}
    sustained = sum(sum(step.values()) for window in windows for step in window) / (interval * plan.windows)
    flops = matmul_flops(plan.model, batch, plan.train.targets_per_row)
    return {
        "steps_per_window": interval,
        "windows": plan.windows,
        "batch_size": batch,
        "targets_per_row": plan.train.targets_per_row,
        "targets_per_step": targets,
        "compile": plan.train.compile,
        "step_ms": {k: v * 1e3 for k, v in step_s.items()},
        "sustained_step_ms": sustained * 1e3,
        "tokens_per_sec": targets / step_s["best"],
        "tokens_per_sec_median": targets / step_s["median"],
        "tokens_per_sec_sustained": targets / sustained,
        "matmul_flops_per_step": flops,
        "matmul_flops_per_target": flops / targets,
        "gflops": flops / step_s["best"] / 1e9,
        "gflops_median": flops / step_s["median"] / 1e9,
        "split_ms_per_step": {k: v * 1e3 for k, v in split.items()},
        "shares": {k: v / step_s["best"] for k, v in split.items()},
        "page_faults_per_step": faults / (interval * plan.windows),
    }
