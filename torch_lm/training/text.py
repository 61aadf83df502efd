"""Tiny Shakespeare: where the text comes from, its checksum, and writing files atomically.

Training side only: ``numpy_ref`` has no data loading.

Where the text comes from (docs/DESIGN.md §3):

1. ``--data PATH`` — any UTF-8 text file, used as given (tests train on small slices this way);
2. ``data/tinyshakespeare.txt`` in the repository — must match the published sha256;
3. otherwise it is downloaded from the canonical char-rnn URL, verified, and written atomically
   to ``data/`` (``install_from`` does the same for a local copy: ``download_data.py --from FILE``).

Every failure (offline and no copy, wrong checksum, empty or too-short text) raises ``DataError``
with one line that says what to do. ``write_atomically`` also writes the checkpoints and the
projector files. The vocabulary is ``vocab.py``; the split and the batches are ``batches.py``.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

TINY_SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
TINY_SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
# <repo>/data/tinyshakespeare.txt: resolved from this file, so scripts work from any directory.
DEFAULT_DATA_PATH = Path(__file__).resolve().parents[2] / "data" / "tinyshakespeare.txt"
DOWNLOAD_TIMEOUT_SECONDS = 30
INSTALL_HINT = "run python scripts/download_data.py --from FILE"


class DataError(ValueError):
    """The text is missing, corrupt or unusable; the message is one line that says what to do."""


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
    default copy must be Tiny Shakespeare, so it is verified every time (a cost small beside
    loading torch: reports/BENCH.md, "Implementation choices, measured").
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


def read_text(path: str | os.PathLike, allow_empty: bool = False) -> str:
    """The file's text (UTF-8), with a ``DataError`` for unreadable, non-UTF-8 or (unless
    ``allow_empty``: a text to compress may be empty, a training text not) empty files."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as error:
        raise DataError(f"cannot read {path}: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise DataError(f"{path} is not UTF-8 text (byte {error.start}: {error.reason})") from None
    if not text and not allow_empty:
        raise DataError(f"{path} is empty; it must hold the training text")
    return text


def load_text(
    data: str | os.PathLike | None = None, default: Path = DEFAULT_DATA_PATH, url: str = TINY_SHAKESPEARE_URL
) -> str:
    """Find (or fetch) the text as ``resolve_data_path`` does and return it."""
    return read_text(resolve_data_path(data, default, url))
