"""ReLU and tanh written out by hand (twin of ``numpy_ref/activations.py``).

``F.relu`` and ``torch.tanh`` are the tests' witnesses, not the implementation. Autograd
differentiates the formulas below; each is arranged so that the derivative autograd finds is
the right one everywhere, including ReLU's 0 at exactly 0 and tanh's saturated tails.
"""

from __future__ import annotations

import torch
from torch import nn

from numpy_ref.config import ACTIVATIONS
from numpy_ref.validation import check_float_dtype, fail


def relu(x: torch.Tensor) -> torch.Tensor:
    """``max(x, 0)`` elementwise; x (...) float -> (...).

    ``where`` passes the gradient to x only where the condition picks x. Testing ``x <= 0``
    (not ``x > 0``) picks x for a NaN, which therefore propagates as in ``F.relu``, and picks
    the constant at exactly 0, so the derivative there is 0. (``clamp(min=0)`` would give 1
    at 0, ``maximum(x, 0)`` 0.5.)
    """
    check_float_dtype("relu", "x", x.is_floating_point(), x.dtype)
    return torch.where(x <= 0, 0.0, x)


def tanh(x: torch.Tensor) -> torch.Tensor:
    """``tanh(x)`` elementwise; x (...) float -> (...).

    tanh(x) = sign(x) * (1 - e) / (1 + e) with e = exp(-2|x|) in (0, 1], which cannot
    overflow, unlike (e^2x - 1) / (e^2x + 1) whose gradient turns into inf/inf = NaN for large
    x. ``expm1`` gives 1 - e without cancellation near 0. The sign is a constant for autograd
    and is +1 at exactly 0, so the slope there comes out as 1, not 0 as ``abs`` would give.
    """
    check_float_dtype("tanh", "x", x.is_floating_point(), x.dtype)
    sign = 2 * (x >= 0).to(x.dtype) - 1  # +1 for x >= 0, -1 below
    m = torch.expm1(-2 * sign * x)  # e - 1 = exp(-2|x|) - 1, in (-1, 0]
    return -sign * m / (2 + m)  # sign * (1 - e) / (1 + e)


class ReLU(nn.Module):
    """Module form of :func:`relu`; no parameters."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return relu(x)


class Tanh(nn.Module):
    """Module form of :func:`tanh`; no parameters."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return tanh(x)


_MODULES = {"relu": ReLU, "tanh": Tanh}


def make_activation(name: str) -> nn.Module:
    """A new activation module by name, one of ``ACTIVATIONS`` ("tanh", "relu")."""
    if name not in ACTIVATIONS:
        fail("make_activation", f"name must be one of {ACTIVATIONS}, got {name!r}")
    return _MODULES[name]()
