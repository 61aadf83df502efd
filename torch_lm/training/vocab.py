"""The character vocabulary: ids of characters, back and forth, and readable labels.

``CharVocab.from_text`` numbers the sorted unique characters of a text; checkpoints store the
characters as a plain list (``to_list`` / ``from_list``).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence

import numpy as np
import torch

_NAMED_CHARS = {" ": "<space>", "\n": "<newline>", "\t": "<tab>", "\r": "<return>"}


class CharVocab:
    """A character vocabulary: id ``i`` is ``chars[i]``.

    ``CharVocab.from_text`` uses the sorted unique characters (so the same text always gives the
    same ids). Checkpoints store ``to_list()`` — a plain list of str, safe for
    ``torch.load(weights_only=True)`` — and rebuild it with ``from_list``.
    """

    def __init__(self, chars: Sequence[str]):
        chars = list(chars)
        for ch in chars:
            if not isinstance(ch, str) or len(ch) != 1:
                raise ValueError(f"CharVocab: every entry must be a single character, got {ch!r}")
        if not chars:
            raise ValueError("CharVocab: the vocabulary must not be empty")
        if len(set(chars)) != len(chars):
            repeated = sorted({ch for ch in chars if chars.count(ch) > 1})
            raise ValueError(f"CharVocab: characters must be unique, got repeats {repeated}")
        self._chars = chars
        self._index = {ch: i for i, ch in enumerate(chars)}
        # Vectorised encoding: code points sorted, with the id each one maps to.
        codepoints = np.array([ord(ch) for ch in chars], dtype=np.int64)
        self._order = np.argsort(codepoints)
        self._sorted_codepoints = codepoints[self._order]

    @classmethod
    def from_text(cls, text: str) -> CharVocab:
        """The sorted unique characters of ``text``."""
        return cls(sorted(set(text)))

    @classmethod
    def from_list(cls, chars: Sequence[str]) -> CharVocab:
        """Inverse of ``to_list`` (validates the entries)."""
        return cls(chars)

    def to_list(self) -> list[str]:
        """The characters in id order, as a plain list (checkpoint format)."""
        return list(self._chars)

    def __len__(self) -> int:
        return len(self._chars)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CharVocab) and self._chars == other._chars

    def __repr__(self) -> str:
        return f"CharVocab({len(self)} chars: {''.join(self._chars)!r})"

    def __contains__(self, ch: object) -> bool:
        return ch in self._index

    def encode(self, text: str) -> torch.Tensor:
        """Ids of ``text`` as an int64 tensor of shape ``(len(text),)``.

        Vectorised (one ``searchsorted`` over the code points) because the whole corpus is encoded
        at start-up. A character outside the vocabulary raises ``ValueError`` naming it.
        """
        codepoints = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        slot = np.searchsorted(self._sorted_codepoints, codepoints)
        slot = np.minimum(slot, len(self._chars) - 1)
        known = self._sorted_codepoints[slot] == codepoints
        if not known.all():
            unknown = sorted({text[i] for i in np.flatnonzero(~known)[:1000]})
            shown = ", ".join(self.label(ch) if ch in _NAMED_CHARS else repr(ch) for ch in unknown)
            raise ValueError(f"CharVocab.encode: {shown} not in the vocabulary of {len(self)} characters")
        return torch.from_numpy(self._order[slot])

    def decode(self, ids: Iterable[int] | torch.Tensor) -> str:
        """The text of a sequence of ids."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        try:
            return "".join(self._chars[i] for i in ids)
        except (IndexError, TypeError):
            raise ValueError(f"CharVocab.decode: ids must be integers in [0, {len(self)})") from None

    @staticmethod
    def label(ch: str) -> str:
        """A readable one-line label for ``ch``: ``<space>``, ``<newline>``, ``<tab>``, ``<U+0007>``.

        Used for TensorBoard projector metadata, whose TSV format cannot hold a tab or newline
        and where a bare space is invisible.
        """
        if ch in _NAMED_CHARS:
            return _NAMED_CHARS[ch]
        if not ch.isprintable() or unicodedata.category(ch).startswith("Z"):
            return f"<U+{ord(ch):04X}>"
        return ch

    def labels(self) -> list[str]:
        """``label`` of every character, in id order."""
        return [self.label(ch) for ch in self._chars]
