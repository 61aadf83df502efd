"""Two-layer network ``y = fc2(ReLU(fc1(x)))`` (twin of ``numpy_ref/mlp.py``).

``state_dict()`` keys are ``fc1.weight``, ``fc1.bias``, ``fc2.weight``, ``fc2.bias`` (no bias
keys when ``bias=False``), the keys of ``numpy_ref.mlp.init_mlp_params``.
"""

from __future__ import annotations

import torch
from torch import nn

from torch_lm.activations import ReLU
from torch_lm.linear import Linear


class TwoLayerMLP(nn.Module):
    """x (..., d_in) -> ReLU(x W1^T + b1) (..., d_hidden) -> (..., d_out).

    fc1 is He-initialised because a ReLU follows it, fc2 Xavier-initialised, as in
    ``numpy_ref.mlp.init_mlp_params``.
    """

    def __init__(self, d_in: int, d_hidden: int, d_out: int, bias: bool = True) -> None:
        super().__init__()
        self.fc1 = Linear(d_in, d_hidden, bias, init="he_normal")
        self.act = ReLU()
        self.fc2 = Linear(d_hidden, d_out, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.fc1(x))  # (..., d_hidden)
        return self.fc2(h)  # (..., d_out)
