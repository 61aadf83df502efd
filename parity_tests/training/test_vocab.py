"""torch_lm/training/vocab.py: the character vocabulary, its ids and its readable labels."""

from __future__ import annotations

import pytest
import torch

from torch_lm.training.vocab import CharVocab


def test_vocab_is_sorted_unique_chars_and_round_trips():
    text = "to be, or not to be:\nthat is\tthe question"
    vocab = CharVocab.from_text(text)
    assert vocab.to_list() == sorted(set(text))
    ids = vocab.encode(text)
    assert ids.dtype == torch.int64 and ids.shape == (len(text),)
    assert ids.tolist() == [vocab.to_list().index(ch) for ch in text]
    assert vocab.decode(ids) == text
    assert CharVocab.from_list(vocab.to_list()) == vocab
    assert vocab.encode("").shape == (0,)


def test_vocab_handles_characters_beyond_ascii():
    text = "naïve café — ☃ 𝄞"
    vocab = CharVocab.from_text(text)
    assert vocab.decode(vocab.encode(text)) == text


def test_encoding_an_unknown_character_names_it():
    vocab = CharVocab.from_text("abc \n")
    with pytest.raises(ValueError, match="'z'"):
        vocab.encode("abz")
    with pytest.raises(ValueError, match="<tab>"):
        vocab.encode("a\tb")


def test_readable_labels():
    assert [CharVocab.label(c) for c in " \n\t\r"] == ["<space>", "<newline>", "<tab>", "<return>"]
    assert CharVocab.label("a") == "a" and CharVocab.label(":") == ":"
    assert CharVocab.label("\x07") == "<U+0007>" and CharVocab.label("\u00a0") == "<U+00A0>"
    assert CharVocab.from_text("b a\n").labels() == ["<newline>", "<space>", "a", "b"]


@pytest.mark.parametrize(
    "chars, message",
    [
        ([], "empty"),
        (["a", "a"], "unique"),
        (["ab"], "single character"),
        ([1], "single character"),
    ],
)
def test_bad_vocab_lists_are_refused(chars, message):
    with pytest.raises(ValueError, match=message):
        CharVocab.from_list(chars)


def test_decode_rejects_out_of_range_ids():
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        CharVocab.from_text("abc").decode([0, 3])
