"""Elementwise activations ReLU and tanh, with their derivatives (NN exercise 2).

Every function keeps its input's shape and dtype. The derivative of ReLU at exactly 0 is
defined as 0 (the subgradient torch uses too), so a unit sitting at 0 passes no gradient.
"""

from __future__ import annotations

import numpy as np

from numpy_ref.config import ACTIVATIONS
from numpy_ref.validation import check_float_dtype, check_same_shape, fail


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


_FORWARD = {"relu": relu_forward, "tanh": tanh_forward}
_BACKWARD = {"relu": relu_backward, "tanh": tanh_backward}


def activation_forward(name: str, x: np.ndarray):
    """``<name>_forward(x)`` for name in ``ACTIVATIONS`` ("tanh", "relu")."""
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
