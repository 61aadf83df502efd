"""ReLU, tanh and the gated unit tanh(a) * sigmoid(b) as modules (twin of ``numpy_ref/activations.py``).

Both call library kernels, as the reference calls ``np.maximum`` and ``np.tanh``: an elementwise
function has nothing to derive by hand, and the kernels keep it cheap. They run once per hidden
layer per step, where a hand-written composition (``torch.where(x <= 0, 0.0, x)``, or the
overflow-free ``sign(x) * -expm1(-2|x|) / (2 + expm1(-2|x|))``) costs several passes over the
activations each way.

ReLU is ``torch.relu``. tanh is ``torch.tanh``, except for float32 tensors on the CPU, where the
forward is NumPy's ``np.tanh`` (``_NumPyTanh``): torch's CPU float32 tanh is the more accurate of
the two but several times slower than NumPy's SIMD tanh, which stays within 2 units in the last
place (``parity_tests/test_activations.py`` bounds it over twelve decades of inputs), and the
forward is then the reference's own ``np.tanh``, bit for bit. float64 and GPUs keep
``torch.tanh``.

The timings behind both choices, and the accuracy of both tanh kernels, are in reports/BENCH.md,
"Implementation choices, measured", with the snippet that measures them.

The gated unit splits its input's last axis into the filter a and the gate b and returns
``tanh(a) * torch.sigmoid(b)``, its tanh the function above (so float32 on the CPU is NumPy's).

The kernels have the semantics the parity tests pin down: ReLU's derivative at exactly 0 is 0
and a NaN propagates; tanh saturates to +-1 without overflow, with slope ``1 - tanh(x)^2``
(0, not NaN, in the tails; 1 at 0).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from numpy_ref.config import ACTIVATIONS
from numpy_ref.validation import check_even_last_axis, check_float_dtype, fail


def relu(x: torch.Tensor) -> torch.Tensor:
    """``max(x, 0)`` elementwise; x (...) float -> (...); derivative 0 at exactly 0."""
    check_float_dtype("relu", "x", x.is_floating_point(), x.dtype)
    return torch.relu(x)


def tanh(x: torch.Tensor) -> torch.Tensor:
    """``tanh(x)`` elementwise; x (...) float -> (...), in [-1, 1] for every finite x."""
    check_float_dtype("tanh", "x", x.is_floating_point(), x.dtype)
    if x.dtype == torch.float32 and x.device.type == "cpu":
        return _NumPyTanh.apply(x)
    return torch.tanh(x)


def gated_tanh(x: torch.Tensor) -> torch.Tensor:
    """``tanh(a) * sigmoid(b)`` with a = x[..., :H], b = x[..., H:]: x (..., 2H) float -> (..., H)."""
    check_float_dtype("gated_tanh", "x", x.is_floating_point(), x.dtype)
    check_even_last_axis("gated_tanh", "x", tuple(x.shape))
    filter_, gate = x.chunk(2, dim=-1)  # (..., H) each
    return tanh(filter_) * torch.sigmoid(gate)


@torch.compiler.disable  # torch.compile would trace np.tanh back into torch.tanh
def _numpy_tanh(x: torch.Tensor) -> torch.Tensor:
    """``np.tanh`` of a float32 CPU tensor, as a new tensor of x's shape."""
    array = x.detach().numpy()
    return torch.from_numpy(np.tanh(array, out=np.empty_like(array)))  # out=: 0-d stays an array


class _NumPyTanh(torch.autograd.Function):
    """``np.tanh`` forward for float32 CPU tensors; the backward is ``torch.tanh``'s own,
    ``tanh_backward(grad, out) = grad * (1 - out^2)``, which autograd can differentiate again."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        out = _numpy_tanh(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (out,) = ctx.saved_tensors
        return torch.ops.aten.tanh_backward(grad, out)


class ReLU(nn.Module):
    """Module form of :func:`relu`; no parameters."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return relu(x)


class Tanh(nn.Module):
    """Module form of :func:`tanh`; no parameters."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return tanh(x)


class GatedTanh(nn.Module):
    """Module form of :func:`gated_tanh`: (..., 2H) -> (..., H); no parameters."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gated_tanh(x)


_MODULES = {"relu": ReLU, "tanh": Tanh, "gated": GatedTanh}


def make_activation(name: str) -> nn.Module:
    """A new activation module by name, one of ``ACTIVATIONS`` ("tanh", "relu", "gated")."""
    if name not in ACTIVATIONS:
        fail("make_activation", f"name must be one of {ACTIVATIONS}, got {name!r}")
    return _MODULES[name]()
