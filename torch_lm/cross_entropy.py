"""Stable softmax and log-softmax with temperature, and softmax cross-entropy (PyTorch).

The math is written out (subtract the row maximum, log-sum-exp by hand) rather than calling
``F.softmax`` / ``F.cross_entropy``: those are the third witness in the parity tests.
Autograd supplies the gradients. Everything works over the last axis.

Twin: ``numpy_ref/cross_entropy.py`` (module docstring explains stability and temperature);
proof: ``parity_tests/test_cross_entropy.py``.
"""

from __future__ import annotations

import torch
from torch import nn

from numpy_ref.validation import (
    check_dim_matches,
    check_float_dtype,
    check_integer_dtype,
    check_ndim,
    check_nonempty_last_axis,
    check_positive_float,
    fail,
)
from torch_lm._checks import check_ids_in_range, is_integer_dtype


def _shifted_scaled_logits(where: str, x: torch.Tensor, temperature: float) -> torch.Tensor:
    """Validate ``x`` and ``temperature``; return ``z - max(z)`` with ``z = x / T``.

    x (..., V) float -> (..., V), every entry <= 0 and each row's maximum exactly 0.
    """
    check_float_dtype(where, "x", x.is_floating_point(), x.dtype)
    check_nonempty_last_axis(where, "x", x.shape)
    t = check_positive_float(where, "temperature", temperature)
    z = x if t == 1.0 else x / t  # x / 1 == x exactly: skip a pass (and its backward) per call
    # Softmax is invariant to a per-row shift, so the maximum is a constant of the row: detached,
    # no gradient flows through the argmax (its contribution would cancel exactly anyway).
    return z - z.amax(dim=-1, keepdim=True).detach()


def softmax(x: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``softmax(x / T)`` over the last axis. x (..., V) float -> (..., V), rows summing to 1."""
    e = _shifted_scaled_logits("softmax", x, temperature).exp()
    return e / e.sum(dim=-1, keepdim=True)


def log_softmax(x: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``log softmax(x / T)`` over the last axis by log-sum-exp. x (..., V) float -> (..., V)."""
    shifted = _shifted_scaled_logits("log_softmax", x, temperature)
    return shifted - shifted.exp().sum(dim=-1, keepdim=True).log()


def _check_cross_entropy_args(logits: torch.Tensor, targets: torch.Tensor) -> None:
    """The same checks, in the same order, as ``numpy_ref.cross_entropy.cross_entropy``."""
    where = "cross_entropy"
    check_float_dtype(where, "logits", logits.is_floating_point(), logits.dtype)
    check_ndim(where, "logits", logits.shape, [2])
    if logits.shape[0] == 0 or logits.shape[1] == 0:
        fail(where, f"logits must have at least one row and one class, got shape {tuple(logits.shape)}")
    check_integer_dtype(where, "targets", is_integer_dtype(targets.dtype), targets.dtype)
    check_ndim(where, "targets", targets.shape, [1])
    check_dim_matches(where, "targets", targets.shape, 0, "logits", logits.shape, 0)
    check_ids_in_range(where, "targets", targets, logits.shape[1])


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean softmax cross-entropy ``-mean_n log softmax(logits[n])[targets[n]]``.

    logits (N, V) float, targets (N,) integers in [0, V) -> 0-d tensor of logits' dtype,
    the same value as ``F.cross_entropy(logits, targets)``.
    """
    _check_cross_entropy_args(logits, targets)
    # -log_softmax(logits)[n, t] = logsumexp(shifted[n]) - shifted[n, t]: the same numbers as
    # gathering from the full log-softmax (IEEE negation and subtraction are exact mirrors),
    # without materialising (and differentiating) the (N, V) log-probabilities.
    shifted = _shifted_scaled_logits("cross_entropy", logits, 1.0)  # (N, V)
    log_sum_exp = shifted.exp().sum(dim=-1).log()  # (N,)
    picked = shifted.gather(1, targets.long().unsqueeze(1)).squeeze(1)  # (N, 1) -> (N,)
    return (log_sum_exp - picked).mean()  # (N,) -> ()


class CrossEntropyLoss(nn.Module):
    """Module form of ``cross_entropy`` (mean reduction): forward(logits (N, V), targets (N,)) -> ()."""

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return cross_entropy(logits, targets)
