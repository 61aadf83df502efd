"""``run_notebooks``: execute the exercise notebooks top to bottom and write their outputs
(``scripts/run_notebooks.py``, ``torch-lm-run-notebooks``); ``--fast`` runs the short versions
without writing, as the test suite does."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

from torch_lm.cli.parsing import OneLineParser, parser_for, run_command


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
    return run_command(parser, lambda: run_all(args.fast))


def run_all(fast: bool) -> None:
    """The work of ``run_notebooks``: every notebook in turn; a missing executor or a failing cell
    is a failure while running."""
    from torch_lm.reports.notebooks import notebook_paths, run_notebook

    for path in notebook_paths():
        began = time.perf_counter()
        try:
            run_notebook(path, fast=fast, write=not fast)
        except ImportError as error:
            raise ImportError(f'{error}; install the executor with pip install -e ".[notebooks]"') from None
        except Exception as error:  # a failing cell: the last line of nbclient's CellExecutionError names it
            lines = str(error).strip().splitlines() or [type(error).__name__]
            raise RuntimeError(f"{path.name}: {lines[-1]}") from None
        print(
            f"{path.name}: ran in {time.perf_counter() - began:.0f} s{'' if fast else ', outputs written'}",
            file=sys.stderr,
        )
