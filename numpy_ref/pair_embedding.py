"""Exact pair (bigram) embeddings: one vector per (previous, current) pair of ids (NumPy reference).

The table ``weight`` has V*V rows, the pair at position t of ids (..., n) being row
``idx[..., t - 1] * V + idx[..., t]``. The positions of the last axis fall into groups of
``group`` consecutive positions, and a position gets its pair's vector only when its predecessor
lies in the same group (``t % group != 0``); a group's first position gets zeros. The NeuralLM
passes the size of its first fusion level's groups in the window form, and the whole length in
the sequence form (where it decides per tap which positions read the pair).

Backward must *accumulate*: a pair that occurs k times receives the sum of its k upstream
gradients. ``np.add.at`` is unbuffered and adds every one; the buffered ``dweight[ids] += g``
writes each repeated row once and keeps only one of them.

Twin: ``torch_lm/pair_embedding.py``; proof: ``parity_tests/test_pair_embedding.py``.
"""

from __future__ import annotations

import math

import numpy as np

from numpy_ref.validation import (
    check_float_dtype,
    check_index_range,
    check_integer_dtype,
    check_ndim,
    check_positive_int,
    check_same_shape,
    fail,
)


def check_pair_arguments(where: str, idx_shape: tuple, weight_shape: tuple, group: object) -> int:
    """Shapes and group size of a pair lookup (both engines); returns V, the number of ids.

    idx must have a last axis (the positions), weight must be 2-D with V*V rows (V >= 1), and
    group a positive integer.
    """
    if len(idx_shape) == 0:
        fail(where, "idx must have at least one axis (the positions), got shape ()")
    check_ndim(where, "weight", weight_shape, [2])
    rows = weight_shape[0]
    vocab = math.isqrt(rows)
    if rows == 0 or vocab * vocab != rows:
        fail(where, f"weight must have V*V rows (one per pair of ids, V >= 1), got shape {tuple(weight_shape)}")
    check_positive_int(where, "group", group)
    return vocab


def pair_positions(n: int, group: int) -> list[int]:
    """Positions t in [0, n) whose predecessor is in their group (t % group != 0), ascending."""
    return [t for t in range(1, n) if t % group]


def pair_embedding_forward(idx, weight, group: int) -> tuple[np.ndarray, tuple]:
    """The pair vector of every position whose predecessor is in its group, zeros elsewhere.

    idx (..., n) integers in [0, V), weight (V*V, E) float, group >= 1 -> out (..., n, E) of
    weight's dtype; cache for ``pair_embedding_backward``.
    """
    where = "pair_embedding_forward"
    idx, weight = np.asarray(idx), np.asarray(weight)
    check_integer_dtype(where, "idx", np.issubdtype(idx.dtype, np.integer), idx.dtype)
    check_float_dtype(where, "weight", np.issubdtype(weight.dtype, np.floating), weight.dtype)
    vocab = check_pair_arguments(where, idx.shape, weight.shape, group)
    if idx.size > 0:  # an empty batch has no extremes to check (and looks nothing up)
        check_index_range(where, "idx", int(idx.min()), int(idx.max()), vocab)
    kept = np.array(pair_positions(idx.shape[-1], group), dtype=np.intp)  # (K,)
    # intp before the product: int8 ids times V would overflow in their own dtype.
    ids = idx[..., kept - 1].astype(np.intp) * vocab + idx[..., kept]  # (..., K)
    out = np.zeros(idx.shape + (weight.shape[1],), weight.dtype)  # (..., n, E)
    out[..., kept, :] = weight[ids]  # (..., K, E) into the kept positions
    return out, (ids, kept, out.shape, weight.shape)


def pair_embedding_backward(dout: np.ndarray, cache: tuple) -> np.ndarray:
    """Scatter-add: ``dweight[p] = sum of dout[..., t, :] over every kept position t holding pair p``.

    dout (..., n, E) -> dweight (V*V, E) of dout's dtype; rows of pairs never looked up, and the
    positions that read no pair, contribute 0.
    """
    ids, kept, out_shape, (rows, e) = cache
    check_same_shape("pair_embedding_backward", "dout", np.shape(dout), "the forward output", out_shape)
    dweight = np.zeros((rows, e), dout.dtype)
    np.add.at(dweight, ids.reshape(-1), dout[..., kept, :].reshape(-1, e))  # (N*K,) rows, (N*K, E) values
    return dweight
