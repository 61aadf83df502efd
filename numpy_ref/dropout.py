"""Inverted dropout with an injectable keep-mask (NN exercise 8).

In training every entry is kept with probability 1 - p and the kept ones are scaled by
1 / (1 - p), so E[out] = x and nothing needs rescaling at evaluation, where dropout is the
identity. Passing ``mask`` makes the randomness explicit, so ``torch_lm.dropout.Dropout`` can
be given the very same mask and the two engines compared exactly.
"""

from __future__ import annotations

import numpy as np

from numpy_ref.validation import check_bool_dtype, check_float_dtype, check_probability, check_same_shape, fail


def make_keep_mask(shape: tuple[int, ...], p: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean array of ``shape``, each entry True (kept) with probability 1 - p."""
    p = check_probability("make_keep_mask", "p", p)
    return rng.random(shape) >= p  # P(U[0, 1) >= p) = 1 - p


def dropout_forward(
    x: np.ndarray, p: float, rng: np.random.Generator | None = None, mask: np.ndarray | None = None, train: bool = True
):
    """``out = x * mask / (1 - p)`` in training; ``out = x`` in evaluation or when p == 0.

    x (...) float; p in [0, 1); mask: bool keep-mask of x's shape, drawn from ``rng`` when
    None (then ``rng`` is required). Returns ``(out, cache)``, out (...) in x's dtype; the
    cache is ``(mask, p, shape)`` with mask None when dropout was the identity.
    """
    where = "dropout_forward"
    check_float_dtype(where, "x", np.issubdtype(x.dtype, np.floating), x.dtype)
    p = check_probability(where, "p", p)
    if mask is not None:
        _check_mask(where, mask, x.shape)
    if not train or p == 0:
        return x, (None, p, x.shape)
    if mask is None:
        if rng is None:
            fail(where, "rng is required to draw a keep-mask when mask is None, train=True and p > 0")
        mask = make_keep_mask(x.shape, p, rng)
    out = x * mask
    out /= 1 - p  # in place: one activation-sized array per call, not two
    return out, (mask, p, x.shape)


def dropout_backward(dout: np.ndarray, cache) -> np.ndarray:
    """dx = dout * mask / (1 - p): the same mask and scale as the forward; dout (...) like x."""
    mask, p, shape = cache
    check_same_shape("dropout_backward", "dout", dout.shape, "x", shape)
    if mask is None:
        return dout
    dx = dout * mask
    dx /= 1 - p  # in place, as in the forward
    return dx


def _check_mask(where: str, mask: np.ndarray, shape: tuple[int, ...]) -> None:
    check_bool_dtype(where, "mask", mask.dtype == np.bool_, mask.dtype)
    check_same_shape(where, "mask", mask.shape, "x", shape)
