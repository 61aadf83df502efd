"""The range coder: symbols under float64 distributions, into 32-bit words and back.

constriction's ``Categorical(perfect=False)`` quantises each distribution to fixed-point
frequencies (24 bits) that sum exactly to the coder's total and gives every symbol at least the
smallest frequency, so a character the model gave probability 0 (or that underflowed) can still
be coded, at about 24 bits. Encoding a whole table at once and decoding row by row quantise the
same way (``perfect=False`` makes the two forms equivalent), so the encoder codes in one call.
"""

from __future__ import annotations

import constriction
import numpy as np

from numpy_ref.validation import fail

WORD_BYTES = 4  # the coder's output unit: uint32
# a native module whose submodules are attributes, not importable packages
Categorical = constriction.stream.model.Categorical
RangeDecoder, RangeEncoder = constriction.stream.queue.RangeDecoder, constriction.stream.queue.RangeEncoder


def encode(symbols: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """symbols (N,) ints in [0, V), probs (N, V) float64 rows (each the distribution the symbol
    was coded under) -> the coded words (W,) uint32; N = 0 gives no word."""
    if len(symbols) != len(probs):
        fail("encode", f"needs one distribution per symbol, got {len(symbols)} symbols and {len(probs)} rows")
    encoder = RangeEncoder()
    if len(symbols):
        encoder.encode(np.asarray(symbols, dtype=np.int32), Categorical(perfect=False), np.asarray(probs, np.float64))
    return encoder.get_compressed()


class Decoder:
    """The inverse of ``encode``, one symbol at a time: ``decode(probs (V,))`` must be given the
    distribution the encoder used for that symbol."""

    def __init__(self, words: np.ndarray):
        self._decoder = RangeDecoder(np.asarray(words, dtype=np.uint32))

    def decode(self, probs: np.ndarray) -> int:
        return int(self._decoder.decode(Categorical(probs, perfect=False)))


def ideal_bits(symbols: np.ndarray, probs: np.ndarray) -> float:
    """sum_j -log2 probs[j, symbols[j]]: the code length the model's probabilities promise, in bits
    (the coder's file is this plus its overhead)."""
    if len(symbols) == 0:
        return 0.0
    return float(-np.log2(probs[np.arange(len(symbols)), symbols]).sum())
