"""Tiny Shakespeare: locating the text, the character vocabulary, the split and the batches.

Training side only: ``numpy_ref`` has no data loading.

Where the text comes from (docs/DESIGN.md §3):

1. ``--data PATH`` — any UTF-8 text file, used as given (tests train on small slices this way);
2. ``data/tinyshakespeare.txt`` in the repository — must match the published sha256;
3. otherwise it is downloaded from the canonical char-rnn URL, verified, and written atomically
   to ``data/`` (``install_from`` does the same for a local copy: ``download_data.py --from FILE``).

Every failure (offline and no copy, wrong checksum, empty or too-short text) raises ``DataError``
with one line that says what to do.

Batches are a pure function of ``(seed, step)`` — see ``BatchSampler`` — so a resumed run needs no
sampler state and data-parallel ranks can each take their slice of the same global batch.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import unicodedata
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from numpy_ref.validation import check_positive_int

TINY_SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
TINY_SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
# <repo>/data/tinyshakespeare.txt: resolved from this file, so scripts work from any directory.
DEFAULT_DATA_PATH = Path(__file__).resolve().parents[2] / "data" / "tinyshakespeare.txt"
TRAIN_FRACTION = 0.9
DOWNLOAD_TIMEOUT_SECONDS = 30
INSTALL_HINT = "run python scripts/download_data.py --from FILE"


class DataError(ValueError):
    """The text is missing, corrupt or unusable; the message is one line that says what to do."""


# ---------------------------------------------------------------------------------------------
# Finding, downloading and installing the text
# ---------------------------------------------------------------------------------------------


def sha256_of(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def verify_checksum(data: bytes, source: str, expected: str = TINY_SHAKESPEARE_SHA256) -> None:
    """Raise ``DataError`` unless ``sha256(data) == expected``; ``source`` names where it came from."""
    actual = sha256_of(data)
    if actual != expected:
        raise DataError(
            f"{source} has sha256 {actual}, expected {expected} "
            f"(Tiny Shakespeare, {len(data):,} bytes read); it is not the right file"
        )


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one, never a part.

    The bytes go to a temporary file in the same directory (so ``os.replace`` is a rename on one
    filesystem), are flushed and fsynced, renamed over ``path``, and the directory is fsynced so
    the rename itself survives a crash.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as tmp:
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def fsync_directory(directory: Path) -> None:
    """fsync a directory so that a rename inside it is durable (no-op where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems (and Windows) cannot fsync a directory; the rename still happened
    finally:
        os.close(fd)


def download(
    dest: Path = DEFAULT_DATA_PATH, url: str = TINY_SHAKESPEARE_URL, expected_sha256: str = TINY_SHAKESPEARE_SHA256
) -> Path:
    """Fetch ``url``, verify its sha256 and write it atomically to ``dest``; return ``dest``.

    Nothing is written unless the checksum matches, so a failed or tampered download never leaves
    a bad file behind for the next run to trust.
    """
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_SECONDS) as response:
            data = response.read()
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise DataError(
            f"no copy of Tiny Shakespeare at {dest} and the download from {url} "
            f"failed ({reason}); if offline, {INSTALL_HINT}"
        ) from None
    verify_checksum(data, f"the download from {url}", expected_sha256)
    write_atomically(dest, data)
    return dest


def install_from(
    source: str | os.PathLike, dest: Path = DEFAULT_DATA_PATH, expected_sha256: str = TINY_SHAKESPEARE_SHA256
) -> Path:
    """Copy a local Tiny Shakespeare file to ``dest`` after verifying its sha256; return ``dest``."""
    source = Path(source)
    try:
        data = source.read_bytes()
    except OSError as error:
        raise DataError(f"cannot read {source}: {error.strerror or error}") from None
    verify_checksum(data, str(source), expected_sha256)
    write_atomically(dest, data)
    return dest


def resolve_data_path(
    data: str | os.PathLike | None = None, default: Path = DEFAULT_DATA_PATH, url: str = TINY_SHAKESPEARE_URL
) -> Path:
    """The text file to read: ``data`` if given, else ``default`` (downloaded there if absent).

    An explicit ``data`` path is used as given, without a checksum (it may be any text); the
    default copy must be Tiny Shakespeare, so it is verified every time (1 MB: ~2 ms).
    """
    if data is not None:
        path = Path(data)
        if not path.is_file():
            raise DataError(
                f"data file {path} not found; pass an existing text file to --data, or omit --data to use {default}"
            )
        return path
    if default.is_file():
        verify_checksum(default.read_bytes(), str(default))
        return default
    return download(default, url)


def read_text(path: str | os.PathLike) -> str:
    """The file's text (UTF-8), with a ``DataError`` for unreadable, non-UTF-8 or empty files."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as error:
        raise DataError(f"cannot read {path}: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise DataError(f"{path} is not UTF-8 text (byte {error.start}: {error.reason})") from None
    if not text:
        raise DataError(f"{path} is empty; it must hold the training text")
    return text


def load_text(
    data: str | os.PathLike | None = None, default: Path = DEFAULT_DATA_PATH, url: str = TINY_SHAKESPEARE_URL
) -> str:
    """Find (or fetch) the text as ``resolve_data_path`` does and return it."""
    return read_text(resolve_data_path(data, default, url))


# ---------------------------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------
# Split
# ---------------------------------------------------------------------------------------------


def split_ids(ids: torch.Tensor, train_fraction: float = TRAIN_FRACTION) -> tuple[torch.Tensor, torch.Tensor]:
    """``(train, val)``: the first ``int(train_fraction * N)`` ids and the rest (nanoGPT's split).

    On Tiny Shakespeare: 1,003,854 train and 111,540 val characters (docs/DESIGN.md §3).
    """
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"split_ids: train_fraction must lie in (0, 1), got {train_fraction!r}")
    n_train = int(train_fraction * len(ids))
    return ids[:n_train], ids[n_train:]


def _split_fits(n_chars: int, context: int) -> bool:
    n_train = int(TRAIN_FRACTION * n_chars)
    return n_train >= context + 1 and n_chars - n_train >= 1


def check_split_fits(n_train: int, n_val: int, context: int) -> None:
    """Raise ``DataError`` unless the split leaves a training window and a held-out character.

    Training needs ``context + 1`` characters for one (window, target) pair, and the held-out
    evaluation reaches ``context`` characters back into the train text.
    """
    if n_train < context + 1 or n_val < 1:
        need = context + 2
        while not _split_fits(need, context):
            need += 1
        raise DataError(
            f"the text is too short: {n_train + n_val} characters split into "
            f"{n_train} train / {n_val} val, but context {context} needs at least "
            f"{context + 1} train characters and 1 val character ({need} characters "
            f"in all)"
        )


# ---------------------------------------------------------------------------------------------
# Batches
# ---------------------------------------------------------------------------------------------


def step_seed(seed: int, step: int, stream: str = "batch") -> int:
    """A 63-bit seed that is a pure function of ``(seed, step, stream)``.

    A hash rather than ``seed + step``, so that nearby seeds do not replay each other's batches
    shifted by a few steps, and different streams (batches, samples) are independent.
    """
    digest = hashlib.blake2b(f"{stream}:{seed}:{step}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class BatchSampler:
    """Random training rows whose content is a pure function of ``(seed, step)``.

    A row is ``targets_per_row`` consecutive targets with their contexts: the ids
    ``ids[o : o + context + P - 1]`` and the P characters that follow each full context,
    ``ids[o + context : o + context + P]`` (``NeuralLM.forward_sequence`` scores all of them at
    once). ``targets_per_row=1`` is the window batch: ``x`` (B, T) windows, ``y`` (B,) the
    character after each.

    The batch of step ``s`` is drawn by a fresh ``torch.Generator`` seeded with
    ``step_seed(seed, s)``: ``batch_size`` start offsets uniformly (with replacement) from the
    ``len(ids) - context - P + 1`` rows, gathered in one call from strided views
    (``ids.unfold(0, context + P - 1, 1)``, whose row ``o`` starts at ``ids[o]``; ~4x faster than
    fancy indexing, no Python loop over examples). Consequences:

    * resuming at step ``s`` needs no sampler state: the step number is enough;
    * data parallelism: every rank draws the same *global* batch and keeps rows
      ``[rank * B/K, (rank + 1) * B/K)``, so K ranks of ``B/K`` rows together see exactly the batch
      one process of ``B`` rows sees (``batch_size`` is the global batch size).

    The offsets are drawn on the CPU (B integers; identical on every device) and the gather runs
    where ``ids`` lives, so keep ``ids`` on the training device.
    """

    def __init__(
        self,
        ids: torch.Tensor,
        context: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        targets_per_row: int = 1,
    ):
        where = "BatchSampler"
        check_positive_int(where, "context", context)
        check_positive_int(where, "batch_size", batch_size)
        check_positive_int(where, "world_size", world_size)
        check_positive_int(where, "targets_per_row", targets_per_row)
        if ids.ndim != 1 or ids.dtype != torch.int64:
            raise ValueError(
                f"{where}: ids must be a 1-D int64 tensor, got shape {tuple(ids.shape)} and dtype {ids.dtype}"
            )
        if len(ids) < context + targets_per_row:
            raise ValueError(
                f"{where}: ids has {len(ids)} elements; context {context} and {targets_per_row} targets "
                f"per row need at least {context + targets_per_row}"
            )
        if batch_size % world_size:
            raise ValueError(
                f"{where}: batch_size {batch_size} must be divisible by world_size "
                f"{world_size}, so every rank gets the same number of rows"
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"{where}: rank must lie in [0, {world_size}), got {rank}")
        self.ids = ids
        self.context = context
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.targets_per_row = targets_per_row
        self.n_rows = len(ids) - context - targets_per_row + 1  # row o's first target is ids[o+T]
        self._inputs = ids.unfold(0, context + targets_per_row - 1, 1)  # (N - T - P + 2, T + P - 1) view
        self._targets = ids[context:].unfold(0, targets_per_row, 1)  # (N - T - P + 1, P) view

    @property
    def local_batch_size(self) -> int:
        """Rows this rank receives per step: ``batch_size / world_size``."""
        return self.batch_size // self.world_size

    @property
    def targets_per_step(self) -> int:
        """Targets of one global batch: ``batch_size * targets_per_row``."""
        return self.batch_size * self.targets_per_row

    def offsets(self, step: int) -> torch.Tensor:
        """This rank's row start offsets for ``step``: int64 ``(B/K,)`` on the CPU."""
        generator = torch.Generator().manual_seed(step_seed(self.seed, step))
        offsets = torch.randint(self.n_rows, (self.batch_size,), generator=generator)  # (B,)
        rows = self.local_batch_size
        return offsets[self.rank * rows : (self.rank + 1) * rows]  # (B/K,)

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` (B/K, T + P - 1) int64 ids and ``y`` (B/K, P) their targets; with one target per
        row, ``x`` (B/K, T) windows and ``y`` (B/K,) the character after each."""
        offsets = self.offsets(step).to(self.ids.device, non_blocking=True)
        x = self._inputs.index_select(0, offsets)  # (B/K, T + P - 1)
        y = self._targets.index_select(0, offsets)  # (B/K, P)
        return x, (y.squeeze(1) if self.targets_per_row == 1 else y)
