"""Xavier and He initialisation of a weight tensor, in place (twin of ``numpy_ref/init.py``).

The std formulas come from ``numpy_ref.init`` so both engines share one definition; the
module docstring there explains why each scale keeps the signal variance steady. Weights are
2-D in torch's layout ``(fan_out, fan_in)``. Every function fills ``tensor`` under
``torch.no_grad()`` (so it works on a Parameter that requires grad), draws from ``generator``
when one is given, and returns ``tensor``.
"""

from __future__ import annotations

import torch

from numpy_ref.init import UNIFORM_BOUND_PER_STD, he_std, xavier_std
from numpy_ref.validation import check_float_dtype, check_ndim


def xavier_normal_(tensor: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Fill (fan_out, fan_in) ``tensor`` from N(0, 2 / (fan_in + fan_out))."""
    fan_out, fan_in = _fans("xavier_normal_", tensor)
    return _normal_(tensor, xavier_std(fan_in, fan_out), generator)


def he_normal_(tensor: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Fill (fan_out, fan_in) ``tensor`` from N(0, 2 / fan_in)."""
    _, fan_in = _fans("he_normal_", tensor)
    return _normal_(tensor, he_std(fan_in), generator)


def xavier_uniform_(tensor: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Fill (fan_out, fan_in) ``tensor`` from U(-a, a), a = sqrt(6 / (fan_in + fan_out))."""
    fan_out, fan_in = _fans("xavier_uniform_", tensor)
    return _uniform_(tensor, UNIFORM_BOUND_PER_STD * xavier_std(fan_in, fan_out), generator)


def he_uniform_(tensor: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Fill (fan_out, fan_in) ``tensor`` from U(-a, a), a = sqrt(6 / fan_in)."""
    _, fan_in = _fans("he_uniform_", tensor)
    return _uniform_(tensor, UNIFORM_BOUND_PER_STD * he_std(fan_in), generator)


# Initialisers by name, for ``Linear(..., init=name)``.
INITIALIZERS = {
    "xavier_normal": xavier_normal_,
    "xavier_uniform": xavier_uniform_,
    "he_normal": he_normal_,
    "he_uniform": he_uniform_,
}


def _fans(where: str, tensor: torch.Tensor) -> tuple[int, int]:
    """``(fan_out, fan_in)`` of a 2-D float weight; ValueError otherwise."""
    check_ndim(where, "tensor", tuple(tensor.shape), [2])
    check_float_dtype(where, "tensor", tensor.is_floating_point(), tensor.dtype)
    fan_out, fan_in = tensor.shape
    return fan_out, fan_in


def _normal_(tensor: torch.Tensor, std: float, generator: torch.Generator | None) -> torch.Tensor:
    with torch.no_grad():
        return tensor.normal_(0.0, std, generator=generator)


def _uniform_(tensor: torch.Tensor, bound: float, generator: torch.Generator | None) -> torch.Tensor:
    with torch.no_grad():
        return tensor.uniform_(-bound, bound, generator=generator)
