"""torch_lm/training/text.py: finding, downloading and verifying the text (docs/DESIGN.md §3)."""

from __future__ import annotations

import pytest
from conftest import TINY_SHAKESPEARE, needs_tiny_shakespeare

from torch_lm.training.text import (
    TINY_SHAKESPEARE_SHA256,
    DataError,
    download,
    install_from,
    load_text,
    read_text,
    resolve_data_path,
)

# Connection refused at once: a download that must fail without touching the network.
UNREACHABLE_URL = "http://127.0.0.1:9/tinyshakespeare.txt"


@needs_tiny_shakespeare
def test_install_from_verifies_and_writes_the_file(tmp_path):
    dest = tmp_path / "data" / "tinyshakespeare.txt"
    assert install_from(TINY_SHAKESPEARE, dest) == dest
    assert dest.read_bytes() == TINY_SHAKESPEARE.read_bytes()
    assert resolve_data_path(None, default=dest, url=UNREACHABLE_URL) == dest  # found, verified
    assert list(dest.parent.iterdir()) == [dest]  # no temporary file left behind


@needs_tiny_shakespeare
def test_download_verifies_checksum_and_writes_atomically(tmp_path):
    dest = tmp_path / "tinyshakespeare.txt"
    download(dest, TINY_SHAKESPEARE.as_uri())  # file:// exercises the same fetch path offline
    assert dest.read_bytes() == TINY_SHAKESPEARE.read_bytes()


def test_install_from_rejects_a_wrong_file_and_writes_nothing(tmp_path):
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("not shakespeare\n")
    dest = tmp_path / "data" / "tinyshakespeare.txt"
    with pytest.raises(DataError, match=f"expected {TINY_SHAKESPEARE_SHA256}"):
        install_from(wrong, dest)
    assert not dest.exists()
    with pytest.raises(DataError, match="cannot read"):
        install_from(tmp_path / "missing.txt", dest)


def test_download_of_a_wrong_file_writes_nothing(tmp_path):
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("tampered\n")
    dest = tmp_path / "tinyshakespeare.txt"
    with pytest.raises(DataError, match="sha256"):
        download(dest, wrong.as_uri())
    assert not dest.exists()


def test_offline_without_a_copy_says_how_to_install_one(tmp_path):
    with pytest.raises(DataError) as error:
        load_text(None, default=tmp_path / "tinyshakespeare.txt", url=UNREACHABLE_URL)
    message = str(error.value)
    assert "run python scripts/download_data.py --from FILE" in message and "\n" not in message


def test_a_corrupt_default_copy_is_refused(tmp_path):
    default = tmp_path / "tinyshakespeare.txt"
    default.write_text("First Citizen:\nBefore we proceed any further, hear me speak.\n")
    with pytest.raises(DataError, match="sha256"):
        resolve_data_path(None, default=default, url=UNREACHABLE_URL)


def test_explicit_data_path_is_used_as_given_or_reported_missing(tmp_path):
    text_file = tmp_path / "any.txt"
    text_file.write_text("any text at all\n")
    assert load_text(text_file, default=tmp_path / "absent.txt", url=UNREACHABLE_URL) == "any text at all\n"
    with pytest.raises(DataError, match="not found"):
        load_text(tmp_path / "absent.txt")


def test_empty_and_non_utf8_files_are_refused(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(DataError, match="empty"):
        read_text(empty)
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"abc\xff\xfe")
    with pytest.raises(DataError, match="not UTF-8"):
        read_text(binary)


def test_data_error_is_a_value_error():
    assert issubclass(DataError, ValueError)
