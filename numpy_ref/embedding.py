"""Embedding lookup and its scatter-add gradient (NumPy reference).

Forward is a row lookup, ``out[..., :] = weight[idx[...], :]``. Backward must *accumulate*:
a token id that occurs k times in ``idx`` receives the sum of its k upstream gradients.
The classic bug ``dweight[idx] += dout`` keeps only one of them (fancy-index assignment
writes each repeated row once), which is why the scatter-add below exists.

Twin: ``torch_lm/embedding.py``; proof: ``parity_tests/test_embedding.py``.
"""

from __future__ import annotations

import numpy as np

from numpy_ref.validation import (
    check_float_dtype,
    check_index_range,
    check_integer_dtype,
    check_ndim,
    check_same_shape,
)


def embedding_forward(idx, weight) -> tuple[np.ndarray, tuple]:
    """Look up one row of ``weight`` per token id.

    idx (...) integers in [0, V), weight (V, E) float -> out (..., E) of weight's dtype;
    cache for ``embedding_backward``.
    """
    where = "embedding_forward"
    idx, weight = np.asarray(idx), np.asarray(weight)
    check_integer_dtype(where, "idx", np.issubdtype(idx.dtype, np.integer), idx.dtype)
    check_float_dtype(where, "weight", np.issubdtype(weight.dtype, np.floating), weight.dtype)
    check_ndim(where, "weight", weight.shape, [2])
    if idx.size > 0:  # an empty batch has no extremes to check (and looks nothing up)
        check_index_range(where, "idx", int(idx.min()), int(idx.max()), weight.shape[0])
    out = weight[idx]  # (...) -> (..., E)
    return out, (idx, weight.shape)


def embedding_backward(dout: np.ndarray, cache: tuple) -> np.ndarray:
    """Scatter-add: ``dweight[v] = sum of dout[p] over every position p with idx[p] == v``.

    dout (..., E) -> dweight (V, E) of dout's dtype; rows of ids never looked up are 0.

    Implementation: one ``np.bincount`` over the flattened (row, column) cells of dweight,
    cell ``v * E + e`` collecting ``dout[p, e]`` for every p with ``idx[p] == v``. It is exact
    (every contribution is added, in position order, like ``np.add.at``) and is the fastest of
    the exact options, ahead of ``np.add.at``, one bincount per column and a sort +
    ``np.add.reduceat`` segment sum (reports/BENCH.md, "Implementation choices, measured", times
    them). A one-hot matrix product is exact too but costs V x N memory.
    bincount accumulates in float64: bit-identical to ``np.add.at`` for float64, and for float32
    it rounds once at the end instead of after every addition (more accurate); the result is
    cast back, so the output dtype is preserved.
    """
    idx, (v, e) = cache
    check_same_shape("embedding_backward", "dout", np.shape(dout), "the forward output", idx.shape + (e,))
    cells = (idx.reshape(-1, 1).astype(np.intp) * e + np.arange(e)).ravel()  # (N, 1) -> (N*E,)
    sums = np.bincount(cells, weights=dout.ravel(), minlength=v * e)  # (V*E,), float64
    return sums.reshape(v, e).astype(dout.dtype, copy=False)  # (V*E,) -> (V, E)
