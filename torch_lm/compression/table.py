"""The compression table: every model kind compresses and decompresses the val text, beside the
general-purpose compressors on the same bytes (``run_table(TableSpec(...))``, ``torch-lm-compression-table``).

Each model row gives the file's size, bits per character, the code length the model promised
(sum of -log2 p over the characters, /8), the coder's overhead (the difference: header, the
quantised frequencies, the coder's last word), whether the file is within 0.1 % + 64 bytes of the
promise, and the seconds to compress and to decompress, in this process (the predictor's set-up
included: fitting the count model, the dynamic evaluation's gradient scales; loading the checkpoint
and the text not). Every row is a round trip: a decoded text that differs from the val text stops
the table.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from numpy_ref.validation import fail
from torch_lm.compression.codec import Sources, compress, decompress, timed
from torch_lm.compression.models import DEFAULT_REPORT, KINDS, read_report, settings_from_report, uses_train
from torch_lm.strict_json import dumps
from torch_lm.training.checkpoint import DEFAULT_CHECKPOINT

# (label, command): each reads the bytes on stdin and writes its compressed form to stdout
GENERAL_COMPRESSORS = (
    ("gzip -9", ["gzip", "-9", "-c"]),
    ("bzip2 -9", ["bzip2", "-9", "-c"]),
    ("xz -9e", ["xz", "-9e", "-c"]),
    ("zstd --ultra -22", ["zstd", "--ultra", "-22", "-c", "-q"]),
)
SLACK_FRACTION, SLACK_BYTES = 0.001, 64  # a file within 0.1 % + 64 bytes of what the model promised
TABLE_BEGIN, TABLE_END = "<!-- compression table -->", "<!-- end of compression table -->"


@dataclass(frozen=True)
class TableSpec:
    """Which checkpoint, data, report settings and model kinds; where the table goes; the README
    whose marked block gets the table (None: leave it)."""

    checkpoint: str = DEFAULT_CHECKPOINT
    data: str | None = None
    report: str = DEFAULT_REPORT
    kinds: tuple[str, ...] = KINDS
    out_dir: str = "reports"
    readme: str | None = "README.md"


@dataclass
class ModelRow:
    kind: str
    settings: str
    characters: int
    bytes: int
    bits_per_char: float
    promised_bytes: float
    overhead_bytes: float
    within_slack: bool
    compress_seconds: float
    decompress_seconds: float


@dataclass
class GeneralRow:
    label: str
    bytes: int | None
    bits_per_char: float | None
    seconds: float | None
    note: str = ""


@dataclass
class Table:
    characters: int
    models: list[ModelRow] = field(default_factory=list)
    general: list[GeneralRow] = field(default_factory=list)


def val_text(sources: Sources) -> str:
    """The val text: the characters after the train split of the data file."""
    sources.load_train()
    return sources.vocab.decode(sources.val_ids)


def general_row(label: str, command: list[str], data: bytes, characters: int) -> GeneralRow:
    """One general-purpose compressor on ``data``, the UTF-8 of ``characters`` characters; a row
    saying why not if it is not installed."""
    if shutil.which(command[0]) is None:
        return GeneralRow(label, None, None, None, f"{command[0]} not installed")
    start = time.perf_counter()
    out = subprocess.run(command, input=data, capture_output=True, check=True).stdout
    seconds = time.perf_counter() - start
    return GeneralRow(label, len(out), 8 * len(out) / characters, seconds)


def model_row(kind: str, text: str, sources: Sources, report: dict | None, report_path: str) -> ModelRow:
    """Compress and decompress ``text`` with ``kind``; fail if the round trip is not exact."""
    if uses_train(kind):
        sources.load_train()
    settings = settings_from_report(kind, report, sources.data, report_path)
    compressed, compress_seconds = timed(lambda: compress(text, settings, sources))
    decoded, decompress_seconds = timed(lambda: decompress(compressed.data, sources))
    if decoded != text:
        fail("compression table", f"{kind}: the decoded text differs from the val text")
    size, promised = len(compressed.data), compressed.ideal_bits / 8
    return ModelRow(
        kind,
        settings.describe(),
        len(text),
        size,
        8 * size / len(text),
        promised,
        size - promised,
        size <= promised * (1 + SLACK_FRACTION) + SLACK_BYTES,
        compress_seconds,
        decompress_seconds,
    )


def run_table(spec: TableSpec, log=print) -> Table:
    """Every row, then ``compression.json`` and ``COMPRESSION.md`` in ``spec.out_dir`` and the
    README's marked block."""
    sources = Sources.load(spec.checkpoint, spec.data)
    text = val_text(sources)
    table, report = Table(len(text)), read_report(spec.report)
    for label, command in GENERAL_COMPRESSORS:
        table.general.append(general_row(label, command, text.encode("utf-8"), len(text)))
        log(f"{label}: {table.general[-1].bytes} bytes")
    for kind in spec.kinds:
        table.models.append(model_row(kind, text, sources, report, spec.report))
        row = table.models[-1]
        log(
            f"{kind}: {row.bytes:,} bytes, {row.bits_per_char:.4f} bits/char, "
            f"{row.compress_seconds:.1f} s / {row.decompress_seconds:.1f} s"
        )
    out = Path(spec.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compression.json").write_text(dumps(asdict(table), indent=2) + "\n")
    markdown = to_markdown(table)
    (out / "COMPRESSION.md").write_text(heading(table) + markdown)
    if spec.readme is not None:
        replace_block(Path(spec.readme), markdown)
    return table


def heading(table: Table) -> str:
    return (
        "# Compression of the val text\n\n"
        "Written by `python scripts/compression_table.py`. Each model drives a range coder over the "
        f"{table.characters:,}-character val text, and every file decodes back to it exactly; the general "
        "compressors read the same bytes.\n\n"
    )


def to_markdown(table: Table) -> str:
    """The two tables (models, general compressors) and the best model against the best general one."""
    n = table.characters
    lines = [
        "| model | bytes | bits/char | Σ −log₂ p / 8 | overhead (bytes) | within 0.1 % + 64 B | compress (s) | decompress (s) |",
        "|---|---:|---:|---:|---:|:---:|---:|---:|",
    ]
    for r in table.models:
        lines.append(
            f"| {r.kind} | {r.bytes:,} | {r.bits_per_char:.4f} | {r.promised_bytes:,.1f} | {r.overhead_bytes:.1f} | "
            f"{'yes' if r.within_slack else 'no'} | {r.compress_seconds:.1f} | {r.decompress_seconds:.1f} |"
        )
    lines += ["", "| general compressor | bytes | bits/char | seconds |", "|---|---:|---:|---:|"]
    for g in table.general:
        if g.bytes is None:
            lines.append(f"| {g.label} | — | — | {g.note} |")
        else:
            lines.append(f"| {g.label} | {g.bytes:,} | {g.bits_per_char:.4f} | {g.seconds:.2f} |")
    measured = [g for g in table.general if g.bytes is not None]
    if measured and table.models:
        best_general = min(measured, key=lambda g: g.bytes)
        best_model = min(table.models, key=lambda r: r.bytes)
        saving = 1 - best_model.bytes / best_general.bytes
        lines += [
            "",
            f"On {n:,} characters the smallest file, {best_model.kind}'s {best_model.bytes:,} bytes, is "
            f"{saving:.1%} smaller than the best general compressor's ({best_general.label}, {best_general.bytes:,} bytes).",
        ]
    return "\n".join(lines) + "\n"


def replace_block(path: Path, markdown: str) -> None:
    """Put ``markdown`` between the README's table markers (both must be there, once)."""
    text = path.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(TABLE_BEGIN) + r"\n.*?" + re.escape(TABLE_END), re.DOTALL)
    if len(pattern.findall(text)) != 1:
        fail("compression table", f"{path} must hold the markers {TABLE_BEGIN} and {TABLE_END} once each")
    path.write_text(pattern.sub(lambda _: f"{TABLE_BEGIN}\n{markdown}{TABLE_END}", text), encoding="utf-8")
