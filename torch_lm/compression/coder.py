"""The range coder: symbols under float64 distributions, into 32-bit words and back.

constriction's ``Categorical(perfect=False)`` quantises each distribution to fixed-point
frequencies (24 bits) that sum exactly to the coder's total and gives every symbol at least the
smallest frequency, so a character the model gave probability 0 (or that underflowed) can still
be coded, at about 24 bits. Encoder and decoder quantise a distribution identically, so they agree
wherever they are handed the same float64 numbers.
"""

from __future__ import annotations

import math

import constriction
import numpy as np

WORD_BYTES = 4  # the coder's output unit: uint32
# a native module whose submodules are attributes, not importable packages
Categorical = constriction.stream.model.Categorical
RangeDecoder, RangeEncoder = constriction.stream.queue.RangeDecoder, constriction.stream.queue.RangeEncoder


class Encoder:
    """Symbols coded one at a time, as the loop meets them, so no table of every distribution is
    kept: ``encode(symbol, probs (V,))`` for each, then ``words()``. ``bits`` is the code length
    the distributions promised so far, sum -log2 probs[symbol] (the file is that plus the coder's
    overhead)."""

    def __init__(self) -> None:
        self._encoder = RangeEncoder()
        self.bits = 0.0

    def encode(self, symbol: int, probs: np.ndarray) -> None:
        self._encoder.encode(int(symbol), Categorical(probs, perfect=False))
        p = float(probs[symbol])
        self.bits += math.inf if p == 0 else -math.log2(p)

    def words(self) -> np.ndarray:
        """The coded words (W,) uint32; no symbol gives no word."""
        return self._encoder.get_compressed()


class Decoder:
    """The inverse of ``Encoder``, one symbol at a time: ``decode(probs (V,))`` must be given the
    distribution the encoder used for that symbol."""

    def __init__(self, words: np.ndarray):
        self._decoder = RangeDecoder(np.asarray(words, dtype=np.uint32))

    def decode(self, probs: np.ndarray) -> int:
        return int(self._decoder.decode(Categorical(probs, perfect=False)))
