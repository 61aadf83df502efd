"""What every command shares: the one-line-error parser, the exit codes, the value types.

Every failure is one line on stderr, ``<prog>: error: <what went wrong and what to do>``, never
a traceback. One mapping (``exit_code``) gives the exit code of how a command ended:

* 2 — a bad value given on the command line: argparse's own errors, a value that a config check
  refuses before any work starts (``command_line_values``), an unknown or unavailable device, a
  prompt with characters outside the vocabulary (``UsageError``);
* 1 — a failure while running: the text is missing (offline) or corrupt, a checkpoint is
  unreadable or does not fit the data, the loss diverged, a file could not be written, any other
  ``ValueError``, ``OSError``, ``RuntimeError`` or ``ImportError`` raised by the work;
* 130 — interrupted by SIGINT (Ctrl-C), 143 by SIGTERM (128 + the signal); training saved
  ``last.pt`` first.

``run_command`` runs a command's work under that mapping; ``check`` keeps its own meaning of 1 (an
exercise failed). Anything else a command raises is a bug and keeps its traceback.

A command is named once: ``scripts/<name>.py`` and the console script ``torch-lm-<name>`` (with
dashes) run the same ``main``; ``--help`` and error lines name whichever was invoked.

This module imports neither NumPy nor torch, so a command can set thread variables before they
load (``torch_lm.cli.bench``).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from numpy_ref.validation import (
    check_nonnegative_float,
    check_nonnegative_int,
    check_positive_float,
    check_positive_int,
    check_probability,
)

EXIT_USAGE, EXIT_FAILURE, EXIT_INTERRUPTED = 2, 1, 130
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


class OneLineParser(argparse.ArgumentParser):
    """argparse with one-line errors: ``<prog>: error: <message>`` and exit code 2, no usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def command_name(script: str) -> str:
    """The name a command was invoked by: ``<script>.py`` or its console script
    ``torch-lm-<script>`` (underscores as dashes); ``<script>.py`` when called from Python."""
    invoked = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    console = "torch-lm-" + script.replace("_", "-")
    return invoked if invoked in (f"{script}.py", console) else f"{script}.py"


def parser_for(script: str, description: str, **kwargs) -> OneLineParser:
    """The parser of ``scripts/<script>.py`` / ``torch-lm-<script>``, named as it was invoked."""
    return OneLineParser(prog=command_name(script), description=description, **kwargs)


def set_thread_variables(count: int, keep_given: bool = False) -> None:
    """Ask the BLAS and OpenMP pools for ``count`` threads; ``keep_given`` leaves variables the
    user set alone. Only effective before NumPy and torch are imported: they read them once."""
    for name in THREAD_VARIABLES:
        if not (keep_given and name in os.environ):
            os.environ[name] = str(count)


def fail(parser: argparse.ArgumentParser, message: str, code: int) -> int:
    """Print ``<prog>: error: <message>`` (first line only) to stderr and return ``code``."""
    first_line = str(message).strip().splitlines()[0] if str(message).strip() else "failed"
    print(f"{parser.prog}: error: {first_line}", file=sys.stderr)
    return code


# ---------------------------------------------------------------------------------------------
# How a command ended -> its exit code
# ---------------------------------------------------------------------------------------------

# Failures while running: the text, a checkpoint, a file, a diverged loss, a missing package.
RUN_FAILURES = (ValueError, OSError, RuntimeError, ImportError)


class UsageError(ValueError):
    """A value given on the command line that the command refuses: exit 2, like argparse's errors.

    Raised by ``command_line_values`` for the checks it wraps, and by a command itself for a value
    it can only judge once it has loaded something (a prompt against a checkpoint's vocabulary).
    """


@contextlib.contextmanager
def command_line_values() -> Iterator[None]:
    """Wrap the checks of what the command line gave, before any work starts: a ``ValueError``
    raised inside (a config refusing a value, an unknown device) leaves as ``UsageError``.

    Only checks of the arguments belong inside: a ``ValueError`` of the work itself (a corrupt
    file, a checkpoint that does not fit) is a failure while running, exit 1.
    """
    try:
        yield
    except ValueError as error:
        raise UsageError(str(error)) from None


def exit_code(error: BaseException) -> int | None:
    """The exit code of a command that ended by raising ``error``; None if it is not a command
    error (a bug), which then keeps its traceback.

    ``UsageError`` 2; ``KeyboardInterrupt`` 130; an exception that carries the signal that stopped
    the run (``signum``, as ``TrainingInterrupted`` does) 128 + signum; ``RUN_FAILURES`` 1.
    """
    if isinstance(error, UsageError):
        return EXIT_USAGE
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    signum = getattr(error, "signum", None)
    if isinstance(signum, int) and not isinstance(signum, bool):
        return 128 + signum
    if isinstance(error, RUN_FAILURES):
        return EXIT_FAILURE
    return None


def run_command(parser: argparse.ArgumentParser, work: Callable[[], int | None]) -> int:
    """Run a command's ``work`` and return its exit code: the code ``work`` returns (None: 0), or
    ``exit_code`` of what it raised, with one line on stderr (``fail``) and no traceback."""
    try:
        code = work()
    except BaseException as error:
        code = exit_code(error)
        if code is None:
            raise
        return fail(parser, "interrupted" if isinstance(error, KeyboardInterrupt) else str(error), code)
    return 0 if code is None else code


# ---------------------------------------------------------------------------------------------
# Value types: parse, then apply the project's validation helpers
# ---------------------------------------------------------------------------------------------


def checked(parse: Callable[[str], Any], check: Callable[[str, str, Any], Any], what: str) -> Callable[[str], Any]:
    """An argparse ``type`` that parses a string and validates it with a ``validation`` helper."""

    def convert(text: str) -> Any:
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        try:
            return check("", "value", value)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error).removeprefix(": ")) from None

    return convert


POSITIVE_INT = checked(int, check_positive_int, "a positive integer")
NONNEGATIVE_INT = checked(int, check_nonnegative_int, "an integer >= 0")
POSITIVE_FLOAT = checked(float, check_positive_float, "a positive number")
NONNEGATIVE_FLOAT = checked(float, check_nonnegative_float, "a number >= 0")
PROBABILITY = checked(float, check_probability, "a probability in [0, 1)")


def int_list(text: str) -> tuple[int, ...]:
    """``"2,2,2"`` -> ``(2, 2, 2)``; ``""`` or ``"none"`` -> ``()`` (the flat MLP)."""
    if text.strip().lower() in ("", "none"):
        return ()
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 2,2,2, got {text!r}") from None


def positive_int_list(text: str) -> tuple[int, ...]:
    """``"1,2,4"`` -> (1, 2, 4): distinct positive integers, kept in the given order."""
    values = int_list(text)
    if not values or min(values) < 1 or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"expected distinct positive integers such as 1,2,4, got {text!r}")
    return values


def choice_list(choices: Sequence[str]) -> Callable[[str], tuple[str, ...]]:
    """An argparse ``type`` for comma-separated names, each one of ``choices``."""

    def parse(text: str) -> tuple[str, ...]:
        names = tuple(text.split(","))
        unknown = [name for name in names if name not in choices]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown value {unknown[0]!r}; choose from {','.join(choices)}")
        return names

    return parse


def float_pair(text: str) -> tuple[float, float]:
    """``"0.9,0.99"`` -> ``(0.9, 0.99)``."""
    try:
        first, second = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected two comma-separated numbers such as 0.9,0.99, got {text!r}"
        ) from None
    return first, second


def open_interval(low: float, high: float) -> Callable[[str], float]:
    """An argparse ``type`` for a number strictly between ``low`` and ``high``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not low < value < high:
            raise argparse.ArgumentTypeError(f"expected a number in ({low:g}, {high:g}), got {text!r}")
        return value

    return parse
