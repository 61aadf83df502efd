"""``ngram_baselines``: count n-gram baselines on Tiny Shakespeare under the held-out protocol
(``scripts/ngram_baselines.py``, ``torch-lm-ngram-baselines``); the models and the table are
``torch_lm.reports.ngram_baselines``.

    python scripts/ngram_baselines.py
    python scripts/ngram_baselines.py --orders 3,5,7 --smoothing kn,mkn --engine torch --json
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from torch_lm.cli.parsing import (
    NONNEGATIVE_FLOAT,
    POSITIVE_INT,
    OneLineParser,
    choice_list,
    command_line_values,
    open_interval,
    parser_for,
    positive_int_list,
    run_command,
)
from torch_lm.reports.ngram_baselines import (
    ENGINES,
    SMOOTHINGS,
    BaselineSpec,
    check_settings,
    format_table,
    read_ids,
    score_baselines,
    to_json,
)
from torch_lm.training.text import DEFAULT_DATA_PATH, DataError


def build_parser() -> OneLineParser:
    parser = parser_for(
        "ngram_baselines",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Count n-gram baselines on Tiny Shakespeare under the held-out protocol (docs/DESIGN.md §3, §5).",
    )
    parser.add_argument("--data", default=str(DEFAULT_DATA_PATH), help="UTF-8 text file")
    parser.add_argument(
        "--orders",
        type=positive_int_list,
        help="comma-separated orders, e.g. 3,5,7 "
        "(default with --smoothing: 3,5,7; neither: the docs/DESIGN.md §5 reference table)",
    )
    parser.add_argument(
        "--smoothing",
        dest="smoothings",
        type=choice_list(SMOOTHINGS),
        help="comma-separated, from addk,kn,mkn (default with --orders: mkn)",
    )
    parser.add_argument("--k", type=NONNEGATIVE_FLOAT, default=0.1, help="add-k pseudo-count (0 = unsmoothed)")
    parser.add_argument(
        "--discount",
        type=open_interval(0.0, 1.0),
        default=0.75,
        help="Kneser-Ney discount D (also modified KN's fallback)",
    )
    parser.add_argument("--engine", choices=ENGINES, default="numpy")
    parser.add_argument("--device", default="cpu", help="torch device for --engine torch")
    parser.add_argument("--threads", type=POSITIVE_INT, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    spec = BaselineSpec(
        data=args.data,
        orders=args.orders,
        smoothings=args.smoothings,
        k=args.k,
        discount=args.discount,
        engine=args.engine,
        device=args.device,
        threads=args.threads,
    )
    return run_command(parser, lambda: baselines(spec, args.json))


def baselines(spec: BaselineSpec, as_json: bool) -> None:
    """The work of ``ngram_baselines``: read the text, check the settings against its vocabulary
    (and the torch engine's device), fit and score, print."""
    path = Path(spec.data)
    if not path.is_file():
        raise DataError(f"--data: no file at {path}; run python scripts/download_data.py or pass --data PATH")
    ids, vocab_size = read_ids(path)
    with command_line_values():
        check_settings(spec, vocab_size)
        if spec.engine == "torch":
            from torch_lm.training.config import resolve_device  # torch only for the torch engine

            resolve_device(spec.device)
    rows = score_baselines(spec, ids, vocab_size)
    print(to_json(rows) if as_json else format_table(rows))
