"""``TrainConfig``: the optimisation, logging and run settings of a training run, and the
device and dtype names it accepts.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, replace

import torch

from numpy_ref.validation import (
    check_nonnegative_float,
    check_nonnegative_int,
    check_positive_float,
    check_positive_int,
    check_probability,
    fail,
)
from torch_lm.training.precision import check_precision, resolve_precision
from torch_lm.training.step import OptimizerSettings, warmup_cosine

DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")
# Parameter dtypes. Lower precision is for the matrix products only (``precision``): the project's
# modules compute softmax and LayerNorm statistics by hand, and those stay in the parameters' dtype.
DTYPES = {"float32": torch.float32, "float64": torch.float64}


# A run keeps its EMA of the weights only if, by its last step, the initial weights (the average's
# first copy) weigh at most this much in it: an average that still holds the untrained start would
# report a worse model than the one trained (``TrainConfig.resolved``).
EMA_INITIAL_SHARE = 0.1

# Settings added after checkpoints were written, with the value those checkpoints trained with.
KEYS_ADDED_LATER = {"targets_per_row": 1, "precision": "full", "ema_decay": 0.0}


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, logging and run settings (the model's are in ``ModelConfig``).

    ``batch_size`` is the global batch of rows (data-parallel ranks split it); a row is
    ``targets_per_row`` consecutive targets with their contexts, scored at once by the model's
    sequence forward (1: one window per row, the window forward). ``lr`` warms up linearly
    over ``warmup_steps`` (at most a tenth of ``max_steps``) and then follows a cosine down to
    ``min_lr`` at ``max_steps``.
    ``grad_clip`` is the max global gradient norm (0 = off). ``ema_decay`` (0 = off, else in
    (0, 1)) keeps an exponential moving average of the weights, updated after every optimiser
    step (``torch.optim.swa_utils.AveragedModel``); the run is then evaluated, sampled, selected
    (``best.pt``) and reported with the average, and its checkpoints' ``model`` is the average.
    ``time_budget`` stops training after that many wall-clock seconds of this process (0 = no
    limit); the lr schedule still refers to ``max_steps``. Every ``log_interval`` steps the running
    train loss and diagnostics are logged, every ``eval_interval`` steps the held-out loss is computed (``eval_batch_size`` windows per
    forward), a ``sample_length``-character sample is generated and ``last.pt``/``best.pt`` are
    saved in ``run_dir``; every ``checkpoint_interval`` steps (0 = only at evaluations)
    ``last.pt`` is saved as well, so a crash loses at most that many steps. ``resume`` continues
    from ``run_dir/last.pt``. ``holdout_tail`` characters at the end of the train split are left
    out of the training batches and the run is evaluated on them instead of val, so that a choice
    (a recipe, a mixture weight) can be made on text the model never saw without touching val.
    ``fused_optimizer`` takes AdamW's fused kernel where torch has one (``make_optimizer``);
    ``compile`` runs the forward under ``torch.compile``. ``precision`` is the matrix products'
    (``full``: the parameters' dtype; ``bfloat16``; or ``auto``: bfloat16 where the device has it
    natively; ``torch_lm.training.precision``). ``resolved`` gives the config a run on a device
    takes and records: ``auto`` replaced, and no EMA where the run is too short for its average.
    ``lr_at`` and ``optimizer_settings`` give the step its schedule and optimiser.
    """

    # The defaults are the recipe chosen on the train tail (docs/EXPERIMENTS.md): 8 rows of 64
    # targets, 512 targets per step, the figures from an average of the weights (EMA 0.9998),
    # 12,000 steps, bfloat16 products where the machine has them.
    batch_size: int = 8
    targets_per_row: int = 64
    lr: float = 2e-3
    min_lr: float = 2e-4
    warmup_steps: int = 200
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.99)
    grad_clip: float = 1.0
    ema_decay: float = 0.9998
    max_steps: int = 12000
    time_budget: float = 0.0
    eval_interval: int = 2000
    log_interval: int = 50
    checkpoint_interval: int = 0
    eval_batch_size: int = 4096
    sample_length: int = 300
    seed: int = 1337
    device: str = "auto"
    dtype: str = "float32"
    precision: str = "auto"
    run_dir: str = "runs/default"
    resume: bool = False
    compile: bool = False
    fused_optimizer: bool = True
    holdout_tail: int = 0

    def __post_init__(self) -> None:
        where = "TrainConfig"
        for name in ("batch_size", "targets_per_row", "max_steps", "eval_interval", "log_interval", "eval_batch_size"):
            check_positive_int(where, name, getattr(self, name))
        for name in ("warmup_steps", "sample_length", "seed", "checkpoint_interval"):
            check_nonnegative_int(where, name, getattr(self, name))
        check_positive_float(where, "lr", self.lr)
        for name in ("min_lr", "weight_decay", "grad_clip", "time_budget"):
            check_nonnegative_float(where, name, getattr(self, name))
        check_probability(where, "ema_decay", self.ema_decay)
        if self.min_lr > self.lr:
            fail(where, f"min_lr must not exceed lr, got min_lr={self.min_lr!r} > lr={self.lr!r}")
        object.__setattr__(self, "betas", tuple(self.betas))
        if len(self.betas) != 2 or not all(
            isinstance(b, (int, float)) and not isinstance(b, bool) and 0.0 <= b < 1.0 for b in self.betas
        ):
            fail(where, f"betas must be two numbers in [0, 1), got {self.betas!r}")
        if not isinstance(self.device, str) or not DEVICE_PATTERN.fullmatch(self.device):
            fail(where, f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.dtype not in DTYPES:
            fail(where, f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        check_precision(where, self.precision, self.dtype)
        if not isinstance(self.run_dir, str) or not self.run_dir:
            fail(where, f"run_dir must be a non-empty path, got {self.run_dir!r}")
        for name in ("resume", "compile", "fused_optimizer"):
            if not isinstance(getattr(self, name), bool):
                fail(where, f"{name} must be True or False, got {getattr(self, name)!r}")

    def resolved(self, device: torch.device) -> TrainConfig:
        """This config as a run on ``device`` takes it: ``precision`` resolved (``resolve_precision``),
        and no EMA of the weights (``ema_decay`` 0) when the run is too short for the average to
        forget the initial weights (``ema_min_steps``)."""
        precision = resolve_precision(self.precision, self.dtype, device)
        keeps_ema = self.ema_decay and self.max_steps >= ema_min_steps(self.ema_decay)
        return replace(self, precision=precision, ema_decay=self.ema_decay if keeps_ema else 0.0)

    def lr_at(self, step: int) -> float:
        """The learning rate of the 0-based ``step`` (``warmup_cosine``)."""
        return warmup_cosine(self.lr, self.min_lr, self.warmup_steps, self.max_steps)(step)

    @property
    def targets_per_step(self) -> int:
        """Targets of one global batch: ``batch_size * targets_per_row``."""
        return self.batch_size * self.targets_per_row

    def optimizer_settings(self) -> OptimizerSettings:
        """AdamW with this config's lr, betas, weight decay and fused switch."""
        return OptimizerSettings(
            "adamw", lr=self.lr, weight_decay=self.weight_decay, betas=self.betas, fused=self.fused_optimizer
        )

    def to_dict(self) -> dict:
        """A plain dict (lists, not tuples) for checkpoints, JSON and TensorBoard hparams."""
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Inverse of ``to_dict``; unknown keys are an error. A key that a checkpoint of an older
        recipe lacks takes the value that recipe trained with (``KEYS_ADDED_LATER``), not today's
        default, so resuming it continues the same run."""
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            fail("TrainConfig", f"unknown keys {unknown}; known keys are {sorted(cls.__dataclass_fields__)}")
        return cls(**{**KEYS_ADDED_LATER, **d})


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda``/``cuda:N`` only if that device exists."""
    if not DEVICE_PATTERN.fullmatch(name):
        fail("device", f"must be auto, cpu, cuda or cuda:N, got {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            fail("device", f"{name} requested but CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            fail("device", f"{name} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    return device


def ema_min_steps(decay: float) -> int:
    """The fewest steps after which an EMA of ``decay`` holds at most ``EMA_INITIAL_SHARE`` of its
    first copy (``decay ** steps <= EMA_INITIAL_SHARE``): 11,512 for 0.9998."""
    return math.ceil(math.log(EMA_INITIAL_SHARE) / math.log(decay)) if 0 < decay < 1 else 0
