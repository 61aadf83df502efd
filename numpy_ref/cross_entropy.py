"""Stable softmax and log-softmax with temperature, and softmax cross-entropy (NumPy reference).

Everything works over the last axis and computes in the input's dtype (float32 stays float32).

Stability: softmax is unchanged by subtracting a constant from a row, so every function first
subtracts the row maximum. The largest exponent is then exp(0) = 1 and nothing overflows, and
log-softmax is ``shifted - log(sum(exp(shifted)))`` (log-sum-exp), so it stays finite for logits
of +-1000, where exp(1000) is inf and a naive ``log(softmax)`` gives log(0) = -inf.

Temperature T divides the logits: ``softmax(x / T)``; T < 1 sharpens the distribution, T > 1
flattens it. By the chain rule every gradient with respect to x carries a factor 1/T.

Twin: ``torch_lm/cross_entropy.py``; proof: ``parity_tests/test_cross_entropy.py``.
"""

from __future__ import annotations

import numpy as np

from numpy_ref.validation import (
    check_dim_matches,
    check_float_dtype,
    check_index_range,
    check_integer_dtype,
    check_ndim,
    check_nonempty_last_axis,
    check_positive_float,
    check_same_shape,
    fail,
)


def _shifted_scaled_logits(where: str, x, temperature) -> tuple[np.ndarray, float]:
    """Validate ``x`` and ``temperature``; return ``(z - max(z), T)`` with ``z = x / T``.

    x (..., V) float -> shifted (..., V), every entry <= 0 and each row's maximum exactly 0.
    """
    x = np.asarray(x)
    check_float_dtype(where, "x", np.issubdtype(x.dtype, np.floating), x.dtype)
    check_nonempty_last_axis(where, "x", x.shape)
    t = check_positive_float(where, "temperature", temperature)
    # x / 1 == x exactly, so skip that pass. A Python float is "weak" (NEP 50): float32 / t stays float32.
    z = x if t == 1.0 else x / t
    return z - z.max(axis=-1, keepdims=True), t


def softmax_forward(x, temperature: float = 1.0) -> tuple[np.ndarray, tuple]:
    """``p = softmax(x / T)`` over the last axis.

    x (..., V) float -> p (..., V), same dtype, rows summing to 1; cache for ``softmax_backward``.
    """
    shifted, t = _shifted_scaled_logits("softmax_forward", x, temperature)
    p = np.exp(shifted, out=shifted)  # in place: shifted is a fresh array of ours
    p /= p.sum(axis=-1, keepdims=True)
    return p, (p, t)


def softmax_backward(dp: np.ndarray, cache: tuple) -> np.ndarray:
    """Gradient of softmax: dp (..., V) -> dx (..., V).

    The Jacobian is dp_i/dz_j = p_i (delta_ij - p_j), so the vector-Jacobian product is
    ``p * (dp - sum(dp * p))`` without ever forming the V x V matrix; then 1/T for z = x / T.
    """
    p, t = cache
    check_same_shape("softmax_backward", "dp", np.shape(dp), "the softmax output", p.shape)
    dz = p * (dp - (dp * p).sum(axis=-1, keepdims=True))
    return dz / t


def log_softmax_forward(x, temperature: float = 1.0) -> tuple[np.ndarray, tuple]:
    """``log softmax(x / T)`` over the last axis, by log-sum-exp.

    x (..., V) float -> lp (..., V), same dtype, every entry <= 0; cache for ``log_softmax_backward``.
    """
    shifted, t = _shifted_scaled_logits("log_softmax_forward", x, temperature)
    lp = shifted  # in place: shifted is a fresh array of ours
    lp -= np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return lp, (lp, t)


def log_softmax_backward(dlp: np.ndarray, cache: tuple) -> np.ndarray:
    """Gradient of log-softmax: dlp (..., V) -> dx (..., V).

    lp_i = z_i - logsumexp(z) gives d lp_i / dz_j = delta_ij - p_j, so
    ``dz = dlp - p * sum(dlp)``; then 1/T for z = x / T.
    """
    lp, t = cache
    check_same_shape("log_softmax_backward", "dlp", np.shape(dlp), "the log-softmax output", lp.shape)
    dz = dlp - np.exp(lp) * dlp.sum(axis=-1, keepdims=True)
    return dz / t


def softmax(x, temperature: float = 1.0) -> np.ndarray:
    """``softmax(x / T)`` over the last axis, without a cache. x (..., V) -> (..., V)."""
    return softmax_forward(x, temperature)[0]


def log_softmax(x, temperature: float = 1.0) -> np.ndarray:
    """``log softmax(x / T)`` over the last axis, without a cache. x (..., V) -> (..., V)."""
    return log_softmax_forward(x, temperature)[0]


def _check_cross_entropy_args(logits: np.ndarray, targets: np.ndarray) -> None:
    """The same checks, in the same order, as ``torch_lm.cross_entropy.cross_entropy``."""
    where = "cross_entropy"
    check_float_dtype(where, "logits", np.issubdtype(logits.dtype, np.floating), logits.dtype)
    check_ndim(where, "logits", logits.shape, [2])
    if logits.shape[0] == 0 or logits.shape[1] == 0:
        fail(where, f"logits must have at least one row and one class, got shape {logits.shape}")
    check_integer_dtype(where, "targets", np.issubdtype(targets.dtype, np.integer), targets.dtype)
    check_ndim(where, "targets", targets.shape, [1])
    check_dim_matches(where, "targets", targets.shape, 0, "logits", logits.shape, 0)
    check_index_range(where, "targets", int(targets.min()), int(targets.max()), logits.shape[1])


def cross_entropy(logits, targets) -> tuple[np.ndarray, np.ndarray]:
    """Mean softmax cross-entropy ``-mean_n log softmax(logits[n])[targets[n]]`` and its gradient.

    logits (N, V) float, targets (N,) integers in [0, V).
    Returns ``(loss, dlogits)``: loss is a 0-d array of logits' dtype (like ``F.cross_entropy``
    with the default mean reduction), dlogits (N, V) = (softmax(logits) - onehot(targets)) / N.
    """
    logits, targets = np.asarray(logits), np.asarray(targets)
    _check_cross_entropy_args(logits, targets)
    n = logits.shape[0]
    rows = np.arange(n)
    lp, _ = log_softmax_forward(logits)  # (N, V)
    loss = np.asarray(-lp[rows, targets].mean())  # (N,) -> 0-d
    # d loss / d logits[n] = (p[n] - onehot(targets[n])) / N: log_softmax_backward applied to
    # dlp = -onehot / N, in closed form; the 1/N is the mean reduction.
    dlogits = np.exp(lp)
    dlogits[rows, targets] -= 1
    dlogits /= n
    return loss, dlogits
