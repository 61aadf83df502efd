"""Elementwise activations ReLU and tanh, with their derivatives (NN exercise 2), and WaveNet's
gated unit tanh(a) * sigmoid(b).

ReLU and tanh keep their input's shape and dtype. The derivative of ReLU at exactly 0 is
defined as 0 (the subgradient torch uses too), so a unit sitting at 0 passes no gradient. The
gated unit ("gated") halves the last axis: its input's first half is the filter a, the second
the gate b, and (..., 2H) -> (..., H).
"""

from __future__ import annotations

import numpy as np

from numpy_ref.config import ACTIVATIONS
from numpy_ref.validation import check_even_last_axis, check_float_dtype, check_same_shape, fail


def relu_forward(x: np.ndarray):
    """``out = max(x, 0)``; x (...) float -> out (...). The cache is x."""
    _check_float("relu_forward", "x", x)
    return np.maximum(x, 0), x  # a NaN propagates, as in F.relu


def relu_backward(dout: np.ndarray, cache: np.ndarray) -> np.ndarray:
    """dx = dout * 1[x > 0]; dout and the cached x have the same shape (...)."""
    x = cache
    _check_upstream("relu_backward", dout, x)
    # Multiplying by the boolean mask gives the same numbers, in the same dtype, as by
    # relu_derivative(x) (True and False act as 1 and 0) without a float copy of the mask.
    return np.multiply(dout, x > 0, dtype=np.result_type(dout, x))


def relu_derivative(x: np.ndarray) -> np.ndarray:
    """1 where x > 0, else 0 (including x == 0), in x's dtype."""
    _check_float("relu_derivative", "x", x)
    return (x > 0).astype(x.dtype)


def tanh_forward(x: np.ndarray):
    """``out = tanh(x)``; x (...) float -> out (...). The cache is out, all backward needs."""
    _check_float("tanh_forward", "x", x)
    out = np.tanh(x)
    return out, out


def tanh_backward(dout: np.ndarray, cache: np.ndarray) -> np.ndarray:
    """dx = dout * (1 - tanh(x)²), using the cached output instead of recomputing tanh."""
    out = cache
    _check_upstream("tanh_backward", dout, out)
    # dout * (1 - out * out) in one buffer: every temporary of a hidden layer's size is a fresh
    # allocation, and a large fresh array costs page faults, many times the arithmetic (timed in
    # reports/BENCH.md, "Implementation choices, measured"). Same operations, same numbers.
    dx = np.asarray(out * out)  # a new array, 0-d included
    np.subtract(1, dx, out=dx)
    return np.multiply(dx, dout, out=dx) if dx.dtype == dout.dtype else dx * dout


def tanh_derivative(x: np.ndarray) -> np.ndarray:
    """``1 - tanh(x)²``, in x's dtype."""
    _check_float("tanh_derivative", "x", x)
    t = np.tanh(x)
    return 1 - t * t


def gated_tanh_forward(x: np.ndarray):
    """``out = tanh(a) * sigmoid(b)`` with a = x[..., :H], b = x[..., H:]: x (..., 2H) -> out (..., H).

    The cache is (tanh(a), sigmoid(b)), all backward needs.
    """
    where = "gated_tanh_forward"
    _check_float(where, "x", x)
    check_even_last_axis(where, "x", x.shape)
    h = x.shape[-1] // 2
    t = np.tanh(x[..., :h])  # (..., H) filter
    s = _sigmoid(x[..., h:])  # (..., H) gate
    return t * s, (t, s)


def gated_tanh_backward(dout: np.ndarray, cache) -> np.ndarray:
    """dx = [dout * s * (1 - t²), dout * t * s * (1 - s)]: the filter's half, then the gate's.

    dout (..., H) -> dx (..., 2H), with t = tanh(a), s = sigmoid(b) from the cache; each half is
    differentiated through its own nonlinearity (tanh' of the filter, sigmoid' of the gate).
    """
    t, s = cache
    where = "gated_tanh_backward"
    _check_float(where, "dout", dout)
    check_same_shape(where, "dout", dout.shape, "the forward output", t.shape)
    h = t.shape[-1]
    dx = np.empty(t.shape[:-1] + (2 * h,), np.result_type(dout, t))  # (..., 2H)
    ds = dout * s
    dx[..., :h] = ds * (1 - t * t)  # d/da: the gate scales the filter's tanh slope
    dx[..., h:] = ds * t * (1 - s)  # d/db: tanh(a) * sigmoid'(b), sigmoid' = s (1 - s)
    return dx


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-x))`` without overflow: exp of -|x| only, in x's dtype."""
    e = np.exp(-np.abs(x))  # in (0, 1]
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


_FORWARD = {"relu": relu_forward, "tanh": tanh_forward, "gated": gated_tanh_forward}
_BACKWARD = {"relu": relu_backward, "tanh": tanh_backward, "gated": gated_tanh_backward}


def activation_forward(name: str, x: np.ndarray):
    """``<name>_forward(x)`` for name in ``ACTIVATIONS`` ("tanh", "relu"; "gated": ``gated_tanh_forward``)."""
    _check_name("activation_forward", name)
    return _FORWARD[name](x)


def activation_backward(name: str, dout: np.ndarray, cache) -> np.ndarray:
    """``<name>_backward(dout, cache)``, the cache coming from ``activation_forward(name, ...)``."""
    _check_name("activation_backward", name)
    return _BACKWARD[name](dout, cache)


def _check_name(where: str, name: str) -> None:
    if name not in ACTIVATIONS:
        fail(where, f"name must be one of {ACTIVATIONS}, got {name!r}")


def _check_float(where: str, name: str, array: np.ndarray) -> None:
    check_float_dtype(where, name, np.issubdtype(array.dtype, np.floating), array.dtype)


def _check_upstream(where: str, dout: np.ndarray, cached: np.ndarray) -> None:
    _check_float(where, "dout", dout)
    check_same_shape(where, "dout", dout.shape, "x", cached.shape)
