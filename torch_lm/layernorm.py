"""Layer normalisation over the last axis (PyTorch), with the mean and variance written out.

``y = (x - mean) / sqrt(var + eps) * weight + bias`` with the biased variance, as
``nn.LayerNorm`` computes it (that built-in is the third witness in the parity tests).
Parameters are named ``weight`` (ones) and ``bias`` (zeros), like ``nn.LayerNorm``, so
``state_dict()`` keys match it and the NumPy reference's gamma/beta dict keys.

Twin: ``numpy_ref/layernorm.py`` (the gradient derivation is there); proof:
``parity_tests/test_layernorm.py``.
"""

from __future__ import annotations

import torch
from torch import nn

from numpy_ref.validation import (
    check_float_dtype,
    check_nonempty_last_axis,
    check_positive_float,
    check_positive_int,
    check_same_shape,
)


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Normalise every row of ``x`` over its last axis, then scale and shift.

    x (..., D) float, weight (D,), bias (D,) -> (..., D).
    """
    where = "layer_norm"
    check_float_dtype(where, "x", x.is_floating_point(), x.dtype)
    check_nonempty_last_axis(where, "x", x.shape)
    check_same_shape(where, "weight", weight.shape, "x.shape[-1:]", x.shape[-1:])
    check_same_shape(where, "bias", bias.shape, "x.shape[-1:]", x.shape[-1:])
    eps = check_positive_float(where, "eps", eps)

    mean = x.mean(dim=-1, keepdim=True)                              # (..., 1)
    centred = x - mean
    var = (centred * centred).mean(dim=-1, keepdim=True)             # (..., 1), biased (/ D)
    return centred * torch.rsqrt(var + eps) * weight + bias


class LayerNorm(nn.Module):
    """LayerNorm over a last axis of size ``dim``: forward(x (..., dim)) -> (..., dim)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.dim = check_positive_int("LayerNorm", "dim", dim)
        self.eps = check_positive_float("LayerNorm", "eps", eps)
        self.weight = nn.Parameter(torch.empty(self.dim))
        self.bias = nn.Parameter(torch.empty(self.dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """weight = 1, bias = 0: the layer starts as a pure normalisation."""
        with torch.no_grad():
            self.weight.fill_(1.0)
            self.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return layer_norm(x, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}"
