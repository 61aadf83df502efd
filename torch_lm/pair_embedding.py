"""Exact pair (bigram) embeddings (PyTorch): one vector per (previous, current) pair of ids.

The pair at position t of ids (..., n) is row ``idx[..., t - 1] * V + idx[..., t]`` of a
(V*V, E) table, looked up at the positions whose predecessor lies in their group of ``group``
consecutive positions (``t % group != 0``), zeros elsewhere. The lookup is ``index_select`` and
the placement ``index_copy``, so autograd's backward is the scatter-add (``index_add_``) that
accumulates the gradient of a pair occurring several times.

Twin: ``numpy_ref/pair_embedding.py``; proof: ``parity_tests/test_pair_embedding.py``.
"""

from __future__ import annotations

import torch
from torch import nn

from numpy_ref.pair_embedding import check_pair_arguments, pair_positions
from numpy_ref.validation import check_float_dtype, check_integer_dtype, check_positive_int
from torch_lm._checks import check_ids_in_range, is_integer_dtype


def pair_embedding(idx: torch.Tensor, weight: torch.Tensor, group: int) -> torch.Tensor:
    """The pair vector of every position whose predecessor is in its group, zeros elsewhere.

    idx (..., n) integers in [0, V), weight (V*V, E) float, group >= 1 -> (..., n, E) of weight's dtype.
    """
    where = "pair_embedding"
    check_integer_dtype(where, "idx", is_integer_dtype(idx.dtype), idx.dtype)
    check_float_dtype(where, "weight", weight.is_floating_point(), weight.dtype)
    vocab = check_pair_arguments(where, tuple(idx.shape), tuple(weight.shape), group)
    check_ids_in_range(where, "idx", idx, vocab)
    kept = torch.tensor(pair_positions(idx.shape[-1], group), dtype=torch.long, device=idx.device)  # (K,)
    idx = idx.long()  # int64 before the product: int8 ids times V would overflow
    ids = idx[..., kept - 1] * vocab + idx[..., kept]  # (..., K)
    rows = weight.index_select(0, ids.reshape(-1)).reshape(*ids.shape, weight.shape[1])  # (..., K, E)
    return rows.new_zeros(*idx.shape, weight.shape[1]).index_copy(-2, kept, rows)  # (..., n, E)


class PairEmbedding(nn.Module):
    """A vector for every pair of ``num_embeddings`` ids: forward(idx (..., n), group) -> (..., n, E).

    ``weight`` is (V*V, E), row ``previous * V + current``.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int) -> None:
        super().__init__()
        self.num_embeddings = check_positive_int("PairEmbedding", "num_embeddings", num_embeddings)
        self.embedding_dim = check_positive_int("PairEmbedding", "embedding_dim", embedding_dim)
        self.weight = nn.Parameter(torch.empty(self.num_embeddings**2, self.embedding_dim))
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Zeros (``generator`` is accepted for a uniform signature and draws nothing)."""
        # Zeros, not N(0, 1) like the character table: a pair row only learns when that pair occurs, and
        # many pairs are rare or absent from the training text (no weight decay pulls them back), so a
        # random row would stay noise on top of its characters' vectors; at zero it adds nothing
        # until it has learnt something, and the model starts as the model without pairs.
        with torch.no_grad():
            self.weight.zero_()

    def forward(self, idx: torch.Tensor, group: int) -> torch.Tensor:
        return pair_embedding(idx, self.weight, group)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim} ({self.num_embeddings**2} pairs)"
