"""Speed benchmarks against the machine's own limits: ``python scripts/bench.py [--json] [--quick]``.

SIDE-ONLY: this module exists in ``torch_lm`` only (docs/DESIGN.md §1); it times both engines.

Machines are shared and noisy (docs/DESIGN.md §5: contention can slow 2-thread ops 10x), so every
verdict is a *ratio of figures measured in the same run*, never an absolute time, and every
figure is the best of several measurements (the least disturbed one) with its median beside it.
The sections, in the order they run:

* **GEMM peak** — fp32 ``torch.mm`` of square matrices (``gemm_sizes``), best of several, in
  GFLOP/s, at the thread count in force. Its repetitions are interleaved with the training
  windows below, so both see the same contention. Two sizes: 2048 is the classic "large"
  product, 1024 takes ~10-20 ms, about as long as a few training steps, so a best-of over it is
  as lucky as the best-of over steps on a busy machine; the peak is the faster of the two.
* **Training throughput** of ``ModelConfig()`` / ``TrainConfig()`` as they are at run time: the
  real loop pieces of ``torch_lm.train.Trainer`` (``BatchSampler``, forward, ``loss.backward``,
  gradient clipping and the AdamW step, and the log work: activation capture, gradient norms,
  the running loss and the TensorBoard scalars), timed step by step over windows of
  ``log_interval`` steps — each window holds exactly one log step. The step figure is the
  fastest ordinary step plus the log work amortised over the interval (``training_throughput``).
  *Achieved GFLOP/s* counts matmul FLOPs only (``matmul_flops``): ``2*M*N*K`` for every Linear
  forward and twice that for its backward (``dX`` and ``dW``, the first layer's ``dX`` included
  because it feeds the embedding gradient) — 3x the forward. Not counted: the embedding
  gather/scatter, activations, softmax, LayerNorm, clipping and AdamW.
* **Step split** — the shares of sampling, forward, backward, optimiser and logging (per-step
  bookkeeping plus the amortised log work) in that step.
* **torch.compile** (``--compile``) — the same loop again with the compiled forward on ordinary
  steps, as ``TrainConfig.compile`` runs it.
* **NumPy reference vs torch** — seconds per training step (forward + backward + AdamW, no
  clipping) of ``numpy_ref`` and ``torch_lm`` on the same model, weights and batch, float64 and
  float32, the two engines taking turns in blocks of steps.
* **Scaling** — the torch step as the batch, the context and the hidden size double. Doubling
  the context adds a fusion level of 2 when the model fuses (the product must equal the context).
* **n-gram** — ``numpy_ref.ngram`` fit + held-out scoring (docs/DESIGN.md §3 protocol), orders 3, 5, 7,
  interpolated (``kn``: the target's figure) and modified (``mkn``) Kneser-Ney.
* **Parity suite** — wall time of ``python -m pytest -q -p no:cacheprovider`` in a subprocess.

Everything runs on the CPU. ``run`` returns one dict (``summary`` holds the flat headline keys);
``write_reports`` writes ``bench.json`` and ``BENCH.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

try:
    import resource  # POSIX only: page-fault counts
except ImportError:
    resource = None

from numpy_ref.config import ModelConfig
from numpy_ref.neural_lm import init_params, neural_lm_backward, neural_lm_forward
from numpy_ref.ngram import NGramLM
from numpy_ref.optim import AdamW as NumpyAdamW
from numpy_ref.optim import no_decay_keys
from torch_lm.allocator import keep_freed_memory
from torch_lm.cli import OneLineParser
from torch_lm.data import DEFAULT_DATA_PATH, BatchSampler, CharVocab, read_text, split_ids
from torch_lm.diagnostics import grad_norms, summarize_activations
from torch_lm.metrics import RunningMean
from torch_lm.neural_lm import NeuralLM
from torch_lm.tensorboard_log import TensorBoardLogger
from torch_lm.train import DTYPES, TrainConfig, lr_at, make_optimizer

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT_DIR = REPO / "reports"
PIECES = ("sampling", "forward", "backward", "optimiser", "logging")
COMPARE_BLOCK = 5  # numpy vs torch: timed steps per turn of an engine
# Settings that change the figures: thread counts, and glibc malloc's trimming (every fresh
# large tensor costs page faults once freed memory goes back to the OS; see BENCH.md).
ENV_KEYS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "MALLOC_TRIM_THRESHOLD_",
            "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES", "LD_PRELOAD")
NOTES_MARKER = "<!-- Everything below this line is kept when scripts/bench.py rewrites this file. -->"

# name -> (summary key, comparison, limit): the targets for 2 CPU cores.
TARGETS = {
    "training step vs GEMM peak": ("train_to_peak_ratio", ">=", 0.60),
    "batch sampling share of the step": ("sampling_share", "<", 0.05),
    "logging share of the step": ("logging_share", "<", 0.03),
    "numpy_ref / torch step, float64": ("numpy_over_torch_float64", "<=", 1.5),
    "7-gram KN fit + held-out scoring (s)": ("kn7_fit_score_s", "<", 10.0),
}


@dataclass(frozen=True)
class BenchPlan:
    """What to measure and how often; ``default_plan`` fills it from the live defaults."""

    model: ModelConfig
    train: TrainConfig
    gemm_sizes: tuple[int, ...] = (1024, 2048)
    windows: int = 6                 # measured log intervals
    gemm_per_window: int = 2         # repetitions of each GEMM size before each window
    warmup_windows: int = 1
    compare_steps: int = 20          # numpy vs torch: timed steps per engine and dtype
    scaling_steps: int = 10          # timed steps per scaling row
    ngram_orders: tuple[int, ...] = (3, 5, 7)
    ngram_smoothings: tuple[str, ...] = ("kn", "mkn")   # interpolated and modified Kneser-Ney
    run_suite: bool = True
    compile: bool = False            # also measure the training loop under torch.compile

    def to_dict(self) -> dict:
        d = asdict(self)
        d["model"], d["train"] = self.model.to_dict(), self.train.to_dict()
        for key in ("gemm_sizes", "ngram_orders", "ngram_smoothings"):
            d[key] = list(d[key])
        return d


def default_plan(quick: bool = False, run_suite: bool = True, compile: bool = False) -> BenchPlan:
    """The default model and training configs as they are now (the lead may change them);
    ``quick`` takes fewer repetitions of everything (figures are noisier, not different)."""
    plan = BenchPlan(ModelConfig(), TrainConfig(), run_suite=run_suite, compile=compile)
    if quick:
        plan = replace(plan, windows=3, compare_steps=6, scaling_steps=4)
    return plan


# ---------------------------------------------------------------------------------------------
# Timing helpers
# ---------------------------------------------------------------------------------------------

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
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# ---------------------------------------------------------------------------------------------
# GEMM peak and FLOP counting
# ---------------------------------------------------------------------------------------------

class Gemm:
    """fp32 ``torch.mm`` of two ``size``-square matrices into a preallocated output."""

    def __init__(self, size: int):
        generator = torch.Generator().manual_seed(0)
        self.size = size
        self.a = torch.randn(size, size, generator=generator)
        self.b = torch.randn(size, size, generator=generator)
        self.out = torch.empty(size, size)
        self.flops = 2 * size ** 3
        self.seconds: list[float] = []

    def run_once(self) -> None:
        """One timed product (appended to ``seconds``)."""
        self.seconds += time_calls(lambda: torch.mm(self.a, self.b, out=self.out), 1, warmup=0)

    def gflops(self) -> dict[str, float]:
        """Best and median GFLOP/s so far (best = fastest repetition)."""
        rates = [self.flops / s / 1e9 for s in self.seconds]
        return {"best": float(max(rates)), "median": float(np.median(rates))}


class GemmPeak:
    """One ``Gemm`` per size; the peak is the best rate over all of them."""

    def __init__(self, sizes: Sequence[int]):
        self.gemms = [Gemm(size) for size in sizes]

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
        return {"best": per_size[size]["best"], "median": per_size[size]["median"], "size": size,
                "repeats": len(self.gemms[0].seconds), "per_size": per_size}


def matmul_flops(config: ModelConfig, batch: int) -> int:
    """Matmul FLOPs of one training step: 3 x the forward's ``2*M*N*K`` of every Linear.

    Fusion level with group g on (B, n, d): M = B*n/g rows, K = g*d, N = H; residual block:
    M = B, K = N = H; output: M = B, K = H, N = V. Backward does two products of the same size
    per Linear (dX, dW), hence x3.
    """
    forward, n, d, hidden = 0, config.context, config.embed_dim, config.hidden_dim
    for g in config.groups:
        n //= g
        forward += 2 * batch * n * (g * d) * hidden
        d = hidden
    forward += config.n_blocks * 2 * batch * hidden * hidden
    forward += 2 * batch * hidden * config.vocab_size
    return 3 * forward


# ---------------------------------------------------------------------------------------------
# The training loop, piece by piece
# ---------------------------------------------------------------------------------------------

class TrainLoop:
    """The pieces of ``Trainer._train_step`` and ``Trainer._log`` on the CPU, each timed.

    Built from the same public functions as the trainer (``make_optimizer``, ``lr_at``,
    ``BatchSampler``, ``grad_norms``, ``summarize_activations``, ``RunningMean``,
    ``TensorBoardLogger``), in the same order; ``run_interval`` is ``log_interval`` steps whose
    last captures the diagnostics and is followed by the log step.
    """

    def __init__(self, model_config: ModelConfig, config: TrainConfig, ids: torch.Tensor,
                 log_dir: Path):
        self.config = config
        self.model_config = model_config
        self.model = NeuralLM(model_config).to(DTYPES[config.dtype]).train()
        self.forward = torch.compile(self.model) if config.compile else self.model
        self.optimizer = make_optimizer(self.model, config)
        self.sampler = BatchSampler(ids, model_config.context, config.batch_size, config.seed)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.running = RunningMean()
        self.first_bad_step = torch.full((), sys.maxsize, dtype=torch.int64)
        self.logger = TensorBoardLogger(log_dir)
        self.step = 0
        self.stats: dict = {}   # the diagnostics of the latest capture step, for the log step
        self.norms: dict = {}

    def run_interval(self) -> list[dict[str, float]]:
        """``log_interval`` steps and the log step: wall seconds per piece of every step.

        Keys: ``PIECES`` plus ``"log_work"``, the diagnostics of the interval's last step and
        the log step, charged to that last step (zero on the others).
        """
        interval = self.config.log_interval
        steps = [self._train_step(capture=i == interval - 1) for i in range(interval)]
        steps[-1]["log_work"] += self._log(sum(sum(step.values()) for step in steps))
        return steps

    def _train_step(self, capture: bool) -> dict[str, float]:
        config, model = self.config, self.model
        laps = Laps((*PIECES, "log_work"))
        lr = lr_at(self.step, config)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        x, y = self.sampler.batch(self.step)
        laps.lap("sampling")
        if capture:
            with model.capture_activations() as acts:
                _, loss = model(x, y, generator=self.generator)
        else:
            _, loss = self.forward(x, y, generator=self.generator)
        laps.lap("forward")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        laps.lap("backward")
        if capture:
            self.stats = summarize_activations(acts, self.model_config.activation)
            self.norms = grad_norms(model)
            laps.lap("log_work")
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        self.optimizer.step()
        laps.lap("optimiser")
        loss = loss.detach()  # per-step bookkeeping for the log: running loss, finiteness
        self.running.update(loss.double() * len(y), len(y))
        self.first_bad_step = torch.where(torch.isfinite(loss), self.first_bad_step,
                                          self.first_bad_step.clamp(max=self.step + 1))
        self.step += 1
        laps.lap("logging")
        return laps.seconds

    def _log(self, elapsed: float) -> float:
        """The trainer's log step after ``elapsed`` seconds of steps; returns its wall seconds."""
        start = time.perf_counter()
        int(self.first_bad_step)  # the trainer's finiteness check: one host sync
        loss = self.running.mean
        self.running.reset()
        tokens_per_sec = self.config.log_interval * self.config.batch_size / elapsed
        self.logger.log_train(self.step, loss, lr_at(self.step - 1, self.config), tokens_per_sec,
                              self.norms, self.stats)
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
    interval, batch = plan.train.log_interval, plan.train.batch_size
    ordinary = [step for window in windows for step in window[:-1]] or [w[-1] for w in windows]
    log_work = [window[-1]["log_work"] for window in windows]
    totals = [sum(step[piece] for piece in PIECES) for step in ordinary]
    split = dict(ordinary[int(np.argmin(totals))])
    split["logging"] += min(log_work) / interval
    del split["log_work"]
    step_s = {"best": sum(split.values()),
              "median": float(np.median(totals)) + float(np.median(log_work)) / interval}
    sustained = sum(sum(step.values()) for window in windows for step in window) / (interval * plan.windows)
    flops = matmul_flops(plan.model, batch)
    return {
        "steps_per_window": interval,
        "windows": plan.windows,
        "batch_size": batch,
        "compile": plan.train.compile,
        "step_ms": {k: v * 1e3 for k, v in step_s.items()},
        "sustained_step_ms": sustained * 1e3,
        "tokens_per_sec": batch / step_s["best"],
        "tokens_per_sec_median": batch / step_s["median"],
        "tokens_per_sec_sustained": batch / sustained,
        "matmul_flops_per_step": flops,
        "gflops": flops / step_s["best"] / 1e9,
        "gflops_median": flops / step_s["median"] / 1e9,
        "split_ms_per_step": {k: v * 1e3 for k, v in split.items()},
        "shares": {k: v / step_s["best"] for k, v in split.items()},
        "page_faults_per_step": faults / (interval * plan.windows),
    }


# ---------------------------------------------------------------------------------------------
# One training step of each engine (forward + backward + AdamW)
# ---------------------------------------------------------------------------------------------

def random_batch(config: ModelConfig, batch: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """x (B, T) and y (B,) int64 ids in [0, V)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, config.vocab_size, (batch, config.context))
    return x, rng.integers(0, config.vocab_size, batch)


def numpy_step(config: ModelConfig, train: TrainConfig, params: dict, x: np.ndarray,
               y: np.ndarray) -> Callable[[], None]:
    """One ``numpy_ref`` training step on (x, y), updating ``params`` in place."""
    optimizer = NumpyAdamW(lr=train.lr, betas=train.betas, weight_decay=train.weight_decay,
                           no_decay=no_decay_keys(params))
    rng = np.random.default_rng(train.seed)

    def step() -> None:
        _, _, cache = neural_lm_forward(params, x, config, y, train=True, rng=rng)
        optimizer.step(params, neural_lm_backward(cache))
    return step


def torch_step(config: ModelConfig, train: TrainConfig, x: np.ndarray, y: np.ndarray,
               dtype: torch.dtype, params: dict | None = None) -> Callable[[], None]:
    """One ``torch_lm`` training step on (x, y) with the trainer's AdamW (``params``: numpy
    weights to start from, else a fresh initialisation)."""
    model = NeuralLM(config).to(dtype).train()
    if params is not None:
        model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in params.items()})
    optimizer = make_optimizer(model, train)
    generator = torch.Generator().manual_seed(train.seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def step() -> None:
        _, loss = model(xt, yt, generator=generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def numpy_vs_torch(plan: BenchPlan) -> dict:
    """Seconds per step of both engines on the same weights and batch, float64 and float32."""
    x, y = random_batch(plan.model, plan.train.batch_size)
    result = {}
    for np_dtype, torch_dtype in ((np.float64, torch.float64), (np.float32, torch.float32)):
        params = init_params(plan.model, np.random.default_rng(plan.train.seed), np_dtype)
        engines = {"torch": torch_step(plan.model, plan.train, x, y, torch_dtype, params),
                   "numpy": numpy_step(plan.model, plan.train, params, x, y)}
        seconds = {name: [] for name in engines}
        # Blocks of steps, the engines taking turns, so both see the same contention. Each block
        # starts with an untimed step: after the other engine's step, its thread pool (OpenMP
        # for torch, OpenBLAS's own for NumPy) still spins for a while and would slow this one.
        block = min(COMPARE_BLOCK, plan.compare_steps)
        for _ in range(max(1, plan.compare_steps // block)):
            for name, step in engines.items():
                seconds[name] += time_calls(step, block, warmup=1)
        timing = {name: {k: v * 1e3 for k, v in best_and_median(s).items()}
                  for name, s in seconds.items()}
        result[np.dtype(np_dtype).name] = {
            "numpy_ms": timing["numpy"], "torch_ms": timing["torch"],
            "numpy_over_torch": timing["numpy"]["best"] / timing["torch"]["best"],
            "numpy_over_torch_median": timing["numpy"]["median"] / timing["torch"]["median"]}
    return result


def doubled_context(config: ModelConfig) -> ModelConfig:
    """Twice the context; a fusing model gets one more level of 2 so the groups still fit."""
    fusion = (*config.fusion, 2) if config.fusion else ()
    return replace(config, context=2 * config.context, fusion=fusion)


def scaling(plan: BenchPlan, peak_gflops: float) -> list[dict]:
    """torch step time (forward + backward + AdamW) as batch, context and hidden size double."""
    base, batch = plan.model, plan.train.batch_size
    rows = [("base", base, batch), ("2x batch", base, 2 * batch),
            ("2x context", doubled_context(base), batch),
            ("2x hidden", replace(base, hidden_dim=2 * base.hidden_dim), batch)]
    dtype = DTYPES[plan.train.dtype]
    results = []
    for name, config, b in rows:
        x, y = random_batch(config, b)
        seconds = best_and_median(time_calls(torch_step(config, plan.train, x, y, dtype),
                                             plan.scaling_steps))
        flops = matmul_flops(config, b)
        results.append({"row": name, "batch_size": b, "context": config.context,
                        "hidden_dim": config.hidden_dim, "fusion": list(config.fusion),
                        "step_ms": seconds["best"] * 1e3, "step_ms_median": seconds["median"] * 1e3,
                        "gflops": flops / seconds["best"] / 1e9,
                        "to_peak": flops / seconds["best"] / 1e9 / peak_gflops})
    for row in results:
        row["x_base"] = row["step_ms"] / results[0]["step_ms"]
    return results


# ---------------------------------------------------------------------------------------------
# Text, n-gram timings, the parity suite
# ---------------------------------------------------------------------------------------------

def find_text(data: str | os.PathLike | None = None) -> Path | None:
    """``data`` if given (it must exist), else ``data/tinyshakespeare.txt``; None if there is none."""
    if data is not None:
        path = Path(data)
        if not path.is_file():
            raise FileNotFoundError(f"--data: no file at {path}")
        return path
    return DEFAULT_DATA_PATH if DEFAULT_DATA_PATH.is_file() else None


def training_ids(text: str | None, config: ModelConfig, seed: int) -> tuple[torch.Tensor, ModelConfig]:
    """The train split's ids and the model config with the text's vocabulary size; without a
    text, 1,003,854 random ids (the Tiny Shakespeare train size: speed does not read the text)."""
    if text is None:
        generator = torch.Generator().manual_seed(seed)
        return torch.randint(config.vocab_size, (1_003_854,), generator=generator), config
    vocab = CharVocab.from_text(text)
    train_ids, _ = split_ids(vocab.encode(text))
    return train_ids, replace(config, vocab_size=len(vocab))


def ngram_timings(text: str, orders: Sequence[int], smoothings: Sequence[str]) -> list[dict]:
    """``numpy_ref.ngram`` fit on train + held-out score on val (docs/DESIGN.md §3), timed per
    (smoothing, order)."""
    vocab = CharVocab.from_text(text)
    ids = vocab.encode(text).numpy()
    n_train = len(split_ids(torch.from_numpy(ids))[0])
    rows = []
    for smoothing in smoothings:
        for order in orders:
            start = time.perf_counter()
            model = NGramLM.fit(ids[:n_train], order, len(vocab), smoothing)
            fitted = time.perf_counter()
            loss = model.score(ids, n_train)
            done = time.perf_counter()
            rows.append({"order": order, "smoothing": smoothing, "fit_s": fitted - start,
                         "score_s": done - fitted, "fit_score_s": done - start, "val_loss": loss})
    return rows


def parity_suite(repo: Path = REPO, timeout: float = 3600.0) -> dict:
    """Wall time and outcome of ``python -m pytest -q -p no:cacheprovider`` in ``repo``."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
                          cwd=repo, capture_output=True, text=True, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    return {"seconds": time.perf_counter() - start, "returncode": proc.returncode,
            "summary": lines[-1].strip("= ") if lines else ""}


# ---------------------------------------------------------------------------------------------
# The whole run
# ---------------------------------------------------------------------------------------------

def run(plan: BenchPlan, text: str | None, progress: Callable[[str], None] = lambda _: None) -> dict:
    """Every section in order; returns ``{"summary": flat headline keys, ...sections}``."""
    load_start = os.getloadavg()
    ids, model_config = training_ids(text, plan.model, plan.train.seed)
    plan = replace(plan, model=model_config)
    gemm = GemmPeak(plan.gemm_sizes)
    gemm.run_once()  # warm-up: threads started, pages touched
    gemm.clear()
    progress("training throughput")
    train = training_throughput(plan, ids, gemm)
    peak = gemm.summary()
    compiled = None
    if plan.compile:
        progress("training throughput under torch.compile")
        compiled = training_throughput(replace(plan, train=replace(plan.train, compile=True)),
                                       ids, gemm)
        peak = gemm.summary()
    progress("numpy_ref vs torch")
    compare = numpy_vs_torch(plan)
    progress("scaling")
    scale = scaling(plan, peak["best"])
    ngram = None
    if text is not None:
        progress("n-gram fit + score")
        ngram = ngram_timings(text, plan.ngram_orders, plan.ngram_smoothings)
    suite = None
    if plan.run_suite:
        progress("parity suite")
        suite = parity_suite()
    results = {
        "plan": plan.to_dict(),
        "machine": machine_info(),
        "gemm": peak,
        "train": train,
        "train_compiled": compiled,
        "numpy_vs_torch": compare,
        "scaling": scale,
        "ngram": ngram,
        "parity_suite": suite,
        "loadavg_start": list(load_start),
        "loadavg_end": list(os.getloadavg()),
    }
    results["summary"] = summarize(results)
    return results


def summarize(results: dict) -> dict:
    """The flat headline keys (the issue's ``--json`` contract) and the target verdicts."""
    train, peak = results["train"], results["gemm"]["best"]
    seven = {r["smoothing"]: r["fit_score_s"] for r in results["ngram"] or [] if r["order"] == 7}
    suite = results["parity_suite"]
    summary = {
        "gemm_peak_gflops": peak,
        "train_gflops": train["gflops"],
        "train_to_peak_ratio": train["gflops"] / peak,
        "tokens_per_sec": train["tokens_per_sec"],
        "step_ms": train["step_ms"]["best"],
        "compiled_to_peak_ratio": results["train_compiled"]["gflops"] / peak if results["train_compiled"] else None,
        **{f"{piece}_share": train["shares"][piece] for piece in PIECES},
        "numpy_over_torch_float64": results["numpy_vs_torch"]["float64"]["numpy_over_torch"],
        "numpy_over_torch_float32": results["numpy_vs_torch"]["float32"]["numpy_over_torch"],
        "kn7_fit_score_s": seven.get("kn"),      # interpolated Kneser-Ney, order 7
        "mkn7_fit_score_s": seven.get("mkn"),    # modified Kneser-Ney, order 7
        "parity_suite_s": suite["seconds"] if suite else None,
        "threads": results["machine"]["threads"],
        "loadavg_start": results["loadavg_start"],
        "loadavg_end": results["loadavg_end"],
    }
    summary["targets"] = target_verdicts(summary)
    return summary


def target_verdicts(summary: dict) -> dict:
    """{target: {"value", "limit", "met"}}; ``met`` is None when the figure was not measured."""
    compare = {">=": lambda v, l: v >= l, "<": lambda v, l: v < l, "<=": lambda v, l: v <= l}
    verdicts = {}
    for name, (key, op, limit) in TARGETS.items():
        value = summary[key]
        verdicts[name] = {"key": key, "value": value, "limit": f"{op} {limit}",
                          "met": None if value is None else compare[op](value, limit)}
    return verdicts


# ---------------------------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------------------------

def _fmt(value, digits: int = 2) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]


def to_markdown(results: dict, command: str) -> str:
    """The generated part of ``BENCH.md``: every section as a table."""
    s, m, train = results["summary"], results["machine"], results["train"]
    lines = ["# Benchmarks", "",
             f"Generated by `{command}` — {time.strftime('%Y-%m-%d %H:%M')}, {m['threads']} torch "
             f"threads on {m['cpu_count']} × {m['cpu']}, torch {m['torch']}, NumPy {m['numpy']}.",
             f"Environment: {_env(m['env'])}. Text: {results.get('data', '—')}.",
             f"Load average (1, 5, 15 min) at start {_loads(results['loadavg_start'])}, at end "
             f"{_loads(results['loadavg_end'])}. Figures are the best of several measurements "
             "(median in brackets); verdicts are ratios within this run (see `torch_lm/bench.py`).",
             "", "## Targets", ""]
    lines += _table(["target", "measured", "limit", "met"],
                    [[n, _fmt(v["value"], 3), v["limit"], {True: "yes", False: "**no**", None: "—"}[v["met"]]]
                     for n, v in s["targets"].items()])
    lines += ["", "## GEMM peak and training throughput", ""]
    g = results["gemm"]
    rows = [[f"GEMM fp32 mm {size}² (GFLOP/s)", f"{r['best']:.1f} ({r['median']:.1f})"]
            for size, r in g["per_size"].items()]
    rows += [[f"GEMM peak (GFLOP/s), {g['repeats']} repetitions per size", f"**{g['best']:.1f}**"],
            ["training step (ms)", f"{train['step_ms']['best']:.3f} ({train['step_ms']['median']:.3f})"],
            ["tokens/s", f"{train['tokens_per_sec']:,.0f} ({train['tokens_per_sec_median']:,.0f})"],
            ["sustained tokens/s (all measured time)", f"{train['tokens_per_sec_sustained']:,.0f}"],
            ["matmul FLOPs per step (fwd + bwd)", f"{train['matmul_flops_per_step']:,}"],
            ["achieved GFLOP/s", f"{train['gflops']:.1f} ({train['gflops_median']:.1f})"],
            ["training / GEMM peak", f"{s['train_to_peak_ratio']:.1%}"],
            ["minor page faults per step", f"{train['page_faults_per_step']:,.0f}"]]
    if results["train_compiled"]:
        c = results["train_compiled"]
        rows += [["under torch.compile: step (ms)", f"{c['step_ms']['best']:.3f} ({c['step_ms']['median']:.3f})"],
                 ["under torch.compile: / GEMM peak", f"{c['gflops'] / g['best']:.1%}"]]
    lines += _table(["figure", "value"], rows)
    lines += ["", f"Model {_model(results['plan']['model'])}, batch {train['batch_size']}, "
              f"{train['windows']} windows of {train['steps_per_window']} steps (one log interval each); "
              "the step is the fastest ordinary step plus the fastest log work / log interval.",
              "", "## Step split (fastest step, log work amortised)", ""]
    lines += _table(["piece", "ms per step", "share"],
                    [[p, f"{train['split_ms_per_step'][p]:.3f}", f"{train['shares'][p]:.1%}"] for p in PIECES])
    lines += ["", "## NumPy reference vs torch (forward + backward + AdamW, ms per step)", ""]
    lines += _table(["dtype", "numpy_ref", "torch_lm", "numpy / torch"],
                    [[d, _ms(r["numpy_ms"]), _ms(r["torch_ms"]),
                      f"{r['numpy_over_torch']:.2f} ({r['numpy_over_torch_median']:.2f})"]
                     for d, r in results["numpy_vs_torch"].items()])
    lines += ["", "## Scaling (torch step, forward + backward + AdamW)", ""]
    lines += _table(["row", "batch", "context", "hidden", "ms per step", "× base", "GFLOP/s", "/ peak"],
                    [[r["row"], r["batch_size"], r["context"], r["hidden_dim"],
                      f"{r['step_ms']:.3f} ({r['step_ms_median']:.3f})", f"{r['x_base']:.2f}",
                      f"{r['gflops']:.1f}", f"{r['to_peak']:.1%}"] for r in results["scaling"]])
    lines += ["", "## n-gram (Kneser-Ney: fit on train + score every val position)", ""]
    if results["ngram"]:
        lines += _table(["smoothing", "order", "fit (s)", "score (s)", "total (s)", "val loss (nats/char)"],
                        [[r["smoothing"], r["order"], f"{r['fit_s']:.2f}", f"{r['score_s']:.2f}",
                          f"{r['fit_score_s']:.2f}", f"{r['val_loss']:.4f}"] for r in results["ngram"]])
    else:
        lines.append("Not measured: no text (pass --data PATH or run scripts/download_data.py).")
    suite = results["parity_suite"]
    lines += ["", "## Parity suite", "",
              f"`python -m pytest -q -p no:cacheprovider`: {suite['seconds']:.1f} s wall, "
              f"exit code {suite['returncode']} ({suite['summary']})." if suite
              else "Not run (--skip-suite)."]
    return "\n".join(lines) + "\n"


def _loads(loads: Sequence[float]) -> str:
    return ", ".join(f"{x:.2f}" for x in loads)


def _env(env: dict) -> str:
    settings = [f"`{k}={v}`" for k, v in env.items() if v]
    return ", ".join(settings) if settings else "no thread or malloc variables set"


def _ms(timing: dict) -> str:
    return f"{timing['best']:.3f} ({timing['median']:.3f})"


def _model(config: dict) -> str:
    keys = ("vocab_size", "context", "embed_dim", "hidden_dim", "fusion", "n_blocks", "activation",
            "norm", "dropout")
    return ", ".join(f"{k}={config[k]}" for k in keys)


def kept_notes(path: Path) -> str:
    """The hand-written part of an existing ``BENCH.md``: the marker line and what follows."""
    if not path.is_file():
        return NOTES_MARKER + "\n"
    text = path.read_text(encoding="utf-8")
    index = text.find(NOTES_MARKER)
    return text[index:] if index >= 0 else NOTES_MARKER + "\n"


def write_reports(results: dict, out_dir: Path, command: str) -> tuple[Path, Path]:
    """``bench.json`` (everything) and ``BENCH.md`` (tables + the kept notes) in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "bench.json", out_dir / "BENCH.md"
    json_path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    md_path.write_text(to_markdown(results, command) + "\n" + kept_notes(md_path), encoding="utf-8")
    return json_path, md_path


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="bench.py", description="Speed of the training hot path against this machine's "
        "GEMM peak, numpy_ref vs torch, scaling, n-gram and parity-suite timings; writes "
        "reports/bench.json and reports/BENCH.md.")
    parser.add_argument("--json", action="store_true",
                        help="print the results as one JSON object on the last line")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (noisier figures)")
    parser.add_argument("--skip-suite", action="store_true", help="do not time the parity suite")
    parser.add_argument("--compile", action="store_true",
                        help="also time the training loop under torch.compile")
    parser.add_argument("--data", help="text file for the n-gram timings and the batches "
                        "(default: data/tinyshakespeare.txt)")
    parser.add_argument("--threads", type=_positive_int,
                        help="torch and BLAS threads (default: torch's, all cores)")
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR,
                        help="where bench.json and BENCH.md go")
    return parser


def main(argv: Sequence[str] | None = None, plan: BenchPlan | None = None) -> int:
    """``scripts/bench.py``; ``plan`` overrides ``default_plan`` (tests use tiny sizes)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    keep_freed_memory()  # as train_main does: the trainer's step is measured as it runs
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        path = find_text(args.data)
        text = read_text(path) if path else None
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    if plan is None:
        plan = default_plan(args.quick, run_suite=not args.skip_suite, compile=args.compile)
    results = run(plan, text, progress=lambda what: print(f"bench: {what}", file=sys.stderr))
    results["data"] = str(path) if path else "synthetic ids (no text found)"
    command = "python scripts/bench.py" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    json_path, md_path = write_reports(results, args.out_dir, command)
    print(f"bench: wrote {json_path} and {md_path}", file=sys.stderr)
    print(json.dumps(results["summary"]) if args.json else to_markdown(results, command))
    return 0
