"""SGD and AdamW in NumPy, mirroring ``torch.optim`` step for step; plus gradient clipping, the
warmup + cosine learning-rate schedule that training uses, and the exponential moving average of
the weights (``EMA``, the twin of ``torch.optim.swa_utils.AveragedModel`` with
``get_ema_multi_avg_fn``).

Parameters, gradients and optimiser state are dicts keyed like ``state_dict()``.
``optimizer.step(params, grads)`` updates the arrays of ``params`` **in place** and returns None,
as ``torch.optim`` updates its tensors in place: state arrays (momentum, moments) stay tied to
their parameter by key, and a caller who holds ``params`` sees the new values. ``grads`` is
never modified. ``optimizer.lr`` is a settable attribute, so a scheduler can change it between
steps (the twin of ``group["lr"] = ...`` in torch).

Weight decay can be switched off per parameter with ``no_decay`` (a set of keys) — the twin of
torch's two parameter groups ``{"weight_decay": wd}`` and ``{"weight_decay": 0.0}``.

Every line of ``_update`` below is the NumPy twin of one op of torch's single-tensor path
(``torch/optim/sgd.py::_single_tensor_sgd``, ``torch/optim/adam.py::_single_tensor_adam`` with
``decoupled_weight_decay=True``, torch 2.13), in torch's order. Hyperparameters are kept as Python
floats so that NumPy 2 rounds them to the array's dtype exactly where torch's kernels do (a float32
parameter is updated in float32 arithmetic on both sides). What cannot be mirrored is the hardware:
torch's vectorised CPU kernels for ``lerp_``, ``add_(..., alpha=)`` and ``addcmul_`` use fused
multiply-add (one rounding) where NumPy rounds the product and the sum separately, so the two agree
to about one unit in the last place per step rather than bit for bit
(``parity_tests/test_optim.py`` measures it).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping

import numpy as np

from numpy_ref.validation import (
    check_nonnegative_float,
    check_positive_float,
    check_positive_int,
    check_probability,
    fail,
)

Params = dict[str, np.ndarray]


class _Optimizer:
    """What SGD and AdamW share: the learning rate, decoupled per-key weight decay, input checks."""

    def __init__(self, lr: float, weight_decay: float, no_decay: Collection[str]) -> None:
        self.lr = lr
        self.weight_decay = check_nonnegative_float(type(self).__name__, "weight_decay", weight_decay)
        self.no_decay = frozenset(no_decay)
        self.state: dict[str, dict] = {}  # key -> the per-parameter state, named as in torch

    @property
    def lr(self) -> float:
        """The learning rate of the next step; set it between steps to schedule it."""
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = check_nonnegative_float(type(self).__name__, "lr", value)

    def step(self, params: Params, grads: Mapping[str, np.ndarray]) -> None:
        """One optimisation step: update every array of ``params`` in place.

        params: key -> float array (any shape); grads: the same keys, shapes and dtypes.
        """
        self._check_step_inputs(params, grads)
        for key, param in params.items():
            weight_decay = 0.0 if key in self.no_decay else self.weight_decay
            self._update(param, grads[key], weight_decay, self.state.setdefault(key, {}))

    def _update(self, param: np.ndarray, grad: np.ndarray, weight_decay: float, state: dict) -> None:
        raise NotImplementedError

    def _check_step_inputs(self, params: Params, grads: Mapping[str, np.ndarray]) -> None:
        where = f"{type(self).__name__}.step"
        if set(params) != set(grads):
            fail(
                where,
                f"grads must have the keys of params; missing {sorted(set(params) - set(grads))}, "
                f"unexpected {sorted(set(grads) - set(params))}",
            )
        unknown = sorted(self.no_decay - set(params))
        if unknown:
            fail(where, f"no_decay names keys that are not parameters: {unknown}")
        for key, param in params.items():
            grad = grads[key]
            if not (isinstance(param, np.ndarray) and np.issubdtype(param.dtype, np.floating)):
                fail(
                    where,
                    f"params[{key!r}] must be a floating-point ndarray, got {type(param).__name__} "
                    f"of dtype {getattr(param, 'dtype', None)}",
                )
            if not isinstance(grad, np.ndarray) or grad.shape != param.shape or grad.dtype != param.dtype:
                fail(
                    where,
                    f"grads[{key!r}] must match params[{key!r}] (shape {param.shape}, dtype {param.dtype}), "
                    f"got shape {getattr(grad, 'shape', None)}, dtype {getattr(grad, 'dtype', None)}",
                )


class SGD(_Optimizer):
    """Stochastic gradient descent with momentum, dampening, Nesterov and L2 weight decay,
    exactly ``torch.optim.SGD`` (weight decay is added to the gradient, not decoupled)."""

    def __init__(
        self,
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        no_decay: Collection[str] = (),
    ) -> None:
        super().__init__(lr, weight_decay, no_decay)
        self.momentum = check_nonnegative_float("SGD", "momentum", momentum)
        self.dampening = check_nonnegative_float("SGD", "dampening", dampening)
        if nesterov and (self.momentum == 0 or self.dampening != 0):
            fail(
                "SGD",
                f"nesterov requires momentum > 0 and dampening == 0, "
                f"got momentum={momentum!r}, dampening={dampening!r}",
            )
        self.nesterov = bool(nesterov)

    def _update(self, param: np.ndarray, grad: np.ndarray, weight_decay: float, state: dict) -> None:
        if weight_decay != 0:
            grad = grad + weight_decay * param  # a new array: the caller's grad is kept
        if self.momentum != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                # The first buffer is the gradient itself, undamped (torch does the same).
                buf = state["momentum_buffer"] = grad.copy()
            else:
                buf *= self.momentum
                buf += (1 - self.dampening) * grad
            grad = grad + self.momentum * buf if self.nesterov else buf
        param += -self.lr * grad


class AdamW(_Optimizer):
    """Adam with decoupled weight decay (Loshchilov & Hutter), exactly ``torch.optim.AdamW``.

    State per key, named as torch names it: ``step`` (int), ``exp_avg``, ``exp_avg_sq`` and,
    with ``amsgrad``, ``max_exp_avg_sq`` (arrays of the parameter's shape and dtype).
    """

    def __init__(
        self,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        no_decay: Collection[str] = (),
    ) -> None:
        super().__init__(lr, weight_decay, no_decay)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            fail("AdamW", f"betas must be a pair (beta1, beta2), got {betas!r}")
        self.betas = (
            check_probability("AdamW", "betas[0]", betas[0]),
            check_probability("AdamW", "betas[1]", betas[1]),
        )
        self.eps = check_nonnegative_float("AdamW", "eps", eps)
        self.amsgrad = bool(amsgrad)

    def _update(self, param: np.ndarray, grad: np.ndarray, weight_decay: float, state: dict) -> None:
        beta1, beta2 = self.betas
        if not state:
            state.update(step=0, exp_avg=np.zeros_like(param), exp_avg_sq=np.zeros_like(param))
            if self.amsgrad:
                state["max_exp_avg_sq"] = np.zeros_like(param)
        state["step"] += 1
        step, exp_avg, exp_avg_sq = state["step"], state["exp_avg"], state["exp_avg_sq"]

        if weight_decay != 0:
            param *= 1 - self.lr * weight_decay  # decoupled: shrink before the Adam step
        _lerp_(exp_avg, grad, 1 - beta1)  # m = beta1 m + (1 - beta1) g
        exp_avg_sq *= beta2
        exp_avg_sq += (1 - beta2) * grad * grad  # v = beta2 v + (1 - beta2) g^2

        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        step_size = self.lr / bias_correction1
        bias_correction2_sqrt = bias_correction2**0.5
        if self.amsgrad:
            np.maximum(state["max_exp_avg_sq"], exp_avg_sq, out=state["max_exp_avg_sq"])
            second_moment = state["max_exp_avg_sq"]
        else:
            second_moment = exp_avg_sq
        # eps is added after the bias correction of sqrt(v), as torch does (not inside the sqrt).
        denom = np.sqrt(second_moment) / bias_correction2_sqrt + self.eps
        param += -step_size * exp_avg / denom  # torch: param.addcdiv_(m, denom, value=-step_size)


class EMA:
    """Exponential moving average of the weights, exactly ``torch.optim.swa_utils.AveragedModel(model,
    multi_avg_fn=get_ema_multi_avg_fn(decay))`` (``torch_lm.training.step.make_ema``).

    ``update(params)`` after every optimiser step: the first update copies the parameters (the
    average starts at the trained weights, not at zero, so it needs no bias correction), every
    later one moves the average towards them, ``average += (1 - decay) * (param - average)``,
    with torch's lerp formulas (``_lerp_``; torch: ``torch._foreach_lerp_(ema, current, 1 - decay)``).
    ``params`` holds the average, a dict keyed like the parameters (arrays of their shapes and
    dtypes); ``updates`` counts the updates (torch's ``n_averaged``). ``decay`` is in [0, 1):
    0 follows the parameters, 1 would freeze the average at the first copy.
    """

    def __init__(self, decay: float) -> None:
        self.decay = check_probability("EMA", "decay", decay)
        self.params: Params = {}
        self.updates = 0

    def update(self, params: Mapping[str, np.ndarray]) -> None:
        """Fold ``params`` (key -> float array, any shapes) into the average; ``params`` is not modified."""
        self._check_update_inputs(params)
        if self.updates == 0:
            self.params = {key: param.copy() for key, param in params.items()}
        else:
            for key, average in self.params.items():
                _lerp_(average, params[key], 1 - self.decay)
        self.updates += 1

    def _check_update_inputs(self, params: Mapping[str, np.ndarray]) -> None:
        for key, param in params.items():
            if not (isinstance(param, np.ndarray) and np.issubdtype(param.dtype, np.floating)):
                fail(
                    "EMA.update",
                    f"params[{key!r}] must be a floating-point ndarray, got {type(param).__name__} "
                    f"of dtype {getattr(param, 'dtype', None)}",
                )
        if not self.updates:
            return
        if set(params) != set(self.params):
            fail(
                "EMA.update",
                f"params must have the keys of the average; missing {sorted(set(self.params) - set(params))}, "
                f"unexpected {sorted(set(params) - set(self.params))}",
            )
        for key, average in self.params.items():
            if params[key].shape != average.shape or params[key].dtype != average.dtype:
                fail(
                    "EMA.update",
                    f"params[{key!r}] must match the average (shape {average.shape}, dtype {average.dtype}), "
                    f"got shape {params[key].shape}, dtype {params[key].dtype}",
                )


def _lerp_(start: np.ndarray, end: np.ndarray, weight: float) -> None:
    """``start += weight * (end - start)`` in place, with torch's two formulas for accuracy.

    torch's lerp rounds ``weight`` to the array dtype and, for ``|weight| >= 0.5``, interpolates
    from ``end`` instead (``end - (end - start) * (1 - weight)``), which is more accurate there.
    """
    w = start.dtype.type(weight)
    if abs(w) < 0.5:
        start += w * (end - start)
    else:
        start[...] = end - (end - start) * (1 - w)


def clip_grad_norm(grads: Params, max_norm: float) -> float:
    """Scale every gradient in place so that their joint L2 norm is at most ``max_norm``.

    The twin of ``torch.nn.utils.clip_grad_norm_``: the total norm is the norm of the per-array
    norms, the scale is ``min(1, max_norm / (total_norm + 1e-6))`` computed in the gradients'
    dtype, and it is applied even when it is 1 (as torch does). Returns the norm before clipping.
    """
    max_norm = check_positive_float("clip_grad_norm", "max_norm", max_norm)
    if not grads:
        return 0.0
    norms = np.stack([np.linalg.norm(g.ravel()) for g in grads.values()])  # (n_arrays,)
    total_norm = np.linalg.norm(norms)
    coef = min(total_norm.dtype.type(max_norm) / (total_norm + total_norm.dtype.type(1e-6)), 1.0)
    for g in grads.values():
        g *= coef
    return float(total_norm)


WARMUP_SHARE = 10  # a warm-up lasts at most 1/WARMUP_SHARE of the run


def warmup_length(warmup_steps: int, total_steps: int) -> int:
    """The warm-up a run of ``total_steps`` gets: ``warmup_steps``, but at most a tenth of the run.

    A short run (60 steps with the default 200 warm-up steps) would otherwise spend its whole
    length climbing and end having averaged half its learning rate: barely trained. Both engines'
    runs schedule with it (the trainer's ``warmup_cosine`` and ``TrajectoryConfig.lr_at``).
    """
    return min(warmup_steps, total_steps // WARMUP_SHARE)


def warmup_cosine_lr(step: int, max_lr: float, warmup_steps: int, total_steps: int, min_lr: float = 0.0) -> float:
    """Learning rate of step ``step`` (0-based): linear warmup, then cosine decay to ``min_lr``.

    Steps ``0 .. warmup_steps-1`` rise linearly to ``max_lr`` (step 0 already gets
    ``max_lr / warmup_steps``, never 0, so the first step learns); the rest follow half a cosine
    from ``max_lr`` down to ``min_lr`` at ``total_steps``; later steps stay at ``min_lr``.
    Pure Python, so both engines schedule with the same function.
    """
    where = "warmup_cosine_lr"
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        fail(where, f"step must be an integer >= 0, got {step!r}")
    total_steps = check_positive_int(where, "total_steps", total_steps)
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or not 0 <= warmup_steps <= total_steps:
        fail(where, f"warmup_steps must be an integer in [0, total_steps={total_steps}], got {warmup_steps!r}")
    max_lr = check_nonnegative_float(where, "max_lr", max_lr)
    min_lr = check_nonnegative_float(where, "min_lr", min_lr)
    if min_lr > max_lr:
        fail(where, f"min_lr must not exceed max_lr, got min_lr={min_lr!r}, max_lr={max_lr!r}")
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)  # in [0, 1)
    return min_lr + 0.5 * (max_lr - min_lr) * (1 + math.cos(math.pi * progress))


def no_decay_keys(keys: Collection[str]) -> frozenset[str]:
    """The parameter keys that training exempts from weight decay: biases, LayerNorm gains and
    shifts, and the embedding tables, of characters and of pairs (decay would pull rare
    characters' and pairs' vectors to zero)."""
    embeddings = ("embedding.", "pair_embedding.")
    return frozenset(k for k in keys if k.endswith(".bias") or ".norm." in k or k.startswith(embeddings))
