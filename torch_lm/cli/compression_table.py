"""``compression_table``: every model kind and the general-purpose compressors on the val text,
into ``reports/COMPRESSION.md``, ``reports/compression.json`` and the README's table
(``scripts/compression_table.py``, ``torch-lm-compression-table``)."""

from __future__ import annotations

from collections.abc import Sequence

from torch_lm.cli.parsing import OneLineParser, choice_list, parser_for, run_command
from torch_lm.compression.models import DEFAULT_REPORT, KINDS
from torch_lm.compression.table import TableSpec, run_table
from torch_lm.training.checkpoint import DEFAULT_CHECKPOINT


def build_parser() -> OneLineParser:
    parser = parser_for(
        "compression_table",
        description="Compress and decompress the val text with every model; compare with gzip, bzip2, xz, zstd.",
    )
    parser.add_argument(
        "--checkpoint", default=DEFAULT_CHECKPOINT, metavar="PATH", help="the trained NeuralLM (default: %(default)s)"
    )
    parser.add_argument("--data", metavar="PATH", help="text file (default: Tiny Shakespeare in data/)")
    parser.add_argument(
        "--report",
        default=DEFAULT_REPORT,
        metavar="PATH",
        help="the settings chosen on the train slice (default: %(default)s)",
    )
    parser.add_argument(
        "--models",
        type=choice_list(KINDS),
        default=KINDS,
        metavar="KINDS",
        help=f"comma-separated, from {','.join(KINDS)}",
    )
    parser.add_argument(
        "--out-dir", default="reports", metavar="DIR", help="where the table goes (default: %(default)s)"
    )
    parser.add_argument(
        "--readme", default="README.md", metavar="PATH", help="the README whose marked table is replaced ('' for none)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    spec = TableSpec(args.checkpoint, args.data, args.report, args.models, args.out_dir, args.readme or None)
    return run_command(parser, lambda: run_table(spec) and None)
