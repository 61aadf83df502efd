"""Timing on a noisy machine: best-of timings, wall time per piece of a step, page faults, the
machine's description, the GEMM peak (fp32, and bf16 where the CPU has it) and the matmul FLOPs of a training step."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

try:
    import resource  # POSIX only: page-fault counts
except ImportError:
    resource = None

from numpy_ref.config import ModelConfig
from numpy_ref.neural_lm import linear_out_features
from torch_lm.training.precision import cpuinfo_fields

# Settings that change the figures: thread counts, and glibc malloc's trimming (every fresh
# large tensor costs page faults once freed memory goes back to the OS; see BENCH.md).
ENV_KEYS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_MMAP_THRESHOLD_",
    "GLIBC_TUNABLES",
    "LD_PRELOAD",
)


def best_and_median(seconds: Sequence[float]) -> dict[str, float]:
    """{"best": min, "median": median} of a list of timings, in seconds."""
    return {"best": float(min(seconds)), "median": float(np.median(seconds))}


def time_calls(fn: Callable[[], object], repeats: int, warmup: int = 2) -> list[float]:
    """Wall seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones (CPU ops are
    synchronous, so the wall clock around a call is the call's cost)."""
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return seconds


class Laps:
    """Wall time per named piece: ``lap(name)`` charges the time since the previous lap to it."""

    def __init__(self, names: Sequence[str]):
        self.seconds = dict.fromkeys(names, 0.0)
        self.last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] += now - self.last
        self.last = now


def minor_page_faults() -> int:
    """Minor page faults of this process so far (0 where ``resource``, POSIX only, is missing)."""
    if resource is None:
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def machine_info() -> dict:
    """What the figures depend on: threads, CPU, the environment settings, library versions."""
    return {
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "cpu_count": os.cpu_count(),
        "cpu": _cpu_model(),
        "env": {k: os.environ.get(k) for k in ENV_KEYS},
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
    }


def _cpu_model() -> str:
    return cpuinfo_fields().get("model name") or platform.processor() or "unknown"


class Gemm:
    """``torch.mm`` of two ``size``-square matrices of ``dtype`` (fp32 unless told) into a
    preallocated output."""

    def __init__(self, size: int, dtype: torch.dtype = torch.float32):
        generator = torch.Generator().manual_seed(0)
        self.size = size
        self.a = torch.randn(size, size, generator=generator).to(dtype)
        self.b = torch.randn(size, size, generator=generator).to(dtype)
        self.out = torch.empty(size, size, dtype=dtype)
        self.flops = 2 * size**3
        self.seconds: list[float] = []

    def run_once(self) -> None:
        """One timed product (appended to ``seconds``)."""
        self.seconds += time_calls(lambda: torch.mm(self.a, self.b, out=self.out), 1, warmup=0)

    def gflops(self) -> dict[str, float]:
        """Best and median GFLOP/s so far (best = fastest repetition)."""
        rates = [self.flops / s / 1e9 for s in self.seconds]
        return {"best": float(max(rates)), "median": float(np.median(rates))}


class GemmPeak:
    """One ``Gemm`` per size, in ``dtype``; the peak is the best rate over all of them."""

    def __init__(self, sizes: Sequence[int], dtype: torch.dtype = torch.float32):
        self.gemms = [Gemm(size, dtype) for size in sizes]

    def run_once(self) -> None:
        """One timed product of every size."""
        for gemm in self.gemms:
            gemm.run_once()

    def clear(self) -> None:
        for gemm in self.gemms:
            gemm.seconds.clear()

    def summary(self) -> dict:
        """{"best", "median" (of the best size), "size", "repeats", "per_size": {size: rates}}."""
        per_size = {g.size: g.gflops() for g in self.gemms}
        size = max(per_size, key=lambda n: per_size[n]["best"])
        return {
            "best": per_size[size]["best"],
            "median": per_size[size]["median"],
            "size": size,
            "repeats": len(self.gemms[0].seconds),
            "per_size": per_size,
        }


def matmul_flops(config: ModelConfig, batch: int, targets_per_row: int = 1) -> int:
    """Matmul FLOPs of one training step on ``batch`` rows: 3 x the forward's ``2*M*N*K`` of every
    Linear. Backward does two products of the same size per Linear (dX, dW), hence x3.

    Window rows (one target): fusion level with group g on (B, n, d): M = B*n/g rows, K = g*d, N = H.
    Sequence rows of P targets (``NeuralLM.forward_sequence``): a level with group g and dilation
    D (the product of the earlier groups) on n positions gives M = B*(n - (g-1)*D) rows. Then the
    residual blocks (K = N = H) and the output (K = H, N = V) on the B*P rows that predict.
    """
    forward, d, hidden = 0, config.embed_dim, config.hidden_dim
    width = linear_out_features(config)  # a hidden Linear's outputs: H, or 2H for gated units
    if targets_per_row == 1:
        n = config.context
        for g in config.groups:
            n //= g
            forward += 2 * batch * n * (g * d) * width
            d = hidden
    else:
        n, dilation = config.context + targets_per_row - 1, 1
        for g in config.groups:
            n -= (g - 1) * dilation
            forward += 2 * batch * n * (g * d) * width
            d, dilation = hidden, dilation * g
    rows = batch * targets_per_row
    forward += config.n_blocks * 2 * rows * hidden * width
    forward += 2 * rows * hidden * config.vocab_size
    return 3 * forward
