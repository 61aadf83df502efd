"""Layer normalisation over the last axis (NumPy reference).

    y = (x - mean(x)) / sqrt(var(x) + eps) * gamma + beta

with the biased variance (divide by D, as ``nn.LayerNorm`` does) and eps inside the square
root, so a constant row (variance 0) gives x_hat = 0, y = beta and a finite gradient.
Computes in the input's dtype.

Twin: ``torch_lm/layernorm.py``; proof: ``parity_tests/test_layernorm.py``.
"""

from __future__ import annotations

import numpy as np

from numpy_ref.validation import (
    check_float_dtype,
    check_nonempty_last_axis,
    check_positive_float,
    check_same_shape,
)


def layernorm_forward(x, gamma, beta, eps: float = 1e-5) -> tuple[np.ndarray, tuple]:
    """Normalise every row of ``x`` over its last axis, then scale by gamma and shift by beta.

    x (..., D) float, gamma (D,), beta (D,) -> out (..., D); cache for ``layernorm_backward``.
    """
    where = "layernorm_forward"
    x, gamma, beta = np.asarray(x), np.asarray(gamma), np.asarray(beta)
    check_float_dtype(where, "x", np.issubdtype(x.dtype, np.floating), x.dtype)
    check_nonempty_last_axis(where, "x", x.shape)
    check_same_shape(where, "gamma", gamma.shape, "x.shape[-1:]", x.shape[-1:])
    check_same_shape(where, "beta", beta.shape, "x.shape[-1:]", x.shape[-1:])
    eps = check_positive_float(where, "eps", eps)

    mean = x.mean(axis=-1, keepdims=True)  # (..., 1)
    centred = x - mean
    var = (centred * centred).mean(axis=-1, keepdims=True)  # (..., 1), biased (/ D)
    inv_std = 1 / np.sqrt(var + eps)  # (..., 1)
    x_hat = centred  # reuse the buffer:
    x_hat *= inv_std  # every temporary costs a fresh array
    out = x_hat * gamma + beta
    return out, (x_hat, inv_std, gamma)


def layernorm_backward(dout: np.ndarray, cache: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of ``layernorm_forward``: dout (..., D) -> dx (..., D), dgamma (D,), dbeta (D,).

    With g = dout * gamma (the gradient with respect to x_hat) and sigma = sqrt(var + eps):

        dx = (1 / sigma) * (g - mean(g) - x_hat * mean(g * x_hat))      (means over the last axis)

    Why: x_hat_j = (x_j - mu) / sigma, with d mu / d x_i = 1/D and d sigma / d x_i = x_hat_i / D
    (because d var / d x_i = 2 (x_i - mu) / D), so

        d x_hat_j / d x_i = (1 / sigma) * (delta_ij - 1/D - x_hat_i * x_hat_j / D).

    Summing g_j times this over j gives the three terms: g_i, minus the mean of g (the gradient
    through the mean), minus x_hat_i * mean(g * x_hat) (the gradient through the variance).
    eps only enters through sigma, so the form is exact with eps too, and a constant row
    (x_hat = 0) gets the finite dx = (g - mean(g)) / sqrt(eps).
    """
    x_hat, inv_std, gamma = cache
    check_same_shape("layernorm_backward", "dout", np.shape(dout), "the forward output", x_hat.shape)
    d = x_hat.shape[-1]
    dbeta = dout.reshape(-1, d).sum(axis=0)  # (..., D) -> (D,)
    dgamma = (dout * x_hat).reshape(-1, d).sum(axis=0)  # (..., D) -> (D,)
    g = dout * gamma
    g_x_hat = g * x_hat
    through_var = np.multiply(x_hat, g_x_hat.mean(axis=-1, keepdims=True), out=g_x_hat)  # buffer reused
    dx = (g - g.mean(axis=-1, keepdims=True)) - through_var
    dx *= inv_std  # in place: the same products
    return dx, dgamma, dbeta
