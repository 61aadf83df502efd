"""``run_notebooks``: execute the exercise notebooks top to bottom and write their outputs
(``scripts/run_notebooks.py``, ``torch-lm-run-notebooks``); ``--fast`` runs the short versions
without writing, as the test suite does."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

from torch_lm.cli.parsing import EXIT_FAILURE, OneLineParser, fail, parser_for


def build_parser() -> OneLineParser:
    parser = parser_for(
        "run_notebooks",
        description="Execute notebooks/*.ipynb top to bottom in a fresh "
        'kernel and write their outputs (needs pip install -e ".[notebooks]").',
    )
    parser.add_argument(
        "--fast", action="store_true", help="small step budgets (TORCH_LM_NOTEBOOK_FAST=1), outputs not written"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from torch_lm.reports.notebooks import notebook_paths, run_notebook

    for path in notebook_paths():
        began = time.perf_counter()
        try:
            run_notebook(path, fast=args.fast, write=not args.fast)
        except ImportError as error:
            return fail(parser, f'{error}; install the executor with pip install -e ".[notebooks]"', EXIT_FAILURE)
        except Exception as error:  # a failing cell: nbclient's CellExecutionError names it
            return fail(parser, f"{path.name}: {str(error).strip().splitlines()[-1]}", EXIT_FAILURE)
        print(
            f"{path.name}: ran in {time.perf_counter() - began:.0f} s{'' if args.fast else ', outputs written'}",
            file=sys.stderr,
        )
    return 0
