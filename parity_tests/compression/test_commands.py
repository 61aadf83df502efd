"""``compress``, ``decompress`` and ``compression_table`` from the command line: byte-exact files,
one-line refusals with the project's exit codes, the table and the README's block."""

from __future__ import annotations

import json
import re

import pytest
from coding import coding_fixture  # noqa: F401  (the fixture)
from conftest import assert_in_process_error, call, script

from torch_lm.cli import compress as compress_cli
from torch_lm.cli import compression_table as table_cli
from torch_lm.cli import decompress as decompress_cli
from torch_lm.compression.table import TABLE_BEGIN, TABLE_END


def paths(coding, tmp_path, text: str | bytes) -> tuple[str, str, str, list[str]]:
    """(input, compressed, restored) paths with ``text`` written to the input, and the shared flags."""
    source = tmp_path / "in.txt"
    source.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    shared = ["--checkpoint", str(coding.checkpoint), "--data", str(coding.text_path), "--quiet"]
    return str(source), str(tmp_path / "in.tlz"), str(tmp_path / "out.txt"), shared


@pytest.mark.parametrize("kind", ["neural", "mixture-context"])
def test_a_file_comes_back_byte_for_byte(coding, tmp_path, capsys, kind):
    source, packed, restored, shared = paths(coding, tmp_path, coding.text[:300])
    report = ["--report", str(coding.report)]
    assert call(capsys, compress_cli.main, source, packed, *shared, "--model", kind, *report)[0] == 0
    assert call(capsys, decompress_cli.main, packed, restored, *shared)[0] == 0
    assert (tmp_path / "out.txt").read_bytes() == (tmp_path / "in.txt").read_bytes()


def test_an_empty_file_comes_back_empty(coding, tmp_path, capsys):
    source, packed, restored, shared = paths(coding, tmp_path, "")
    assert call(capsys, compress_cli.main, source, packed, *shared)[0] == 0
    assert call(capsys, decompress_cli.main, packed, restored, *shared)[0] == 0
    assert (tmp_path / "out.txt").read_bytes() == b""


def test_the_summary_line_gives_size_rate_and_promise(coding, tmp_path, capsys):
    source, packed, _, shared = paths(coding, tmp_path, coding.text[:300])
    code, err = call(capsys, compress_cli.main, source, packed, *shared[:-1])
    assert code == 0
    assert re.search(r"300 characters -> [\d,]+ bytes \([\d.]+ bits/char\) with neural; the model's -log2 p", err)


def test_refusals_are_one_line(coding, tmp_path, capsys):
    source, packed, restored, shared = paths(coding, tmp_path, "to be é")
    assert_in_process_error(
        call(capsys, compress_cli.main, source, packed, *shared), 1, "outside the checkpoint's vocabulary"
    )
    source, packed, restored, shared = paths(coding, tmp_path, coding.text[:50])
    missing = ["--report", str(tmp_path / "nope.json")]
    assert_in_process_error(
        call(capsys, compress_cli.main, source, packed, *shared, "--model", "mixture", *missing), 2, "needs the weights"
    )
    assert call(capsys, compress_cli.main, source, packed, *shared)[0] == 0
    data = bytearray((tmp_path / "in.tlz").read_bytes())
    data[len(data) // 2] ^= 0x10
    (tmp_path / "bad.tlz").write_bytes(bytes(data))
    assert_in_process_error(
        call(capsys, decompress_cli.main, str(tmp_path / "bad.tlz"), restored, *shared), 1, "corrupted"
    )
    assert_in_process_error(call(capsys, decompress_cli.main, source, restored, *shared), 1, "not a torch-lm")
    assert_in_process_error(
        call(capsys, decompress_cli.main, packed, restored, "--checkpoint", str(tmp_path / "none.pt")), 1, "not found"
    )
    assert not (tmp_path / "out.txt").exists()  # nothing written by a refusal


def test_the_scripts_run_from_a_checkout(coding, tmp_path):
    source, packed, restored, shared = paths(coding, tmp_path, coding.text[:80])
    assert script("compress", source, packed, *shared, cwd=tmp_path).returncode == 0
    result = script("decompress", packed, restored, *shared, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out.txt").read_text() == coding.text[:80]


def test_the_table_writes_its_files_and_the_readme_block(coding, tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\n{TABLE_BEGIN}\nold\n{TABLE_END}\n\nafter\n")
    argv = ["--checkpoint", coding.checkpoint, "--data", coding.text_path, "--report", coding.report]
    argv += ["--models", "neural,kn,mixture-dynamic", "--out-dir", tmp_path / "reports", "--readme", readme]
    code, err = call(capsys, table_cli.main, *map(str, argv))
    assert code == 0, err
    result = json.loads((tmp_path / "reports" / "compression.json").read_text())
    assert [row["kind"] for row in result["models"]] == ["neural", "kn", "mixture-dynamic"]
    assert result["characters"] == len(coding.text) - len(coding.sources().train_ids)
    assert all(row["within_slack"] for row in result["models"])
    labels = [row["label"] for row in result["general"]]
    assert labels == ["gzip -9", "bzip2 -9", "xz -9e", "zstd --ultra -22"]
    markdown = (tmp_path / "reports" / "COMPRESSION.md").read_text()
    block = readme.read_text()
    assert "| mixture-dynamic |" in markdown and "old" not in block and block.endswith(f"{TABLE_END}\n\nafter\n")
    assert markdown.split("\n\n", 2)[-1].strip() in block


def test_the_table_refuses_a_readme_without_its_markers(coding, tmp_path, capsys):
    (tmp_path / "README.md").write_text("no markers\n")
    argv = ["--checkpoint", coding.checkpoint, "--data", coding.text_path, "--models", "kn"]
    argv += ["--out-dir", tmp_path, "--readme", tmp_path / "README.md", "--report", coding.report]
    assert_in_process_error(call(capsys, table_cli.main, *map(str, argv)), 1, "must hold the markers")
