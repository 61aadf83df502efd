"""Layer normalisation over the last axis (PyTorch), with the mean and variance written out.

``y = (x - mean) / sqrt(var + eps) * weight + bias`` with the biased variance, as
``nn.LayerNorm`` computes it (that built-in is the third witness in the parity tests).
Parameters are named ``weight`` (ones) and ``bias`` (zeros), like ``nn.LayerNorm``, so
``state_dict()`` keys match it and the NumPy reference's gamma/beta dict keys.

The backward is the closed form derived in the twin, ``numpy_ref/layernorm.py``
(``dx = (g - mean(g) - x_hat * mean(g * x_hat)) / sigma`` with ``g = dout * weight``), written
as an ``autograd.Function`` rather than left to autograd: differentiating the forward ops one by
one makes more passes over the activations and is slower (reports/BENCH.md, "Implementation
choices, measured"), and LayerNorm runs after every hidden Linear of the default model. ``torch.autograd.gradcheck`` and ``F.layer_norm`` (the
third witness) check it in the parity tests. The closed form subtracts before scaling by
1 / sigma, so a zero-variance row keeps an accurate gradient in float32 (``F.layer_norm``'s
float32 backward does not, see the tests). First derivatives only: a double backward raises.

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
    return _LayerNorm.apply(x, weight, bias, eps)


class _LayerNorm(torch.autograd.Function):
    """``layer_norm`` after its checks: the forward formula and the reference's closed-form backward.

    Every temporary of the input's size is a fresh allocation, and fresh memory costs page faults
    and cache misses inside a training step, so buffers are reused where the dtypes allow; the
    operations, and so the numbers, are those of the formulas in the comments.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
        mean = x.mean(dim=-1, keepdim=True)  # (..., 1)
        x_hat = x - mean  # centred, normalised below
        squares = x_hat * x_hat
        var = squares.mean(dim=-1, keepdim=True)  # (..., 1), biased (/ D)
        inv_std = torch.rsqrt(var + eps)  # (..., 1)
        x_hat.mul_(inv_std)  # x_hat = (x - mean) / sigma
        ctx.save_for_backward(x_hat, inv_std, weight)
        if weight.dtype == bias.dtype == x.dtype:  # out = x_hat * weight + bias
            return torch.mul(x_hat, weight, out=squares).add_(bias)
        return x_hat * weight + bias  # mixed dtypes: promote

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dout: torch.Tensor):
        """dout (..., D) -> dx (..., D), dweight (D,), dbias (D,), None for eps.

        All temporaries have dout's dtype, which is the forward output's: the promotion of x,
        weight and bias. With g = dout * weight: dx = ((g - mean(g)) - x_hat * mean(g * x_hat)) / sigma.
        """
        x_hat, inv_std, weight = ctx.saved_tensors
        d = x_hat.shape[-1]
        need_x, need_weight, need_bias, _ = ctx.needs_input_grad
        buffer = dout * x_hat  # (..., D)
        dweight = buffer.reshape(-1, d).sum(dim=0) if need_weight else None
        dbias = dout.reshape(-1, d).sum(dim=0) if need_bias else None
        if not need_x:
            return None, dweight, dbias, None
        dx = dout * weight  # g, the gradient w.r.t. x_hat
        mean_g = dx.mean(dim=-1, keepdim=True)
        mean_g_x_hat = torch.mul(dx, x_hat, out=buffer).mean(dim=-1, keepdim=True)
        through_var = torch.mul(x_hat, mean_g_x_hat, out=buffer)
        dx -= mean_g  # the gradient through the mean
        dx -= through_var  # ... and through the variance
        dx *= inv_std  # then scale by 1 / sigma
        return dx, dweight, dbias, None


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
