"""Embedding lookup (PyTorch): one row of a (V, E) weight per token id.

The lookup is written with ``index_select`` rather than ``F.embedding`` (the third witness in
the parity tests); autograd turns it into the scatter-add (``index_add_``) that accumulates the
gradient of a token id that occurs several times.

Twin: ``numpy_ref/embedding.py``; proof: ``parity_tests/test_embedding.py``.
"""

from __future__ import annotations

import torch
from torch import nn

from numpy_ref.validation import check_float_dtype, check_integer_dtype, check_ndim, check_positive_int
from torch_lm._checks import check_ids_in_range, is_integer_dtype


def embedding(idx: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Look up one row of ``weight`` per token id.

    idx (...) integers in [0, V), weight (V, E) float -> (..., E) of weight's dtype.
    """
    where = "embedding"
    check_integer_dtype(where, "idx", is_integer_dtype(idx.dtype), idx.dtype)
    check_float_dtype(where, "weight", weight.is_floating_point(), weight.dtype)
    check_ndim(where, "weight", weight.shape, [2])
    check_ids_in_range(where, "idx", idx, weight.shape[0])
    # index_select on int64 ids rather than weight[idx]: a uint8 index would be read as a mask.
    rows = weight.index_select(0, idx.reshape(-1).long())  # (...) -> (N, E)
    return rows.reshape(*idx.shape, weight.shape[1])  # (N, E) -> (..., E)


class Embedding(nn.Module):
    """A table of ``num_embeddings`` vectors of size ``embedding_dim``: forward(idx (...)) -> (..., E).

    ``weight`` (V, E) starts as N(0, 1), as in ``nn.Embedding``.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int) -> None:
        super().__init__()
        self.num_embeddings = check_positive_int("Embedding", "num_embeddings", num_embeddings)
        self.embedding_dim = check_positive_int("Embedding", "embedding_dim", embedding_dim)
        self.weight = nn.Parameter(torch.empty(self.num_embeddings, self.embedding_dim))
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Draw ``weight`` from N(0, 1); pass a ``torch.Generator`` for a reproducible draw."""
        with torch.no_grad():
            self.weight.normal_(0.0, 1.0, generator=generator)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return embedding(idx, self.weight)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}"
