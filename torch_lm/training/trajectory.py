"""Trajectory parity, torch side: the twin of ``numpy_ref/trajectory.py``'s loop, and the
comparison of the two runs.

The torch run takes the trainer's own step, built as the trainer builds it
(``build_training_step`` from a ``TrainConfig``: the forward for its rows, window or sequence,
torch's fused AdamW unless ``fused`` is off, the schedule and clipping), on batches drawn by the
trainer's own ``BatchSampler``. Both runs start from the same parameters (drawn by
``NeuralLM.reset_parameters`` and copied to NumPy), take the same batches and dropout masks, and
use the same optimiser settings, schedule and clipping, and, when the run asks for one, keep the
same EMA of the weights (the trainer's ``AveragedModel`` against ``numpy_ref.optim.EMA``). The report
gives the largest relative difference of the loss over all steps and of the final parameters (per
tensor, in the L2 norm), and of the final EMA when there is one. The tolerances, and the
measurements behind them, are in ``docs/trajectory_parity.md``.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from numpy_ref import trajectory as numpy_trajectory
from numpy_ref.config import ModelConfig
from numpy_ref.trajectory import Batch, Masks, TrajectoryConfig
from torch_lm.neural_lm import NeuralLM
from torch_lm.training.batches import BatchSampler
from torch_lm.training.config import DTYPES, TrainConfig
from torch_lm.training.step import OptimizerSettings, build_training_step

# "small" exercises every part of the architecture (fusion levels, LayerNorm, a residual block)
# in a second; "default" is ``ModelConfig()``, the project's default architecture.
MODEL_CONFIGS = {
    "small": ModelConfig(vocab_size=27, context=8, embed_dim=6, hidden_dim=16, fusion=(2, 2, 2), n_blocks=1, norm=True),
    "default": ModelConfig(),
}
TEXT_LENGTH = 20_000  # ids of the synthetic text the batches are drawn from
FLOAT64_TOLERANCE = 1e-10
EPS32 = float(np.finfo(np.float32).eps)
FLOAT32_WALK_PER_SQRT_STEP = 32  # in units of EPS32; see docs/trajectory_parity.md
FLOAT32_ADAM_EPS_TERM = 2**14  # in units of EPS32; see docs/trajectory_parity.md


def model_config_named(name: str, dropout: float | None = None, hidden_dim: int | None = None) -> ModelConfig:
    """``MODEL_CONFIGS[name]``, with the given dropout probability and hidden size where given."""
    overrides = {k: v for k, v in (("dropout", dropout), ("hidden_dim", hidden_dim)) if v is not None}
    return ModelConfig.from_dict({**MODEL_CONFIGS[name].to_dict(), **overrides})


def run_of(
    train_config: TrainConfig, steps: int, optimizer: str = "adamw", seed: int | None = None
) -> TrajectoryConfig:
    """The parity run of ``steps`` steps of a training recipe: its rows, batch, optimiser settings,
    schedule (the trainer's warm-up and cosine over ``steps``) and clipping."""
    t = train_config
    return TrajectoryConfig(
        optimizer=optimizer,
        steps=steps,
        batch_size=t.batch_size,
        targets_per_row=t.targets_per_row,
        lr=t.lr,
        min_lr=t.min_lr,
        warmup_steps=min(t.warmup_steps, steps),
        weight_decay=t.weight_decay,
        betas=t.betas,
        grad_clip=t.grad_clip,
        seed=t.seed if seed is None else seed,
        ema_decay=t.ema_decay,
    )


def train_config_of(run: TrajectoryConfig, dtype: str, fused: bool) -> TrainConfig:
    """The ``TrainConfig`` whose step ``build_training_step`` builds for ``run``, on the CPU, with its
    products in the parameters' dtype (the proof compares float64 and float32 engines, never bfloat16)."""
    return TrainConfig(
        batch_size=run.batch_size,
        targets_per_row=run.targets_per_row,
        lr=run.lr,
        min_lr=run.min_lr,
        warmup_steps=run.warmup_steps,
        weight_decay=run.weight_decay,
        betas=run.betas,
        grad_clip=run.grad_clip,
        ema_decay=run.ema_decay,
        max_steps=run.steps,
        seed=run.seed,
        dtype=dtype,
        precision="full",
        device="cpu",
        fused_optimizer=fused,
    )


def tolerance(dtype: str, steps: int, optimizer: str) -> float:
    """The largest relative difference accepted after ``steps`` steps in ``dtype``
    (``docs/trajectory_parity.md``)."""
    if dtype == "float64":
        return FLOAT64_TOLERANCE
    adam_term = FLOAT32_ADAM_EPS_TERM if optimizer == "adamw" else 0
    return EPS32 * (FLOAT32_WALK_PER_SQRT_STEP * steps**0.5 + adam_term)


# ----------------------------------------------------------------------------- the shared inputs
def initial_params(model_config: ModelConfig, seed: int, dtype: str) -> dict[str, np.ndarray]:
    """A freshly initialised ``NeuralLM``'s state_dict as NumPy arrays of ``dtype``."""
    model = NeuralLM(model_config).to(DTYPES[dtype])
    model.reset_parameters(torch.Generator().manual_seed(seed))
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def trainer_batches(model_config: ModelConfig, run: TrajectoryConfig) -> list[Batch]:
    """The run's batches: the trainer's ``BatchSampler`` (window or sequence rows) on the synthetic
    text of ``run.seed``, step by step, as NumPy arrays for both engines."""
    ids = torch.from_numpy(numpy_trajectory.synthetic_ids(model_config.vocab_size, TEXT_LENGTH, run.seed))
    sampler = BatchSampler(ids, model_config.context, run.batch_size, run.seed, targets_per_row=run.targets_per_row)
    return [tuple(t.numpy() for t in sampler.batch(step)) for step in range(run.steps)]


# ----------------------------------------------------------------------------- the torch run
def optimizer_settings(run: TrajectoryConfig, fused: bool) -> OptimizerSettings:
    """The run's optimiser: AdamW (fused, or the op-by-op path ``numpy_ref.optim`` mirrors) or SGD."""
    return OptimizerSettings(
        run.optimizer, lr=run.lr, weight_decay=run.weight_decay, betas=run.betas, momentum=run.momentum, fused=fused
    )


def train(
    params: dict[str, np.ndarray],
    model_config: ModelConfig,
    run: TrajectoryConfig,
    batches: list[Batch],
    masks: list[Masks],
    fused: bool = True,
) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, np.ndarray] | None]:
    """The twin of ``numpy_ref.trajectory.train``: same arguments, same returns, every step the
    trainer's (``build_training_step``, with its EMA of the weights when ``run.ema_decay`` asks).

    params: NumPy arrays keyed like the state_dict (their dtype is the run's dtype).
    Returns the final parameters as NumPy arrays, the loss of every step, shape (steps,), and the
    final EMA of the parameters (None without one).
    """
    dtype = next(iter(params.values())).dtype
    model = NeuralLM(model_config).to(DTYPES[dtype.name])
    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in params.items()})
    model.train()
    config = train_config_of(run, dtype.name, fused)
    step = build_training_step(model, config, optimizer=optimizer_settings(run, fused))
    losses = np.empty(len(batches), dtype=dtype)
    with _single_threaded():
        for i, ((x, y), step_masks) in enumerate(zip(batches, masks)):
            masks_t = {name: torch.from_numpy(m) for name, m in step_masks.items()}
            losses[i] = step(i, torch.from_numpy(x), torch.from_numpy(y), masks=masks_t).item()
    ema = None if step.ema is None else _numpy_state(step.ema.module)
    return _numpy_state(model), losses, ema


def _numpy_state(module: torch.nn.Module) -> dict[str, np.ndarray]:
    """``module.state_dict()`` as NumPy copies, keys unchanged."""
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


@contextlib.contextmanager
def _single_threaded():
    """Run torch on one thread inside the block, then restore the thread count: the tensors are
    small, and on cores shared with other processes two OpenMP threads spin-wait on each other
    (``docs/trajectory_parity.md``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- the comparison
@dataclass
class TrajectoryReport:
    """The outcome of one parity run; ``to_dict`` is what ``--json`` prints."""

    dtype: str
    steps: int
    targets_per_row: int
    fused: bool
    dropout: float
    ema_decay: float  # 0: no EMA of the weights
    loss_max_rel_diff: float  # over all steps
    param_max_rel_diff: float  # over all tensors, at the end
    worst_param: str
    ema_max_rel_diff: float | None  # over the EMA's tensors, at the end; None without an EMA
    param_rel_change: float  # ||final - initial|| / ||initial|| over all parameters: how far they moved
    tolerance: float
    passed: bool
    first_loss: float
    final_loss_numpy: float
    final_loss_torch: float
    seconds: float
    model: dict
    run: dict

    def to_dict(self) -> dict:
        """The fields, without ``ema_max_rel_diff`` when the run kept no EMA."""
        d = asdict(self)
        if d["ema_max_rel_diff"] is None:
            del d["ema_max_rel_diff"]
        return d


def loss_max_rel_diff(losses: np.ndarray, reference: np.ndarray) -> float:
    """max over steps of |losses - reference| / |reference|; inf if either run went non-finite."""
    losses, reference = np.asarray(losses, np.float64), np.asarray(reference, np.float64)
    if not (np.all(np.isfinite(losses)) and np.all(np.isfinite(reference))):
        return float("inf")
    return float(np.max(np.abs(losses - reference) / np.abs(reference)))


def param_rel_diffs(params: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> dict[str, float]:
    """Per key: ||p - ref|| / ||ref|| (L2 norms over the whole tensor; inf when non-finite)."""
    diffs = {}
    for key, ref in reference.items():
        p, ref = np.asarray(params[key], np.float64), np.asarray(ref, np.float64)
        diff, scale = float(np.linalg.norm(p - ref)), float(np.linalg.norm(ref))
        if not np.isfinite(diff):
            diffs[key] = float("inf")
        else:
            diffs[key] = diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))
    return diffs


def global_rel_change(final: dict[str, np.ndarray], initial: dict[str, np.ndarray]) -> float:
    """||final - initial|| / ||initial||, with all parameters taken as one vector (L2 norms)."""
    moved = sum(float(np.sum((final[k].astype(np.float64) - v) ** 2)) for k, v in initial.items())
    size = sum(float(np.sum(v.astype(np.float64) ** 2)) for v in initial.values())
    return (moved / size) ** 0.5


def run_parity(
    model_config: ModelConfig, dtype: str, run: TrajectoryConfig, tol: float | None = None, fused: bool = True
) -> TrajectoryReport:
    """Train both engines ``run.steps`` steps from the same start and compare them."""
    start = time.perf_counter()
    params = initial_params(model_config, run.seed, dtype)
    batches = trainer_batches(model_config, run)
    masks = numpy_trajectory.make_dropout_masks(model_config, run)
    np_params, np_losses, np_ema = numpy_trajectory.train(params, model_config, run, batches, masks)
    torch_params, torch_losses, torch_ema = train(params, model_config, run, batches, masks, fused)
    loss_diff = loss_max_rel_diff(np_losses, torch_losses)
    diffs = param_rel_diffs(np_params, torch_params)
    worst = max(diffs, key=diffs.get)
    ema_diff = None if torch_ema is None else max(param_rel_diffs(np_ema, torch_ema).values())
    tol = tolerance(dtype, run.steps, run.optimizer) if tol is None else tol
    return TrajectoryReport(
        dtype=dtype,
        steps=run.steps,
        targets_per_row=run.targets_per_row,
        fused=fused and run.optimizer == "adamw",
        dropout=model_config.dropout,
        ema_decay=run.ema_decay,
        loss_max_rel_diff=loss_diff,
        param_max_rel_diff=diffs[worst],
        worst_param=worst,
        ema_max_rel_diff=ema_diff,
        param_rel_change=global_rel_change(torch_params, params),
        tolerance=tol,
        passed=max(loss_diff, diffs[worst], 0.0 if ema_diff is None else ema_diff) <= tol,
        first_loss=float(torch_losses[0]),
        final_loss_numpy=float(np_losses[-1]),
        final_loss_torch=float(torch_losses[-1]),
        seconds=round(time.perf_counter() - start, 3),
        model=model_config.to_dict(),
        run=run.to_dict(),
    )
