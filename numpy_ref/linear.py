"""Affine layer ``out = x @ w.T + b`` and its gradients (NN exercises 1 and 5).

Weights use torch's layout, ``w`` is ``(out_features, in_features)``, so these arrays load
straight into ``torch_lm.linear.Linear``. For a single example the exercise's notation
``z = W x + b`` and ``dW = outer(dz, x)`` is the 1-D case of the functions below.

Any number of leading batch dimensions is allowed: ``x (..., D_in) -> out (..., D_out)``.
"""

from __future__ import annotations

import numpy as np

from numpy_ref.validation import (
    check_dim_matches,
    check_float_dtype,
    check_ndim,
    check_nonempty_last_axis,
    check_same_dtype,
    check_same_shape,
)


def linear_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None):
    """Compute ``out = x @ w.T + b``.

    x: (..., D_in) float; w: (D_out, D_in), same dtype; b: (D_out,) or None for no bias.
    Returns ``out`` (..., D_out) in x's dtype, and the cache ``(x, w, has_bias)`` for backward.
    """
    _check_inputs(x, w, b)
    # One (N, D_in) @ (D_in, D_out) product over all N rows: ``x @ w.T`` on a 3-D x such as the
    # NeuralLM's (B, 1, D_in) would be B separate (1, D_in) products, several times slower.
    out = _rows(x) @ w.T  # (N, D_in) @ (D_in, D_out) -> (N, D_out), a fresh array
    if b is not None:
        out += b  # in place (out is ours): b broadcasts over the rows
    return out.reshape(x.shape[:-1] + (w.shape[0],)), (x, w, b is not None)  # (..., D_out)


def linear_backward(dout: np.ndarray, cache):
    """Gradients of the loss with respect to x, w and b, given ``dout = dloss/dout``.

    dout: (..., D_out), the shape ``linear_forward`` returned. Returns ``(dx, dw, db)``:
    dx (..., D_in), dw (D_out, D_in), db (D_out,) or None when the forward had no bias.

    With every leading dimension flattened into one batch axis of N rows,
    ``out[n] = w @ x[n] + b`` gives ``dx[n] = w.T @ dout[n]``, ``dw = sum_n outer(dout[n], x[n])``
    and ``db = sum_n dout[n]``: the parameters are shared by all rows, so their gradients add up.
    """
    x, w, has_bias = cache
    d_out, d_in = w.shape
    check_same_shape("linear_backward", "dout", dout.shape, "out", x.shape[:-1] + (d_out,))
    check_same_dtype("linear_backward", "dout", dout.dtype, "x", x.dtype)
    dout_rows = _rows(dout)  # (N, D_out)
    dx = (dout_rows @ w).reshape(x.shape)  # (N, D_out) @ (D_out, D_in) -> (N, D_in) -> (..., D_in)
    dw = dout_rows.T @ _rows(x)  # (D_out, N) @ (N, D_in) -> (D_out, D_in): the sum of outer products
    db = dout_rows.sum(axis=0) if has_bias else None  # (D_out,)
    return dx, dw, db


def _rows(a: np.ndarray) -> np.ndarray:
    """(..., D) -> (N, D), every leading dimension flattened into rows (a view when it can be)."""
    return a.reshape(-1, a.shape[-1])


def _check_inputs(x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> None:
    """Raise ValueError for non-float arrays, wrong ndim, mismatched sizes or mixed dtypes."""
    where = "linear_forward"
    check_float_dtype(where, "x", np.issubdtype(x.dtype, np.floating), x.dtype)
    check_float_dtype(where, "w", np.issubdtype(w.dtype, np.floating), w.dtype)
    check_nonempty_last_axis(where, "x", x.shape)
    check_ndim(where, "w", w.shape, [2])
    check_dim_matches(where, "x", x.shape, -1, "w", w.shape, 1)
    check_same_dtype(where, "x", x.dtype, "w", w.dtype)
    if b is not None:
        check_ndim(where, "b", b.shape, [1])
        check_dim_matches(where, "b", b.shape, 0, "w", w.shape, 0)
        check_same_dtype(where, "b", b.dtype, "w", w.dtype)
