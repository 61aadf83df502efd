"""A NumPy training loop for the NeuralLM, and the deterministic inputs of a trajectory-parity run.

Trajectory parity asks more than per-component parity: that a whole training run — forward,
hand-written backward, gradient clipping, optimiser, learning-rate schedule, repeated N times —
follows the same path as the torch run started from the same parameters on the same batches.
This module holds the NumPy loop and everything both sides must share so that the runs are
comparable: the run's hyperparameters (``TrajectoryConfig``), the batches and the dropout
keep-masks (drawn here, up front, from a seed), the optimiser choice and the lr schedule.

The batches are a synthetic bigram task rather than real text, so the run depends on nothing
but a seed (no data files): contexts are uniform random ids and each target is drawn from a fixed
random distribution over the next id given the context's last id. The model can learn it, so the
loss falls and the parameters really move, as in training.

Twin: ``torch_lm/training/trajectory.py`` (the same loop through the trainer's own step, and the
comparison); proof: ``parity_tests/test_trajectory.py``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from numpy_ref.config import ModelConfig
from numpy_ref.dropout import make_keep_mask
from numpy_ref.neural_lm import hidden_layer_names, neural_lm_backward, neural_lm_forward
from numpy_ref.optim import SGD, AdamW, clip_grad_norm, no_decay_keys, warmup_cosine_lr
from numpy_ref.validation import (
    check_nonnegative_float,
    check_positive_float,
    check_positive_int,
    check_probability,
    fail,
)

OPTIMIZERS = ("adamw", "sgd")
Batch = tuple[np.ndarray, np.ndarray]  # x (B, T) int64 ids, y (B,) int64 next ids
Masks = dict[str, np.ndarray]  # hidden layer name -> bool keep-mask of its output shape


@dataclass(frozen=True)
class TrajectoryConfig:
    """Hyperparameters of one parity run (the optimiser's and the schedule's, not the model's).

    ``lr`` is the peak of the warmup + cosine schedule, which ends at ``min_lr`` after ``steps``.
    ``momentum`` is used by SGD only, ``betas`` by AdamW only. ``grad_clip`` 0 means no clipping.
    """

    optimizer: str = "adamw"
    steps: int = 200
    batch_size: int = 32
    lr: float = 1e-2
    min_lr: float = 1e-3
    warmup_steps: int = 10
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.99)
    momentum: float = 0.9
    grad_clip: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        where = "TrajectoryConfig"
        if self.optimizer not in OPTIMIZERS:
            fail(where, f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        check_positive_int(where, "steps", self.steps)
        check_positive_int(where, "batch_size", self.batch_size)
        check_positive_float(where, "lr", self.lr)
        check_nonnegative_float(where, "min_lr", self.min_lr)
        if (
            isinstance(self.warmup_steps, bool)
            or not isinstance(self.warmup_steps, int)
            or not 0 <= self.warmup_steps <= self.steps
        ):
            fail(where, f"warmup_steps must be an integer in [0, steps={self.steps}], got {self.warmup_steps!r}")
        check_nonnegative_float(where, "weight_decay", self.weight_decay)
        object.__setattr__(self, "betas", tuple(self.betas))
        check_probability(where, "betas[0]", self.betas[0])
        check_probability(where, "betas[1]", self.betas[1])
        check_nonnegative_float(where, "momentum", self.momentum)
        check_nonnegative_float(where, "grad_clip", self.grad_clip)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            fail(where, f"seed must be an integer >= 0, got {self.seed!r}")

    def lr_at(self, step: int) -> float:
        """The learning rate of step ``step`` (0-based): warmup to ``lr``, cosine to ``min_lr``."""
        return warmup_cosine_lr(step, self.lr, self.warmup_steps, self.steps, self.min_lr)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d


# ----------------------------------------------------------------------------- shared inputs
def make_batches(model_config: ModelConfig, run: TrajectoryConfig) -> list[Batch]:
    """``run.steps`` batches of the synthetic bigram task, from ``run.seed`` alone.

    Returns a list of (x (B, T) int64, y (B,) int64) with B = run.batch_size, T = context.
    """
    V, T, B = model_config.vocab_size, model_config.context, run.batch_size
    task_rng, batch_rng = np.random.default_rng(run.seed).spawn(2)
    # A peaked next-id distribution per previous id (Dirichlet 0.1: a few likely successors),
    # so there is something to learn well below the uniform loss ln V.
    next_id_cdf = np.cumsum(task_rng.dirichlet(np.full(V, 0.1), size=V), axis=1)  # (V, V)
    batches = []
    for _ in range(run.steps):
        x = batch_rng.integers(0, V, size=(B, T))  # (B, T)
        u = batch_rng.random(B)  # (B,)
        # Inverse-CDF sampling; the clip guards against the cdf's last entry rounding below 1.
        y = np.minimum((u[:, None] >= next_id_cdf[x[:, -1]]).sum(axis=1), V - 1)  # (B,)
        batches.append((x.astype(np.int64), y.astype(np.int64)))
    return batches


def dropout_mask_shapes(model_config: ModelConfig, batch_size: int) -> dict[str, tuple[int, ...]]:
    """Output shape of every hidden layer: (B, n/g, H) for fusion levels, (B, H) for blocks."""
    shapes, n = {}, model_config.context
    for name, g in zip(hidden_layer_names(model_config), model_config.groups):
        n //= g
        shapes[name] = (batch_size, n, model_config.hidden_dim)
    for name in hidden_layer_names(model_config)[len(model_config.groups) :]:
        shapes[name] = (batch_size, model_config.hidden_dim)
    return shapes


def make_dropout_masks(model_config: ModelConfig, run: TrajectoryConfig) -> list[Masks]:
    """One dict of keep-masks per step (empty dicts when ``model_config.dropout`` is 0).

    Drawn here, not inside either engine, so both sides drop exactly the same units.
    """
    if model_config.dropout == 0:
        return [{} for _ in range(run.steps)]
    rng = np.random.default_rng([run.seed, 1])  # a stream independent of the batches'
    shapes = dropout_mask_shapes(model_config, run.batch_size)
    return [
        {name: make_keep_mask(shape, model_config.dropout, rng) for name, shape in shapes.items()}
        for _ in range(run.steps)
    ]


def make_optimizer(run: TrajectoryConfig, keys) -> SGD | AdamW:
    """The run's optimiser, with biases, norms and the embedding exempt from weight decay."""
    no_decay = no_decay_keys(keys)
    if run.optimizer == "sgd":
        return SGD(lr=run.lr, momentum=run.momentum, weight_decay=run.weight_decay, no_decay=no_decay)
    return AdamW(lr=run.lr, betas=run.betas, weight_decay=run.weight_decay, no_decay=no_decay)


# ----------------------------------------------------------------------------- the loop
def train(
    params: dict[str, np.ndarray],
    model_config: ModelConfig,
    run: TrajectoryConfig,
    batches: list[Batch],
    masks: list[Masks],
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``len(batches)`` optimiser steps of the NumPy NeuralLM from ``params`` (left unchanged).

    Each step: lr from the schedule, forward in training mode with that step's masks, backward,
    clip the gradient norm to ``run.grad_clip`` (when > 0), optimiser step.
    Returns the final parameters (a new dict) and the loss of every step before its update,
    shape (steps,), in the parameters' dtype.
    """
    if len(masks) != len(batches):
        fail("train", f"need one masks dict per batch, got {len(masks)} for {len(batches)} batches")
    params = {k: v.copy() for k, v in params.items()}
    optimizer = make_optimizer(run, params)
    dtype = next(iter(params.values())).dtype
    losses = np.empty(len(batches), dtype=dtype)
    for step, ((x, y), step_masks) in enumerate(zip(batches, masks)):
        optimizer.lr = run.lr_at(step)
        _, loss, cache = neural_lm_forward(params, x, model_config, targets=y, train=True, masks=step_masks)
        grads = neural_lm_backward(cache)
        if run.grad_clip > 0:
            clip_grad_norm(grads, run.grad_clip)
        optimizer.step(params, grads)
        losses[step] = loss
    return params, losses
