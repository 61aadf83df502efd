"""``decompress``: the inverse of ``compress`` (``scripts/decompress.py``, ``torch-lm-decompress``),
with the checkpoint (and, for the models fitted on it, the data) that compressed."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from torch_lm.cli.compress import add_common_arguments
from torch_lm.cli.parsing import OneLineParser, parser_for, run_command
from torch_lm.compression.codec import Sources, decompress, timed
from torch_lm.training.text import write_atomically


def build_parser() -> OneLineParser:
    parser = parser_for("decompress", description="Restore a text that compress wrote, byte for byte.")
    add_common_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_command(parser, lambda: decompress_file(args))


def decompress_file(args) -> None:
    """Read, check the header against the checkpoint and data, decode, check the text, write."""
    try:
        data = Path(args.input).read_bytes()
    except OSError as error:
        raise OSError(f"cannot read {args.input}: {error.strerror or error}") from None
    sources = Sources.load(args.checkpoint, args.data)
    text, seconds = timed(lambda: decompress(data, sources, progress=not args.quiet))
    write_atomically(Path(args.output), text.encode("utf-8"))
    if not args.quiet:
        print(f"{args.input}: {len(data):,} bytes -> {len(text):,} characters; {seconds:.1f} s", file=sys.stderr)
