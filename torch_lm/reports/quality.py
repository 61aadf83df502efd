"""Word-level quality of generated text: the share of its words found in the training text, and
distinct-1/2 (Li et al. 2016)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")  # lower-cased words; "king's" is one word, quotes are not


def words(text: str) -> list[str]:
    """Lower-cased words of ``text`` (letters, inner apostrophes)."""
    return WORD.findall(text.lower())


def distinct_n(tokens: Sequence[str], n: int) -> float:
    """Distinct word n-grams / all word n-grams (Li et al. 2016); 0 if there is none."""
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def generation_quality(text: str, vocabulary: set[str]) -> dict[str, float]:
    """Word-level quality of generated ``text``: share of its words that occur in ``vocabulary``
    (the training text's words), distinct-1, distinct-2, and the number of words."""
    tokens = words(text)
    known = sum(word in vocabulary for word in tokens) / len(tokens) if tokens else math.nan
    return {
        "in_train_words": known,
        "distinct_1": distinct_n(tokens, 1),
        "distinct_2": distinct_n(tokens, 2),
        "words": len(tokens),
    }
