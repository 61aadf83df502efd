"""``check``: check a learner's own code against both exercise sheets (``scripts/check.py``,
``torch-lm-check``).

One line per exercise on stdout (``--json`` for machines); exit 0 when nothing fails (an
exercise not written yet is TODO, not a failure), 1 when an exercise fails, 2 when the file cannot
be imported or an argument is wrong, each with one line on stderr and no traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from torch_lm.cli.parsing import EXIT_FAILURE, OneLineParser, UsageError, command_line_values, parser_for, run_command


def build_parser() -> OneLineParser:
    parser = parser_for(
        "check",
        description="Check your solutions to the Neural Networks exercises (nn1-nn10) and Stage 3 "
        "(3.5-3.8) against the torch twins: PASS, TODO or FAIL with the likely cause, per exercise.",
    )
    parser.add_argument("file", nargs="?", metavar="FILE.py", help="your solutions, under the stubs' names")
    parser.add_argument("--only", nargs="+", metavar="ID", help="check only these exercises (e.g. nn1 3.5)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--list", action="store_true", help="print every exercise's id, names and signature")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``check``: run the checks on FILE.py and print one verdict per exercise."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_command(parser, lambda: check(args))


def check(args) -> int:
    """The work of ``check``: the list, or the verdicts on the file; 1 if an exercise fails. A file
    that cannot be imported and an unknown exercise id are bad values on the command line."""
    from torch_lm.exercises.checker import EXERCISES, report_json, run_checks, select
    from torch_lm.exercises.learner import LoadError

    if args.list:
        for exercise in EXERCISES:
            print(f"{exercise.id:<5} {exercise.title:<26} {exercise.signature}")
        return 0
    if args.file is None:
        raise UsageError("give the file to check (FILE.py), or --list")
    with command_line_values():
        select(args.only)
    try:
        results = run_checks(args.file, args.only)
    except LoadError as error:
        raise UsageError(str(error)) from None
    if args.json:
        print(report_json(results, args.file))
    else:
        for result in results:
            print(result.line())
    sys.stdout.flush()
    return EXIT_FAILURE if any(r.status == "FAIL" for r in results) else 0
