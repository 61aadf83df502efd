"""Trajectory parity, torch side: the twin of ``numpy_ref/trajectory.py``'s training loop, and the
comparison of the two runs.

The torch run takes the trainer's own step (``TrainingStep`` with ``make_optimizer``, AdamW on its
op-by-op path, the one ``numpy_ref.optim.AdamW`` mirrors), so the parity proves the step real runs
take. Both runs start from the same parameters (drawn by ``NeuralLM.reset_parameters`` and copied
to NumPy), see the same batches and dropout masks, and use the same optimiser settings, schedule
and clipping. The report gives the largest relative difference of the loss over all steps and of
the final parameters (per tensor, in the L2 norm). The tolerances, and the measurements behind
them, are in ``docs/trajectory_parity.md``.
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
from torch_lm.training.config import DTYPES
from torch_lm.training.step import OptimizerSettings, TrainingStep, make_optimizer

# "small" exercises every part of the architecture (fusion levels, LayerNorm, a residual block)
# in a second; "default" is ``ModelConfig()``, the project's default architecture.
MODEL_CONFIGS = {
    "small": ModelConfig(vocab_size=27, context=8, embed_dim=6, hidden_dim=16, fusion=(2, 2, 2), n_blocks=1, norm=True),
    "default": ModelConfig(),
}
FLOAT64_TOLERANCE = 1e-10
EPS32 = float(np.finfo(np.float32).eps)
FLOAT32_WALK_PER_SQRT_STEP = 32  # in units of EPS32; see docs/trajectory_parity.md
FLOAT32_ADAM_EPS_TERM = 2**14  # in units of EPS32; see docs/trajectory_parity.md


def model_config_named(name: str, dropout: float = 0.0) -> ModelConfig:
    """``MODEL_CONFIGS[name]`` with the given dropout probability."""
    return ModelConfig.from_dict({**MODEL_CONFIGS[name].to_dict(), "dropout": dropout})


def tolerance(dtype: str, steps: int, optimizer: str) -> float:
    """The largest relative difference accepted after ``steps`` steps in ``dtype``
    (``docs/trajectory_parity.md``)."""
    if dtype == "float64":
        return FLOAT64_TOLERANCE
    adam_term = FLOAT32_ADAM_EPS_TERM if optimizer == "adamw" else 0
    return EPS32 * (FLOAT32_WALK_PER_SQRT_STEP * steps**0.5 + adam_term)


# ----------------------------------------------------------------------------- the torch run
def initial_params(model_config: ModelConfig, seed: int, dtype: str) -> dict[str, np.ndarray]:
    """A freshly initialised ``NeuralLM``'s state_dict as NumPy arrays of ``dtype``."""
    model = NeuralLM(model_config).to(DTYPES[dtype])
    model.reset_parameters(torch.Generator().manual_seed(seed))
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def optimizer_settings(run: TrajectoryConfig) -> OptimizerSettings:
    """The run's optimiser for ``make_optimizer``: AdamW on its op-by-op path, or SGD."""
    return OptimizerSettings(
        run.optimizer, lr=run.lr, weight_decay=run.weight_decay, betas=run.betas, momentum=run.momentum, fused=False
    )


def train(
    params: dict[str, np.ndarray],
    model_config: ModelConfig,
    run: TrajectoryConfig,
    batches: list[Batch],
    masks: list[Masks],
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The twin of ``numpy_ref.trajectory.train``: same arguments, same returns, every step a
    ``TrainingStep``.

    params: NumPy arrays keyed like the state_dict (their dtype is the run's dtype).
    Returns the final parameters as NumPy arrays and the loss of every step, shape (steps,).
    """
    dtype = next(iter(params.values())).dtype
    model = NeuralLM(model_config).to(DTYPES[dtype.name])
    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in params.items()})
    model.train()
    step = TrainingStep(model, make_optimizer(model, optimizer_settings(run)), run.lr_at, run.grad_clip)
    losses = np.empty(len(batches), dtype=dtype)
    with _single_threaded():
        for i, ((x, y), step_masks) in enumerate(zip(batches, masks)):
            loss = step(
                i,
                torch.from_numpy(x),
                torch.from_numpy(y),
                masks={name: torch.from_numpy(m) for name, m in step_masks.items()},
            )
            losses[i] = loss.item()
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}, losses


@contextlib.contextmanager
def _single_threaded():
    """Run torch on one thread inside the block, then restore the thread count.

    The tensors here are tiny; with two OpenMP threads on cores shared with other processes the
    threads spin-wait on each other, measured 40x slower than one thread (12.8 s vs 0.3 s).
    """
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
    loss_max_rel_diff: float  # over all steps
    param_max_rel_diff: float  # over all tensors, at the end
    worst_param: str
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
        return asdict(self)


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
    model_config: ModelConfig, dtype: str, run: TrajectoryConfig, tol: float | None = None
) -> TrajectoryReport:
    """Train both engines ``run.steps`` steps from the same start and compare them."""
    start = time.perf_counter()
    params = initial_params(model_config, run.seed, dtype)
    batches = numpy_trajectory.make_batches(model_config, run)
    masks = numpy_trajectory.make_dropout_masks(model_config, run)
    np_params, np_losses = numpy_trajectory.train(params, model_config, run, batches, masks)
    torch_params, torch_losses = train(params, model_config, run, batches, masks)
    loss_diff = loss_max_rel_diff(np_losses, torch_losses)
    diffs = param_rel_diffs(np_params, torch_params)
    worst = max(diffs, key=diffs.get)
    tol = tolerance(dtype, run.steps, run.optimizer) if tol is None else tol
    return TrajectoryReport(
        dtype=dtype,
        steps=run.steps,
        loss_max_rel_diff=loss_diff,
        param_max_rel_diff=diffs[worst],
        worst_param=worst,
        param_rel_change=global_rel_change(torch_params, params),
        tolerance=tol,
        passed=max(loss_diff, diffs[worst]) <= tol,
        first_loss=float(torch_losses[0]),
        final_loss_numpy=float(np_losses[-1]),
        final_loss_torch=float(torch_losses[-1]),
        seconds=round(time.perf_counter() - start, 3),
        model=model_config.to_dict(),
        run=run.to_dict(),
    )
