"""Affine layer ``out = x @ weight.T + bias`` (twin of ``numpy_ref/linear.py``).

The product is written out rather than delegated to ``F.linear`` (the tests' witness);
autograd derives the gradients that ``numpy_ref.linear.linear_backward`` spells out by hand.
Like the reference, every leading dimension is flattened into one batch of rows, so the whole
layer is a single GEMM, with the bias added inside it (``torch.addmm``) rather than by a second
pass over the output. Under ``torch.autocast`` the product runs in the autocast dtype and the
result is returned in the input's dtype (``torch_lm.training.precision``).
"""

from __future__ import annotations

import torch
from torch import nn

from numpy_ref.validation import (
    check_dim_matches,
    check_float_dtype,
    check_nonempty_last_axis,
    check_positive_int,
    check_same_dtype,
    fail,
)
from torch_lm.init import INITIALIZERS


class Linear(nn.Module):
    """``x (..., in_features) -> x @ weight.T + bias (..., out_features)``.

    Parameters ``weight`` (out_features, in_features) and ``bias`` (out_features,), the bias
    absent when ``bias=False``. ``init`` names the weight initialiser from ``torch_lm.init``:
    ``"xavier_normal"`` (default, for tanh or linear outputs) or ``"he_normal"`` (before a
    ReLU), or their ``_uniform`` variants. The bias starts at zero.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        init: str = "xavier_normal",
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        self.in_features = check_positive_int("Linear", "in_features", in_features)
        self.out_features = check_positive_int("Linear", "out_features", out_features)
        if init not in INITIALIZERS:
            fail("Linear", f"init must be one of {sorted(INITIALIZERS)}, got {init!r}")
        self.init = init
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(out_features, in_features, **factory))
        self.bias = nn.Parameter(torch.empty(out_features, **factory)) if bias else None
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Redraw the weight with ``self.init`` (from ``generator`` if given) and zero the bias."""
        INITIALIZERS[self.init](self.weight, generator=generator)
        if self.bias is not None:
            with torch.no_grad():
                self.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., in_features) float, weight's dtype -> (..., out_features)."""
        self._check_input(x)
        rows = x.reshape(-1, self.in_features)  # (..., D_in) -> (N, D_in)
        if self.bias is None:
            out = rows @ self.weight.T  # (N, D_in) @ (D_in, D_out) -> (N, D_out)
        else:
            out = torch.addmm(self.bias, rows, self.weight.T)  # bias + rows @ weight.T, (N, D_out)
        # Under a bfloat16 autocast the product comes out in bfloat16: hand back the input's dtype,
        # so that what follows (LayerNorm statistics, the loss's softmax) stays in float32.
        out = out if out.dtype == x.dtype else out.to(x.dtype)
        return out.reshape(*x.shape[:-1], self.out_features)  # (N, D_out) -> (..., D_out)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"

    def _check_input(self, x: torch.Tensor) -> None:
        """The same ValueErrors as ``numpy_ref.linear.linear_forward`` for the same mistakes.

        Runs on every forward, so a valid input is recognised first from a few attributes; the
        checks that name the mistake run only otherwise.
        """
        if x.ndim and x.shape[-1] == self.in_features and x.dtype == self.weight.dtype and x.is_floating_point():
            return
        check_float_dtype("Linear", "x", x.is_floating_point(), x.dtype)
        check_nonempty_last_axis("Linear", "x", tuple(x.shape))
        check_dim_matches("Linear", "x", tuple(x.shape), -1, "weight", tuple(self.weight.shape), 1)
        check_same_dtype("Linear", "x", x.dtype, "weight", self.weight.dtype)
