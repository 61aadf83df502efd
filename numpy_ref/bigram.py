"""Neural bigram (and trigram) language models, forward and hand-derived backward (NumPy reference).

Two forms predict the next token from the ``C`` tokens before it (``C = 1``: bigram, ``C = 2``:
the trigram extension); both map idx (B, C) to logits (B, V):

* **table**: ``logits = W[code(idx)]`` with ``W`` of shape (V**C, V) and ``code`` the base-V
  number of the C ids, oldest most significant (the same codes as ``numpy_ref.ngram``). For
  C = 1 this is the plain V x V form ``logits = W[prev]``: one free logit per (context, next).
  The lookup is an embedding lookup, so its backward is the embedding's scatter-add.
* **factored**: Embedding (V, E) -> flatten (B, C*E) -> Linear (C*E -> V): the NeuralLM with
  no hidden layer.

Why gradient training of the table form converges to the count model. The training loss over
the whole train text is a sum over its (context a, next b) pairs, so it only depends on the
count table c(a, b):

    L(W) = -(1/N) sum_t log p_W(x_t | a_t) = -(1/N) sum_{a,b} c(a, b) log softmax(W[a])[b].

Each row W[a] is a free softmax, and the rows do not interact, so L is minimised row by row:
by Gibbs' inequality sum_b c(a,b) log q(b) is largest over distributions q at q(b) = c(a,b) / c(a),
the count model's maximum-likelihood estimate. The infimum of L is therefore exactly the count
model's train loss -(1/N) sum c log(c / c(a)) (``count_mle_loss``); it is approached but not
attained when some c(a, b) = 0, because that probability 0 needs a logit of -inf (the cell
carries no weight in L, so the gap it leaves shrinks like the probability mass still on it).
L is convex in W (log-sum-exp minus a linear term), so gradient descent has no bad local minima.

The factored form can represent the same distributions once E >= V - 1: softmax ignores a
constant added to a row, so ``log p(.|a) - log p(b0|a)`` (column b0 subtracted from every row)
is an equivalent logit matrix whose column b0 is zero, i.e. of rank <= V - 1, which factors as
``embedding @ output.weight.T`` with E = V - 1 (the bias is not even needed). For smaller E it is
a low-rank approximation and stays above the count loss; its loss is no longer convex.
For C = 2 the factored form adds the two positions' contributions to each logit, so it cannot
express interactions between them and stays above the count trigram whatever E is.

The count trick: because L depends on the text only through c(a, b), forwarding the model on
the K distinct contexts and weighting the cross-entropy by their counts (``count_cross_entropy``)
gives exactly the full-batch loss and gradient over all N positions at the cost of K rows
(K <= 65 for the Tiny Shakespeare bigram instead of 1,003,853 windows).

Parameters are dicts keyed like the torch modules' ``state_dict()``: ``{"table.weight"}`` and
``{"embedding.weight", "output.weight", "output.bias"}``. Layers are function pairs: forward
returns ``(logits, cache)``, the loss functions return ``(loss, dlogits)`` and backward turns
``dlogits`` into the parameter gradients. Never imports torch.

Twin: ``torch_lm/bigram.py``; proof: ``parity_tests/test_bigram.py``.
"""

from __future__ import annotations

import numpy as np

from numpy_ref.cross_entropy import log_softmax_forward
from numpy_ref.embedding import embedding_backward, embedding_forward
from numpy_ref.init import xavier_normal
from numpy_ref.linear import linear_backward, linear_forward
from numpy_ref.neural_lm import OUTPUT_INIT_SCALE
from numpy_ref.validation import (
    check_float_dtype,
    check_index_range,
    check_integer_dtype,
    check_ndim,
    check_positive_int,
    check_same_shape,
    fail,
)

# The table form allocates V**C x V logits: refuse sizes that would not fit comfortably in memory
# (65**3 x 65 = 17.9M entries is allowed, 65**4 x 65 is not); the factored form has no such table.
MAX_TABLE_ENTRIES = 1 << 25


# ----------------------------------------------------------------------------- pure-Python checks
# Shared with torch_lm.bigram, so both engines raise the same errors.
def table_rows(where: str, vocab_size: object, context: object) -> int:
    """V**C, the number of table rows; raises if V or C is not a positive int or the table is huge."""
    vocab_size = check_positive_int(where, "vocab_size", vocab_size)
    context = check_positive_int(where, "context", context)
    rows = vocab_size**context
    if rows * vocab_size > MAX_TABLE_ENTRIES:
        fail(
            where,
            f"a table of vocab_size**context x vocab_size = {rows:,} x {vocab_size} logits "
            f"exceeds {MAX_TABLE_ENTRIES:,} entries; use the factored form for context {context}",
        )
    return rows


def check_context_idx(where: str, context: int, shape: tuple, is_integer: bool, dtype: object) -> None:
    """idx must be an integer array of shape (B, context) with B >= 1."""
    check_integer_dtype(where, "idx", is_integer, dtype)
    check_ndim(where, "idx", shape, (2,))
    if shape[0] < 1 or shape[1] != context:
        fail(
            where,
            f"idx must have shape (B, {context}) with B >= 1 (one row of {context} "
            f"context ids per prediction), got shape {tuple(shape)}",
        )


def check_counts_args(
    where: str, logits_shape: tuple, counts_shape: tuple, counts_ok: bool, counts_dtype: object
) -> None:
    """counts must be a (K, V) array of numbers shaped like the logits (K >= 1 rows)."""
    check_ndim(where, "logits", logits_shape, (2,))
    if logits_shape[0] == 0 or logits_shape[1] == 0:
        fail(where, f"logits must have at least one row and one class, got shape {tuple(logits_shape)}")
    if not counts_ok:
        fail(where, f"counts must hold integers or floats, got dtype {counts_dtype}")
    check_same_shape(where, "counts", counts_shape, "logits", logits_shape)


def check_counts_values(where: str, lowest: float, total: float) -> None:
    """Counts are occurrences: none negative, and at least one, so the mean has a denominator."""
    if lowest < 0:
        fail(where, f"counts must be >= 0, got a minimum of {lowest}")
    if not total > 0:
        fail(where, f"counts must add up to more than 0, got a total of {total}")


# ----------------------------------------------------------------------------- counting
def context_codes(idx: np.ndarray, vocab_size: int) -> np.ndarray:
    """Base-V code of every context row: idx (B, C) int -> (B,) int64, oldest id most significant."""
    codes = np.zeros(idx.shape[0], dtype=np.int64)
    for column in range(idx.shape[1]):
        codes = codes * vocab_size + idx[:, column]
    return codes


def count_table(ids, context: int, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The sufficient statistics of a context-C model's training loss on the text ``ids``.

    ids (T,) integers in [0, V) -> (contexts (K, C) int64, counts (K, V) int64): the K distinct
    C-token contexts that are followed by a token in ``ids`` (sorted by code), and for each the
    number of times every token follows it. ``counts.sum() == T - C``: one per training window.
    """
    where = "count_table"
    context = check_positive_int(where, "context", context)
    vocab_size = check_positive_int(where, "vocab_size", vocab_size)
    ids = np.asarray(ids)
    check_ndim(where, "ids", ids.shape, (1,))
    check_integer_dtype(where, "ids", np.issubdtype(ids.dtype, np.integer), ids.dtype)
    if len(ids) < context + 1:
        fail(where, f"ids has {len(ids)} tokens; context {context} needs at least {context + 1}")
    check_index_range(where, "ids", int(ids.min()), int(ids.max()), vocab_size)
    ids = ids.astype(np.int64)
    windows = np.lib.stride_tricks.sliding_window_view(ids[:-1], context)  # (T-C, C)
    codes = context_codes(windows, vocab_size)  # (T-C,)
    distinct, inverse = np.unique(codes, return_inverse=True)
    counts = np.zeros((len(distinct), vocab_size), dtype=np.int64)  # (K, V)
    np.add.at(counts, (inverse, ids[context:]), 1)
    return decode_codes(distinct, context, vocab_size), counts


def decode_codes(codes: np.ndarray, context: int, vocab_size: int) -> np.ndarray:
    """Inverse of ``context_codes``: codes (K,) int64 -> contexts (K, C) int64."""
    powers = vocab_size ** np.arange(context - 1, -1, -1, dtype=np.int64)  # (C,) V^(C-1) .. 1
    return codes[:, None] // powers % vocab_size


def count_mle_loss(counts) -> float:
    """Train loss of the unsmoothed count model: -(1/N) sum c log(c / c_row), with 0 log 0 = 0.

    counts (K, V) >= 0 -> float (nats per token). The infimum of the table form's training loss.
    """
    counts = np.asarray(counts, dtype=np.float64)
    check_ndim("count_mle_loss", "counts", counts.shape, (2,))
    check_counts_values("count_mle_loss", float(counts.min()), float(counts.sum()))
    rows = counts.sum(axis=1, keepdims=True)  # (K, 1)
    seen = counts > 0
    return float(-(counts[seen] * np.log((counts / np.maximum(rows, 1))[seen])).sum() / counts.sum())


def count_cross_entropy(logits, counts) -> tuple[np.ndarray, np.ndarray]:
    """Count-weighted cross-entropy: the full-batch loss of the windows the counts summarise.

    logits (K, V) float, counts (K, V) >= 0 (integers or floats, at least one > 0).
    Returns ``(loss, dlogits)``: loss = -sum(counts * log_softmax(logits)) / sum(counts), a 0-d
    array of logits' dtype, and dlogits (K, V) = (rowsum(counts) * softmax(logits) - counts) / N,
    the sum over the rows' windows of the usual (p - onehot) / N.
    """
    where = "count_cross_entropy"
    logits, counts = np.asarray(logits), np.asarray(counts)
    check_float_dtype(where, "logits", np.issubdtype(logits.dtype, np.floating), logits.dtype)
    check_counts_args(
        where,
        logits.shape,
        counts.shape,
        np.issubdtype(counts.dtype, np.integer) or np.issubdtype(counts.dtype, np.floating),
        counts.dtype,
    )
    check_counts_values(where, float(counts.min()), float(counts.sum()))
    weights = counts.astype(logits.dtype)  # (K, V)
    total = weights.sum()
    lp, _ = log_softmax_forward(logits)  # (K, V)
    loss = np.asarray(-(weights * lp).sum() / total)
    dlogits = (weights.sum(axis=1, keepdims=True) * np.exp(lp) - weights) / total
    return loss, dlogits


# ----------------------------------------------------------------------------- parameters
def init_table_params(vocab_size: int, context: int = 1, dtype=np.float64) -> dict[str, np.ndarray]:
    """``{"table.weight": zeros (V**C, V)}``: every row starts uniform (loss ln V)."""
    rows = table_rows("init_table_params", vocab_size, context)
    return {"table.weight": np.zeros((rows, vocab_size), dtype=dtype)}


def init_factored_params(
    vocab_size: int, context: int, embed_dim: int, rng: np.random.Generator, dtype=np.float64
) -> dict[str, np.ndarray]:
    """Embedding N(0, 1) (V, E); output OUTPUT_INIT_SCALE x Xavier (V, C*E) and zero bias, as NeuralLM."""
    where = "init_factored_params"
    vocab_size = check_positive_int(where, "vocab_size", vocab_size)
    fan_in = check_positive_int(where, "context", context) * check_positive_int(where, "embed_dim", embed_dim)
    return {
        "embedding.weight": rng.standard_normal((vocab_size, embed_dim)).astype(dtype),
        "output.weight": OUTPUT_INIT_SCALE * xavier_normal(vocab_size, fan_in, rng, dtype=dtype),
        "output.bias": np.zeros(vocab_size, dtype),
    }


# ----------------------------------------------------------------------------- table form
def table_lm_forward(params, idx) -> tuple[np.ndarray, tuple]:
    """logits = table.weight[code(idx)]: idx (B, C) ids in [0, V) -> logits (B, V), cache.

    C is read from the table: it has V**C rows.
    """
    where = "table_lm_forward"
    weight = params["table.weight"]
    idx = np.asarray(idx)
    vocab_size = weight.shape[-1]
    context = _table_context(where, weight.shape)
    check_context_idx(where, context, idx.shape, np.issubdtype(idx.dtype, np.integer), idx.dtype)
    check_index_range(where, "idx", int(idx.min()), int(idx.max()), vocab_size)
    logits, cache = embedding_forward(context_codes(idx, vocab_size), weight)  # (B,) -> (B, V)
    return logits, cache


def table_lm_backward(dlogits: np.ndarray, cache: tuple) -> dict[str, np.ndarray]:
    """dlogits (B, V) -> {"table.weight": (V**C, V)}: each row collects the dlogits of its contexts."""
    return {"table.weight": embedding_backward(dlogits, cache)}


def _table_context(where: str, shape: tuple) -> int:
    """C such that the table (rows, V) has rows == V**C."""
    check_ndim(where, "table.weight", shape, (2,))
    rows, vocab_size = shape
    context = 1
    while vocab_size**context < rows:
        context += 1
    if vocab_size < 2 or vocab_size**context != rows:
        fail(
            where,
            f"table.weight must have V**C rows for its V = {vocab_size} columns (V >= 2), got shape {tuple(shape)}",
        )
    return context


# ----------------------------------------------------------------------------- factored form
def factored_lm_forward(params, idx) -> tuple[np.ndarray, tuple]:
    """Embedding -> flatten -> Linear: idx (B, C) -> logits (B, V), cache.

    C is read from the shapes: output.weight has C * E columns.
    """
    where = "factored_lm_forward"
    emb, w, b = params["embedding.weight"], params["output.weight"], params["output.bias"]
    check_ndim(where, "embedding.weight", emb.shape, (2,))
    check_ndim(where, "output.weight", w.shape, (2,))
    embed_dim = emb.shape[1]
    if w.shape[1] % embed_dim:
        fail(where, f"output.weight has {w.shape[1]} columns, not a multiple of embed_dim {embed_dim}")
    idx = np.asarray(idx)
    check_context_idx(where, w.shape[1] // embed_dim, idx.shape, np.issubdtype(idx.dtype, np.integer), idx.dtype)
    x, embedding_cache = embedding_forward(idx, emb)  # (B, C, E)
    flat = x.reshape(x.shape[0], -1)  # (B, C*E)
    logits, linear_cache = linear_forward(flat, w, b)  # (B, V)
    return logits, (embedding_cache, linear_cache, x.shape)


def factored_lm_backward(dlogits: np.ndarray, cache: tuple) -> dict[str, np.ndarray]:
    """dlogits (B, V) -> gradients keyed like the params."""
    embedding_cache, linear_cache, x_shape = cache
    dflat, dw, db = linear_backward(dlogits, linear_cache)  # (B, C*E)
    demb = embedding_backward(dflat.reshape(x_shape), embedding_cache)  # (B, C, E) -> (V, E)
    return {"embedding.weight": demb, "output.weight": dw, "output.bias": db}
