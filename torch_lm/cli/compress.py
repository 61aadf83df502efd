"""``compress``: a text file into a file a model codes (``scripts/compress.py``,
``torch-lm-compress``); ``decompress`` is its inverse. The work is ``torch_lm.compression``."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from torch_lm.cli.parsing import OneLineParser, command_line_values, parser_for, run_command
from torch_lm.compression.codec import Sources, compress, timed
from torch_lm.compression.models import (
    DEFAULT_KIND,
    DEFAULT_REPORT,
    KINDS,
    read_report,
    settings_from_report,
    uses_train,
)
from torch_lm.training.checkpoint import DEFAULT_CHECKPOINT
from torch_lm.training.text import read_text, write_atomically


def add_common_arguments(parser: OneLineParser) -> None:
    """The arguments ``compress`` and ``decompress`` share."""
    parser.add_argument("input", metavar="INPUT", help="the file to read")
    parser.add_argument("output", metavar="OUTPUT", help="the file to write (replaced atomically)")
    parser.add_argument(
        "--checkpoint", default=DEFAULT_CHECKPOINT, metavar="PATH", help="the trained NeuralLM (default: %(default)s)"
    )
    parser.add_argument(
        "--data", metavar="PATH", help="the text the count models fit on (default: Tiny Shakespeare in data/)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no summary line")


def build_parser() -> OneLineParser:
    parser = parser_for("compress", description="Compress a text with a model driving a range coder.")
    add_common_arguments(parser)
    parser.add_argument(
        "--model",
        choices=KINDS,
        default=DEFAULT_KIND,
        help="the model that predicts each character (default: %(default)s)",
    )
    parser.add_argument(
        "--report",
        default=DEFAULT_REPORT,
        metavar="PATH",
        help="where the settings chosen on the train slice are read from (default: %(default)s)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_command(parser, lambda: compress_file(args))


def compress_file(args) -> None:
    """Read, compress, write, and say what it cost."""
    text = read_text(args.input, allow_empty=True)
    sources = Sources.load(args.checkpoint, args.data)
    if uses_train(args.model):
        sources.load_train()
    with command_line_values():
        settings = settings_from_report(args.model, read_report(args.report), sources.data, args.report)
    compressed, seconds = timed(lambda: compress(text, settings, sources, progress=not args.quiet))
    write_atomically(Path(args.output), compressed.data)
    if not args.quiet:
        n, size = compressed.characters, len(compressed.data)
        promised = compressed.ideal_bits / 8
        print(
            f"{args.input}: {n:,} characters -> {size:,} bytes ({8 * size / max(n, 1):.4f} bits/char) with "
            f"{settings.describe()}; the model's -log2 p sums to {promised:,.1f} bytes, the file is "
            f"{size - promised:,.1f} more; {seconds:.1f} s",
            file=sys.stderr,
        )
