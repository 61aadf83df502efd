"""``download_data``: put Tiny Shakespeare into ``data/``, verified (``scripts/download_data.py``,
``torch-lm-download-data``)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from torch_lm.cli.parsing import OneLineParser, parser_for, run_command
from torch_lm.training.text import (
    DEFAULT_DATA_PATH,
    TINY_SHAKESPEARE_URL,
    DataError,
    download,
    install_from,
    verify_checksum,
)


def build_parser() -> OneLineParser:
    """The parser of ``download_data``."""
    parser = parser_for("download_data", description="Put Tiny Shakespeare into data/ and verify its sha256.")
    parser.add_argument(
        "--from", dest="source", metavar="FILE", help="install a local copy instead of downloading (also verified)"
    )
    parser.add_argument(
        "--dest", default=str(DEFAULT_DATA_PATH), metavar="PATH", help="where to put the text (default: %(default)s)"
    )
    parser.add_argument(
        "--url", default=TINY_SHAKESPEARE_URL, help="download from this URL, e.g. a mirror (default: the char-rnn copy)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``download_data``: install (``--from``) or download the text, verified, atomically."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_command(parser, lambda: put_text_in_place(args))


def put_text_in_place(args) -> None:
    """The work of ``download_data``: the local copy, or the copy already in place, or a download."""
    dest = Path(args.dest)
    if args.source is not None:
        install_from(args.source, dest)
        print(f"installed {args.source} as {dest} (sha256 verified)")
        return
    if dest.is_file():
        try:
            verify_checksum(dest.read_bytes(), str(dest))
            print(f"{dest} is already present (sha256 verified)")
            return
        except DataError:
            print(f"{dest} has the wrong checksum; downloading a fresh copy", file=sys.stderr)
    download(dest, args.url)
    print(f"downloaded {args.url} to {dest} (sha256 verified)")
