"""The NumPy training step of the NeuralLM, the loop of a trajectory-parity run, and the inputs
both engines share.

Trajectory parity asks more than per-component parity: that a whole training run (forward,
hand-written backward, gradient clipping, optimiser, learning-rate schedule, repeated N times)
follows the same path as the trainer's run started from the same parameters on the same batches.
``train_step`` is the one NumPy step (the benchmark's NumPy engine takes it too): window rows
(``y`` (B,)) or sequence rows (``y`` (B, P), every position of a row scored at once), dropout from
the given keep-masks, the global gradient norm clipped, one optimiser step. The loop (``train``)
also keeps the exponential moving average of the weights when the run asks for one (``EMA``).

What both sides must share is drawn here, from a seed: the text (``synthetic_ids``, a random
first-order chain over the vocabulary, so a run needs no data file and the loss really falls),
the dropout keep-masks of every step, and the run's hyperparameters (``TrajectoryConfig``). The
batches are drawn from the text by the trainer's own sampler on the torch side and handed to both.

Twin: ``torch_lm/training/trajectory.py`` (the trainer's step on the same inputs, and the
comparison); proof: ``parity_tests/test_trajectory.py``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from numpy_ref.config import ModelConfig
from numpy_ref.dropout import make_keep_mask
from numpy_ref.neural_lm import (
    hidden_layer_names,
    neural_lm_backward,
    neural_lm_forward,
    neural_lm_sequence_backward,
    neural_lm_sequence_forward,
)
from numpy_ref.optim import EMA, SGD, AdamW, clip_grad_norm, no_decay_keys, warmup_cosine_lr, warmup_length
from numpy_ref.validation import (
    check_nonnegative_float,
    check_positive_float,
    check_positive_int,
    check_probability,
    fail,
)

OPTIMIZERS = ("adamw", "sgd")
# Window rows x (B, T), y (B,); or sequence rows x (B, T + P - 1), y (B, P): int64 ids.
Batch = tuple[np.ndarray, np.ndarray]
Masks = dict[str, np.ndarray]  # hidden layer name -> bool keep-mask of its output shape


@dataclass(frozen=True)
class TrajectoryConfig:
    """Hyperparameters of one parity run (the optimiser's and the schedule's, not the model's).

    ``lr`` is the peak of the warmup + cosine schedule, which ends at ``min_lr`` after ``steps``;
    the warm-up lasts ``warmup_length(warmup_steps, steps)`` steps, as in the trainer.
    ``momentum`` is used by SGD only, ``betas`` by AdamW only. ``grad_clip`` 0 means no clipping.
    ``targets_per_row`` 1 gives window rows, more gives sequence rows. ``ema_decay`` 0 keeps no
    average of the weights, else the decay of the EMA updated after every step. The defaults are a short,
    fast run for the tests; the command's default run takes the trainer's recipe instead.
    """

    optimizer: str = "adamw"
    steps: int = 200
    batch_size: int = 32
    targets_per_row: int = 1
    lr: float = 1e-2
    min_lr: float = 1e-3
    warmup_steps: int = 10
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.99)
    momentum: float = 0.9
    grad_clip: float = 1.0
    seed: int = 0
    ema_decay: float = 0.0

    def __post_init__(self) -> None:
        where = "TrajectoryConfig"
        if self.optimizer not in OPTIMIZERS:
            fail(where, f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        check_positive_int(where, "steps", self.steps)
        check_positive_int(where, "batch_size", self.batch_size)
        check_positive_int(where, "targets_per_row", self.targets_per_row)
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
        check_probability(where, "ema_decay", self.ema_decay)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            fail(where, f"seed must be an integer >= 0, got {self.seed!r}")

    def lr_at(self, step: int) -> float:
        """The learning rate of step ``step`` (0-based): warmup to ``lr``, cosine to ``min_lr``."""
        return warmup_cosine_lr(step, self.lr, warmup_length(self.warmup_steps, self.steps), self.steps, self.min_lr)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d


# ----------------------------------------------------------------------------- shared inputs
def synthetic_ids(vocab_size: int, length: int, seed: int) -> np.ndarray:
    """``length`` ids (int64) of a random first-order chain over ``vocab_size`` ids, from ``seed``.

    Every id has a peaked distribution of successors (Dirichlet 0.1: a few likely ones), so there
    is something to learn well below the uniform loss ln V, as in a text.
    """
    check_positive_int("synthetic_ids", "vocab_size", vocab_size)
    check_positive_int("synthetic_ids", "length", length)
    task_rng, walk_rng = np.random.default_rng(seed).spawn(2)
    next_id_cdf = np.cumsum(task_rng.dirichlet(np.full(vocab_size, 0.1), size=vocab_size), axis=1)  # (V, V)
    uniforms = walk_rng.random(length)
    ids = np.empty(length, dtype=np.int64)
    ids[0] = walk_rng.integers(vocab_size)
    for i in range(1, length):
        # Inverse-CDF draw; the clip guards against the cdf's last entry rounding below 1.
        ids[i] = min(int(np.searchsorted(next_id_cdf[ids[i - 1]], uniforms[i], side="right")), vocab_size - 1)
    return ids


def dropout_mask_shapes(model_config: ModelConfig, batch_size: int, targets_per_row: int = 1) -> dict[str, tuple]:
    """Output shape of every hidden layer, the shape of its keep-mask.

    Window rows: (B, n/g, H) for fusion level i (n the vectors left), (B, H) for a block. Sequence
    rows of P targets: (B, L_i, H) for level i, whose input of length L is shortened by
    (g - 1) x its dilation (a causal dilated convolution), and (B, P, H) for a block.
    """
    H, names = model_config.hidden_dim, hidden_layer_names(model_config)
    levels, blocks = names[: len(model_config.groups)], names[len(model_config.groups) :]
    shapes, n, dilation = {}, model_config.context + targets_per_row - 1, 1
    for name, g in zip(levels, model_config.groups):
        if targets_per_row == 1:
            n //= g
        else:
            n -= (g - 1) * dilation
            dilation *= g
        shapes[name] = (batch_size, n, H)
    row = (batch_size,) if targets_per_row == 1 else (batch_size, targets_per_row)
    return shapes | {name: (*row, H) for name in blocks}


def make_dropout_masks(model_config: ModelConfig, run: TrajectoryConfig) -> list[Masks]:
    """One dict of keep-masks per step (empty dicts when ``model_config.dropout`` is 0).

    Drawn here, not inside either engine, so both sides drop exactly the same units.
    """
    if model_config.dropout == 0:
        return [{} for _ in range(run.steps)]
    rng = np.random.default_rng([run.seed, 1])  # a stream independent of the text's
    shapes = dropout_mask_shapes(model_config, run.batch_size, run.targets_per_row)
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


# ----------------------------------------------------------------------------- the step and the loop
def train_step(
    params: dict[str, np.ndarray],
    optimizer: SGD | AdamW,
    model_config: ModelConfig,
    x: np.ndarray,
    y: np.ndarray,
    lr: float,
    grad_clip: float,
    masks: Masks | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """One training step of the NumPy NeuralLM on a batch, updating ``params`` in place.

    x, y: window rows (B, T), (B,) or sequence rows (B, T + P - 1), (B, P). In training mode with
    dropout from ``masks`` (by layer name) where given, else from ``rng``; the gradient's global
    norm clipped to ``grad_clip`` (when > 0); then ``optimizer.step`` at learning rate ``lr``.
    Returns the batch's mean loss before the update (0-d, the parameters' dtype).
    """
    sequence = np.ndim(y) == 2
    forward = neural_lm_sequence_forward if sequence else neural_lm_forward
    backward = neural_lm_sequence_backward if sequence else neural_lm_backward
    _, loss, cache = forward(params, x, model_config, targets=y, train=True, rng=rng, masks=masks)
    grads = backward(cache)
    if grad_clip > 0:
        clip_grad_norm(grads, grad_clip)
    optimizer.lr = lr
    optimizer.step(params, grads)
    return loss


def train(
    params: dict[str, np.ndarray],
    model_config: ModelConfig,
    run: TrajectoryConfig,
    batches: list[Batch],
    masks: list[Masks],
) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, np.ndarray] | None]:
    """``len(batches)`` steps of ``train_step`` from ``params`` (left unchanged), with the run's
    optimiser, schedule and clipping and the given keep-masks; with ``run.ema_decay``, the EMA of
    the weights updated after every step.

    Returns the final parameters (a new dict), the loss of every step before its update, shape
    (steps,), in the parameters' dtype, and the final EMA of the parameters (keyed and shaped like
    them; None without one).
    """
    if len(masks) != len(batches):
        fail("train", f"need one masks dict per batch, got {len(masks)} for {len(batches)} batches")
    params = {k: v.copy() for k, v in params.items()}
    optimizer = make_optimizer(run, params)
    ema = EMA(run.ema_decay) if run.ema_decay else None
    dtype = next(iter(params.values())).dtype
    losses = np.empty(len(batches), dtype=dtype)
    for step, ((x, y), step_masks) in enumerate(zip(batches, masks)):
        losses[step] = train_step(params, optimizer, model_config, x, y, run.lr_at(step), run.grad_clip, step_masks)
        if ema is not None:
            ema.update(params)
    return params, losses, None if ema is None else ema.params
