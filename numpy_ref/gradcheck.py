"""Numerical gradients by central differences, and the relative error used to compare them.

Every hand-written backward pass in ``numpy_ref`` is checked against these (docs/DESIGN.md §2):

    f'(x) ≈ (f(x + h) - f(x - h)) / (2h)        error O(h²) from truncation, O(eps·|f| / h) from rounding

Use float64: with float32 the rounding term alone is ~1e-7·|f| / h, so h = 1e-6 gives noise.
The torch side needs no twin; its tests call ``torch.autograd.gradcheck``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from numpy_ref.validation import check_float_dtype, check_positive_float, check_same_shape, fail

# Below this size two gradients are both "zero": the floor keeps rel_error(0, 0) at 0, not 0/0.
_ZERO_SCALE = 1e-8


def rel_error(a, b) -> float:
    """Largest elementwise relative error ``|a - b| / max(1e-8, |a| + |b|)`` (cs231n style).

    a, b: arrays (or scalars) of the same shape. Returns a Python float; 0.0 for empty arrays.
    Elementwise, so a small gradient entry is held to the same relative standard as a large one.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    check_same_shape("rel_error", "a", a.shape, "b", b.shape)
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b) / np.maximum(_ZERO_SCALE, np.abs(a) + np.abs(b))))


def numerical_gradient(f: Callable[[np.ndarray], float], x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Gradient of a scalar function ``f`` at ``x`` by central differences.

    x: float array of any shape; it is perturbed in place, one entry at a time, and restored
    (even if ``f`` raises), so ``f`` may close over ``x``. Returns an array shaped like ``x``.
    """

    def difference(f_plus, f_minus) -> float:
        for value, sign in ((f_plus, "+"), (f_minus, "-")):
            if np.ndim(value) != 0:
                fail("numerical_gradient", f"f must return a scalar, got shape {np.shape(value)} at x {sign} h")
        return float(f_plus) - float(f_minus)

    return _central_differences("numerical_gradient", f, x, h, difference)


def numerical_gradient_array(
    f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, dout: np.ndarray, h: float = 1e-6
) -> np.ndarray:
    """Gradient of ``sum(f(x) * dout)`` with respect to ``x`` by central differences.

    This is what a backward pass returns for upstream gradient ``dout``. x: float array,
    perturbed in place and restored; f(x) must have ``dout``'s shape. Returns an array shaped
    like ``x``. The outputs are differenced before they are weighted and summed, so rounding
    noise comes only from the outputs that the perturbed entry actually moves.
    """

    def difference(out_plus, out_minus) -> float:
        for value, sign in ((out_plus, "+"), (out_minus, "-")):
            check_same_shape("numerical_gradient_array", f"f(x {sign} h)", np.shape(value), "dout", dout.shape)
        return float(np.sum((out_plus - out_minus) * dout))

    return _central_differences("numerical_gradient_array", f, x, h, difference)


def _central_differences(where: str, f, x: np.ndarray, h: float, difference) -> np.ndarray:
    """Shared loop: ``grad[i] = difference(f(x + h e_i), f(x - h e_i)) / 2h`` for every index i."""
    check_float_dtype(
        where,
        "x",
        isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.floating),
        getattr(x, "dtype", type(x).__name__),
    )
    h = check_positive_float(where, "h", h)
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        original = x[index]
        try:
            x[index] = original + h
            # Copy: f may return a view of x, which the next perturbation would overwrite.
            plus = np.array(f(x), copy=True)
            x[index] = original - h
            minus = np.array(f(x), copy=True)
        finally:
            x[index] = original
        grad[index] = difference(plus, minus) / (2 * h)
    return grad
