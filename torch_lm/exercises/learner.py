"""A learner's code as the checker meets it: loaded from a file, a module or a namespace, and
called so that what is not written yet reads as TODO and what goes wrong reads as a failure.

* ``load_namespace(source)``: a path to a ``.py`` file (imported under a private name, its prints
  sent to stderr), a module, or a dict such as a notebook's ``globals()``. A file that cannot be
  imported raises ``LoadError`` with one line.
* ``is_stub(function)``: its body is only a docstring, ``pass``, ``...`` or
  ``raise NotImplementedError`` (the starters' stubs).
* ``call(label, function, *args)``: the function's result; ``Todo`` for a stub or a
  ``NotImplementedError``, ``LearnerError`` for any other exception it raises. The learner's
  prints go to stderr, so the checker's own output stays one line per exercise.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib.util
import inspect
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType

import numpy as np


class LoadError(Exception):
    """The learner's file cannot be imported; the message is one line."""


class Todo(Exception):
    """The exercise is not written yet; the message says which part."""


class LearnerError(Exception):
    """The learner's code raised; ``label`` names the call, ``error`` is what it raised."""

    def __init__(self, label: str, error: BaseException):
        super().__init__(f"{label} raised {type(error).__name__}: {error}")
        self.label, self.error = label, error


def load_namespace(source) -> dict:
    """The names a learner defined: from a file path, a module or a mapping (see module docstring)."""
    if isinstance(source, Mapping):
        return dict(source)
    if isinstance(source, ModuleType):
        return vars(source)
    return vars(_import_file(Path(source)))


def _import_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise LoadError(f"{path}: no such file")
    name = "torch_lm_learner_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            spec.loader.exec_module(module)
    except SyntaxError as error:
        raise LoadError(f"{path}: cannot be imported: SyntaxError: {error.msg} (line {error.lineno})") from None
    except BaseException as error:  # the learner's top-level code failed: say what, in one line
        if isinstance(error, KeyboardInterrupt):
            raise
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise LoadError(f"{path}: cannot be imported: {type(error).__name__}: {first_line}") from None
    return module


def is_stub(function) -> bool:
    """True when ``function``'s body does nothing yet (see the module docstring); False when its
    source cannot be read, so it is then judged by what it does."""
    function = getattr(function, "__func__", function)
    try:
        source = textwrap.dedent(inspect.getsource(function))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError):
        return False
    definition = tree.body[0]
    if not isinstance(definition, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return False
    return all(_does_nothing(statement) for statement in definition.body)


def _does_nothing(statement: ast.stmt) -> bool:
    if isinstance(statement, ast.Pass):
        return True
    if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
        return True  # a docstring or ``...``
    if isinstance(statement, ast.Raise) and statement.exc is not None:
        raised = statement.exc.func if isinstance(statement.exc, ast.Call) else statement.exc
        return isinstance(raised, ast.Name) and raised.id == "NotImplementedError"
    return False


def require(namespace: Mapping, name: str):
    """``namespace[name]``, or ``Todo`` when the learner has not defined it."""
    if name not in namespace:
        raise Todo(f"{name} is not defined")
    return namespace[name]


def require_written(label: str, function) -> None:
    """``Todo`` when ``function`` is still a stub."""
    if is_stub(function):
        raise Todo(f"{label} is not written yet")


def call(label: str, function, *args, allow_none: bool = False, **kwargs):
    """``function(*args, **kwargs)`` with the learner's prints on stderr (see the module docstring).

    A result of None is returned as it is only with ``allow_none`` (a method that updates its
    object); otherwise it is a ``LearnerError`` naming the missing return.
    """
    require_written(label, function)
    try:
        # Overflow in the learner's code is reported as a failure with its cause, not as a warning.
        with contextlib.redirect_stdout(sys.stderr), np.errstate(all="ignore"):
            result = function(*args, **kwargs)
    except NotImplementedError:
        raise Todo(f"{label} raises NotImplementedError") from None
    except Exception as error:
        raise LearnerError(label, error) from None
    if result is None and not allow_none:
        raise LearnerError(label, ValueError("returned None: is the return statement missing?"))
    return result
