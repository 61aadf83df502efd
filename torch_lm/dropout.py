"""Inverted dropout with an injectable keep-mask (twin of ``numpy_ref/dropout.py``).

Written out rather than calling ``F.dropout`` (the tests' statistical witness) so that a mask
can be passed in: given the same mask, this module and ``numpy_ref.dropout`` agree exactly.
Masks drawn here come from ``generator``: on the CPU through NumPy's SFC64, seeded by one draw
from the generator (``_cpu_keep_mask`` says how, and why: it is faster than ``torch.rand``), on a
GPU from ``torch.rand``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from numpy_ref.validation import check_bool_dtype, check_float_dtype, check_probability, check_same_shape


def make_keep_mask(
    shape: tuple[int, ...], p: float, generator: torch.Generator | None = None, device: torch.device | str | None = None
) -> torch.Tensor:
    """Boolean tensor of ``shape``, each entry True (kept) with probability 1 - p.

    Drawn from ``generator`` (the default generator of the device if None): on the CPU by
    ``_cpu_keep_mask``, elsewhere as ``torch.rand(shape) >= p``.
    """
    p = check_probability("make_keep_mask", "p", p)
    device = torch.device("cpu") if device is None else torch.device(device)
    if device.type == "cpu":
        return _cpu_keep_mask(shape, p, generator)
    return torch.rand(shape, generator=generator, device=device) >= p  # P(U[0, 1) >= p) = 1 - p


# The CPU masks compare a uniform 32-bit word with round(p * 2**32), drawing it lazily (below).
WORD_BITS = 32
LOW_BITS = 24  # the word's bits below its top byte


def keep_threshold(p: float) -> int:
    """The 32-bit word below which an entry is dropped: P(word >= threshold) = 1 - p within 2**-33.

    ``p * 2**32`` is exact in float64 and rounds to the nearest integer; a p within 2**-33 of 1
    would round to 2**32, which no word reaches, so it is held at 2**32 - 1 (keep probability
    2**-32, still within the 2**-33 of 1 - p).
    """
    return min(round(p * 2**WORD_BITS), 2**WORD_BITS - 1)


@torch.compiler.disable  # NumPy's generator is state torch.compile must not trace into a graph
def _cpu_keep_mask(
    shape: tuple[int, ...], p: float, generator: torch.Generator | None, np_dtype: type = np.bool_
) -> torch.Tensor:
    """CPU keep-mask of ``shape``, True (or 1.0 in a float ``np_dtype``) with probability 1 - p.

    An entry is kept when a uniform 32-bit word is >= ``keep_threshold(p)``, so the keep
    probability is 1 - p within 2**-33 (``torch.rand(...) >= p`` in float32 resolves it to
    2**-24). The word is drawn lazily: its top byte first, for every entry; the comparison is
    decided by it unless it equals the threshold's top byte, and only for those ties (1 entry in
    256) are the 24 bits below drawn and compared. Same probability as a whole word, a quarter
    of the random bits.

    Why not ``torch.rand``: on the CPU torch's Mersenne Twister makes one float per element,
    serially, for every entry of every hidden layer at every step; NumPy's SFC64 makes 8 top
    bytes per 64-bit output, several times faster (reports/BENCH.md, "Implementation choices,
    measured"). Its seed is one 63-bit draw from ``generator``, so the masks stay a pure function
    of that generator: ``torch.manual_seed``, the trainer's checkpointed dropout generator and
    exact resume work as before; each call advances the generator by one draw.
    """
    numel = math.prod(shape)
    high, low = divmod(keep_threshold(p), 1 << LOW_BITS)
    seed = int(torch.empty((), dtype=torch.int64).random_(generator=generator))
    bits = np.random.SFC64(seed)
    top = bits.random_raw(-(-numel // 8)).view(np.uint8)[:numel]  # (numel,) top bytes
    keep = np.greater(top, high, out=np.empty(numel, np_dtype), casting="unsafe")
    ties = np.flatnonzero(top == high)  # undecided entries
    if ties.size:
        below = bits.random_raw(ties.size) & ((1 << LOW_BITS) - 1)  # their 24 low bits
        keep[ties] = below >= low
    return torch.from_numpy(keep).reshape(shape)


# Float dtypes whose 1.0 / 0.0 factors NumPy can make straight from the comparison.
NUMPY_FLOATS = {torch.float16: np.float16, torch.float32: np.float32, torch.float64: np.float64}


def _keep_factors(x: torch.Tensor, p: float, generator: torch.Generator | None) -> torch.Tensor:
    """``make_keep_mask(x.shape, p, generator, x.device)`` as 1.0 (kept) / 0.0 in x's dtype.

    The same draws and the same comparison, so the same mask; but a float x times a bool mask
    runs torch's slow mixed-dtype path, several times slower than a float product
    (reports/BENCH.md, "Implementation choices, measured"), and it happens twice per layer and
    step (forward, backward). Making the factors in the comparison itself costs nothing extra.
    """
    if x.device.type != "cpu":
        return torch.rand(x.shape, generator=generator, device=x.device).ge_(p).to(x.dtype)
    if x.dtype in NUMPY_FLOATS:
        return _cpu_keep_mask(tuple(x.shape), p, generator, NUMPY_FLOATS[x.dtype])
    return _cpu_keep_mask(tuple(x.shape), p, generator).to(x.dtype)  # bfloat16: no NumPy twin


class Dropout(nn.Module):
    """x (...) -> x * mask / (1 - p) in training mode; identity in eval mode or when p == 0."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = check_probability("Dropout", "p", p)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
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
