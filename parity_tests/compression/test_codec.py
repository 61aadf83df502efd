"""Round trips of every model kind, exact to the byte, within 0.1 % + 64 bytes of what the model
promised; and every way a file can fail to decode refused in one line."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from coding import coding_fixture  # noqa: F401  (the fixture)
from conftest import synthetic_text

from torch_lm.compression import codec
from torch_lm.compression.codec import Sources, compress, decompress
from torch_lm.compression.container import MAGIC, CompressedFileError
from torch_lm.compression.models import KINDS
from torch_lm.compression.predictors import Predictor, softmax

SLACK = 0.001, 64  # fraction and bytes over the model's promise


def assert_round_trip(text: str, settings, sources: Sources) -> codec.Compressed:
    compressed = compress(text, settings, sources)
    assert decompress(compressed.data, sources) == text
    promised = compressed.ideal_bits / 8
    assert len(compressed.data) <= promised * (1 + SLACK[0]) + SLACK[1], (len(compressed.data), promised)
    return compressed


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_round_trips_a_text_an_empty_one_and_one_character(coding, kind):
    sources, settings = coding.sources(), coding.settings(kind)
    for text in (coding.text[:400], "", coding.text[7]):
        assert_round_trip(text, settings, sources)


def test_a_text_the_model_knows_costs_what_its_loss_says(coding):
    """Bits per character of the file against the promise: the overhead is a few bytes."""
    sources = coding.sources()
    text = coding.text[-500:]
    compressed = assert_round_trip(text, coding.settings("kn"), sources)
    assert len(compressed.data) - compressed.ideal_bits / 8 < 40


class Peeking(Predictor):
    """A broken model: the distribution of character j puts 0.9 on character j itself, read from
    the text it was handed. The encoder has the text; the decoder, which must predict j from what
    came before it, does not."""

    def __init__(self, ids: list[int] | None, vocab_size: int):
        self.ids, self.vocab_size = ids, vocab_size

    def reset(self) -> np.ndarray:
        self.at = 0
        return self._guess()

    def step(self, symbol: int) -> np.ndarray:
        self.at += 1
        return self._guess()

    def _guess(self) -> np.ndarray:
        logits = np.zeros(self.vocab_size)
        if self.ids is not None:
            logits[self.ids[self.at]] = 10.0
        return softmax(logits)


def test_a_model_that_peeks_at_the_character_it_predicts_fails_the_round_trip(coding, monkeypatch):
    sources, text = coding.sources(), coding.text[:300]
    ids = sources.vocab.encode(text).tolist()
    V = len(sources.vocab)
    monkeypatch.setattr(codec, "build_predictor", lambda *_: Peeking(ids, V))
    compressed = compress(text, coding.settings("neural"), sources)
    assert len(compressed.data) < 0.3 * len(text)  # "compresses" far below any honest model
    monkeypatch.setattr(codec, "build_predictor", lambda *_: Peeking(None, V))
    with pytest.raises(CompressedFileError, match="fails its checksum"):
        decompress(compressed.data, sources)


def test_a_flipped_byte_and_a_truncated_file_are_refused_before_decoding(coding, monkeypatch):
    sources = coding.sources()
    data = compress(coding.text[:200], coding.settings("kn"), sources).data
    monkeypatch.setattr(codec, "build_predictor", lambda *_: pytest.fail("decoding started"))
    for damaged in (data[:-1], data[: len(data) // 2], data[:10], data[:-5] + bytes([data[-5] ^ 1]) + data[-4:]):
        with pytest.raises(CompressedFileError, match="truncated|corrupted"):
            decompress(damaged, sources)
    with pytest.raises(CompressedFileError, match="not a torch-lm"):
        decompress(b"PK" + data[len(MAGIC) :], sources)


def test_another_checkpoint_or_data_is_refused(coding):
    sources = coding.sources()
    data = compress(coding.text[:100], coding.settings("kn"), sources).data
    with pytest.raises(CompressedFileError, match="another checkpoint"):
        decompress(data, replace(sources, checkpoint=b"\0\0\0\0"))
    with pytest.raises(CompressedFileError, match="fitted on another text"):
        decompress(data, replace(sources, data=b"\1\1\1\1"))
    static = compress(coding.text[:100], coding.settings("neural"), sources).data
    assert decompress(static, replace(sources, data=b"\1\1\1\1")) == coding.text[:100]  # needs no data


def test_characters_outside_the_vocabulary_are_refused(coding):
    with pytest.raises(ValueError, match="outside the checkpoint's vocabulary: 'é'"):
        compress("to be é", coding.settings("neural"), coding.sources())


def test_compressing_twice_gives_the_same_bytes(coding):
    sources, settings = coding.sources(), coding.settings("mixture-dynamic")
    text = coding.text[:150]
    assert compress(text, settings, sources).data == compress(text, settings, sources).data


@pytest.mark.slow
def test_a_megabyte_round_trips(coding):
    """A million characters through the coder, the container's 3-byte length and the count model
    (a bigram, the cheapest kind): exact, and within the slack."""
    text = synthetic_text(1_000_000, seed=9)
    settings = replace(coding.settings("kn"), kn_order=2)
    assert_round_trip(text, settings, coding.sources())
