"""What the benchmark measures and how often (``BenchPlan``), and the targets it is held to."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from numpy_ref.config import ModelConfig
from torch_lm.training.config import TrainConfig

PIECES = ("sampling", "forward", "backward", "optimiser", "logging")
# name -> (summary key, comparison, limit): the project's targets on 2 CPU cores.
TARGETS = {
    "training step vs GEMM peak": ("train_to_peak_ratio", ">=", 0.60),
    "batch sampling share of the step": ("sampling_share", "<", 0.05),
    "logging share of the step": ("logging_share", "<", 0.03),
    "numpy_ref / torch step, float64": ("numpy_over_torch_float64", "<=", 1.5),
    "7-gram KN fit + held-out scoring (s)": ("kn7_fit_score_s", "<", 10.0),
    "bfloat16 / full-precision targets per second": ("bf16_speedup", ">=", 2.0),
}


@dataclass(frozen=True)
class BenchPlan:
    """What to measure and how often; ``default_plan`` fills it from the live defaults."""

    model: ModelConfig
    train: TrainConfig
    gemm_sizes: tuple[int, ...] = (1024, 2048)
    windows: int = 6  # measured log intervals
    gemm_per_window: int = 2  # repetitions of each GEMM size before each window
    warmup_windows: int = 1
    compare_steps: int = 20  # numpy vs torch: timed steps per engine and dtype
    scaling_steps: int = 10  # timed steps per scaling row
    ngram_orders: tuple[int, ...] = (3, 5, 7)
    ngram_smoothings: tuple[str, ...] = ("kn", "mkn")  # interpolated and modified Kneser-Ney
    sample_chars: int = 300  # sampling: characters drawn per row and run, window forward vs incremental
    sample_batches: tuple[int, ...] = (1, 8)  # sampling: rows drawn at once
    sample_repeats: int = 3  # sampling: timed runs per path and batch size
    run_suite: bool = True
    compile: bool = False  # also measure the training loop under torch.compile

    def to_dict(self) -> dict:
        d = asdict(self)
        d["model"], d["train"] = self.model.to_dict(), self.train.to_dict()
        for key in ("gemm_sizes", "ngram_orders", "ngram_smoothings", "sample_batches"):
            d[key] = list(d[key])
        return d


def default_plan(quick: bool = False, run_suite: bool = True, compile: bool = False) -> BenchPlan:
    """The default model and training configs as they are at run time, the step in full precision
    (``run`` adds the bfloat16 step where the CPU has it); ``quick`` takes fewer repetitions of
    everything (figures are noisier, not different)."""
    plan = BenchPlan(ModelConfig(), TrainConfig(precision="full"), run_suite=run_suite, compile=compile)
    if quick:
        plan = replace(plan, windows=3, compare_steps=6, scaling_steps=4, sample_chars=100, sample_repeats=2)
    return plan
