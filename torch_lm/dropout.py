"""Inverted dropout with an injectable keep-mask (twin of ``numpy_ref/dropout.py``).

Written out rather than calling ``F.dropout`` (the tests' statistical witness) so that a mask
can be passed in: given the same mask, this module and ``numpy_ref.dropout`` agree exactly.
"""

from __future__ import annotations

import torch
from torch import nn

from numpy_ref.validation import check_bool_dtype, check_float_dtype, check_probability, check_same_shape


def make_keep_mask(shape: tuple[int, ...], p: float, generator: torch.Generator | None = None,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """Boolean tensor of ``shape``, each entry True (kept) with probability 1 - p."""
    p = check_probability("make_keep_mask", "p", p)
    return torch.rand(shape, generator=generator, device=device) >= p  # P(U[0, 1) >= p) = 1 - p


def _keep_factors(x: torch.Tensor, p: float, generator: torch.Generator | None) -> torch.Tensor:
    """``make_keep_mask(x.shape, p, generator)`` as 1.0 (kept) / 0.0 in x's dtype.

    The same uniform draws and the same comparison, so the same mask and the same products;
    but a float x times a bool mask runs torch's slow mixed-dtype path, measured ~5x a float
    product on this project's machines, and it happens twice per layer and step (forward,
    backward). Comparing in place into the uniform draws makes the float factors for free.
    """
    draws = torch.rand(x.shape, generator=generator, device=x.device)  # as make_keep_mask draws
    return draws.ge_(p).to(x.dtype)                                    # 1.0 where draws >= p


class Dropout(nn.Module):
    """x (...) -> x * mask / (1 - p) in training mode; identity in eval mode or when p == 0."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = check_probability("Dropout", "p", p)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """x (...) float. mask: bool keep-mask of x's shape, drawn from ``generator`` if None."""
        check_float_dtype("Dropout", "x", x.is_floating_point(), x.dtype)
        if mask is not None:
            check_bool_dtype("Dropout", "mask", mask.dtype == torch.bool, mask.dtype)
            check_same_shape("Dropout", "mask", tuple(mask.shape), "x", tuple(x.shape))
        if not self.training or self.p == 0:
            return x
        if mask is None:
            mask = _keep_factors(x, self.p, generator)
        return (x * mask).div_(1 - self.p)  # in place on our product: one fresh tensor, not two

    def extra_repr(self) -> str:
        return f"p={self.p}"
