"""The range coder and the file around it: exact inverses, near the ideal length, and every
damaged file refused in one line before any decoding."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from torch_lm.compression import coder
from torch_lm.compression.container import (
    MAGIC,
    VERSION,
    CompressedFileError,
    Header,
    Reader,
    pack,
    unpack,
    varint,
)


def random_distributions(rng: np.random.Generator, n: int, V: int) -> tuple[np.ndarray, np.ndarray]:
    """n peaked distributions over V symbols and a symbol drawn from each: (symbols, probs)."""
    probs = rng.dirichlet(np.full(V, 0.05), size=n)
    symbols = np.array([rng.choice(V, p=p) for p in probs])
    return symbols, probs


def encode_all(symbols: np.ndarray, probs: np.ndarray) -> coder.Encoder:
    """Every symbol through one encoder, each under its row of probs."""
    encoder = coder.Encoder()
    for symbol, row in zip(symbols, probs):
        encoder.encode(symbol, row)
    return encoder


def decode_all(words: np.ndarray, probs: np.ndarray) -> list[int]:
    decoder = coder.Decoder(words)
    return [decoder.decode(row) for row in probs]


def test_decoding_inverts_encoding(rng):
    symbols, probs = random_distributions(rng, 5000, 65)
    assert decode_all(encode_all(symbols, probs).words(), probs) == symbols.tolist()


def test_the_code_is_within_a_tenth_of_a_percent_and_a_word_of_the_ideal(rng):
    symbols, probs = random_distributions(rng, 20000, 65)
    encoder = encode_all(symbols, probs)
    size, ideal = 4 * len(encoder.words()), encoder.bits / 8
    assert ideal <= size <= ideal * 1.001 + 8


def test_a_symbol_of_probability_zero_can_still_be_coded(rng):
    """Every symbol keeps a nonzero frequency after quantisation: a model that was sure and wrong
    costs bits, never the file."""
    probs = np.zeros((3, 5))
    probs[:, 0] = 1.0
    symbols = np.array([4, 0, 3])
    assert decode_all(encode_all(symbols, probs).words(), probs) == [4, 0, 3]


def test_another_distribution_decodes_another_text(rng):
    """The decoder reads nothing but the words and the distributions it is given."""
    symbols, probs = random_distributions(rng, 500, 65)
    words = encode_all(symbols, probs).words()
    assert decode_all(words, probs[::-1]) != symbols.tolist()


def test_no_symbol_is_no_word():
    assert len(coder.Encoder().words()) == 0
    assert coder.Encoder().bits == 0.0


# ----------------------------------------------------------------------------- the file
HEADER = Header(
    kind=3, threads=2, settings=b"\x01\x02abc", checkpoint=b"\xaa\xbb\xcc\xdd", length=123456, text_crc=0xDEADBEEF
)
WORDS = np.array([1, 2**32 - 1, 12345], dtype=np.uint32)


def test_pack_and_unpack_are_inverses():
    header, words = unpack(pack(HEADER, WORDS))
    assert header == HEADER and words.tolist() == WORDS.tolist()


@given(st.integers(min_value=0, max_value=2**63 - 1))
def test_varint_round_trips(value):
    reader = Reader(varint(value))
    assert reader.varint() == value and reader.rest() == b""


def test_every_flipped_byte_is_refused_in_one_line():
    data = pack(HEADER, WORDS)
    for at in range(len(data)):
        damaged = bytearray(data)
        damaged[at] ^= 0x5A
        with pytest.raises(CompressedFileError) as error:
            unpack(bytes(damaged))
        assert "\n" not in str(error.value)
        expected = "not a torch-lm" if at < len(MAGIC) else "version" if at == len(MAGIC) else "checksum"
        assert expected in str(error.value), (at, str(error.value))


def test_every_truncation_is_refused():
    data = pack(HEADER, WORDS)
    for end in range(len(data)):
        with pytest.raises(CompressedFileError, match="not a torch-lm|truncated"):
            unpack(data[:end])


def test_an_unknown_version_says_which_it_reads():
    data = bytearray(pack(HEADER, WORDS))
    data[len(MAGIC)] = VERSION + 1
    with pytest.raises(CompressedFileError, match=f"format version {VERSION + 1} is unknown.*reads version {VERSION}"):
        unpack(bytes(data))


def test_the_header_of_an_empty_text_is_small():
    """Magic, version, kind, fingerprint, settings length, text length and two checksums."""
    assert len(pack(Header(0, 1, b"", b"\0" * 4, 0, 0), np.zeros(0, dtype=np.uint32))) == 19
