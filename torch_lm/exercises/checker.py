"""Checking a learner's code: every exercise of both sheets found in a file, a module or a
notebook's namespace, one verdict each.

``run_checks(source, ids)`` returns the ``Result`` of every exercise asked for (all of them by
default), in the sheets' order; ``check(source, *ids)`` prints one line per exercise, which is
what a notebook's check cell calls. ``EXERCISES`` is the table of ids, names and signatures the
README prints.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from torch_lm.exercises import neural_networks, stage3
from torch_lm.exercises.core import Exercise, Failure, Result
from torch_lm.exercises.learner import LearnerError, Todo, load_namespace
from torch_lm.strict_json import dumps

EXERCISES: list[Exercise] = neural_networks.EXERCISES + stage3.EXERCISES
BY_ID = {exercise.id: exercise for exercise in EXERCISES}

# What an exception raised by the learner's code most likely means, by its message.
RAISED_CAUSES = [
    (
        r"could not be broadcast",
        "shapes that do not line up: a reduction without keepdims=True, or a product of the wrong pair",
    ),
    (
        r"mismatch in its core dimension|shapes .* not aligned",
        "a matrix product in the wrong order, or of a transposed matrix (W is (out, in))",
    ),
    (
        r"has no attribute 'W_grad'",
        "self.W_grad is used before it exists: create it in __init__ as np.zeros_like(self.W)",
    ),
    (
        r"takes .* positional argument|unexpected keyword argument|missing .* required",
        "the signature differs from the exercise's (torch-lm-check --list)",
    ),
    (r"returned None", "the value is computed but not returned"),
    (r"index .* out of bounds|out of range", "an index out of range: check which axis holds what"),
]
RAISED_FALLBACK = "the code raised on the checker's inputs; run it on them to see where"


def select(ids: Iterable[str] | None) -> list[Exercise]:
    """The exercises with these ids, in the sheets' order; every one when ``ids`` is empty."""
    ids = list(ids or [])
    unknown = [i for i in ids if i not in BY_ID]
    if unknown:
        raise ValueError(f"unknown exercise id {unknown[0]!r}; the ids are {', '.join(BY_ID)}")
    return [e for e in EXERCISES if not ids or e.id in ids]


def run_checks(source, ids: Iterable[str] | None = None) -> list[Result]:
    """The verdict on every exercise asked for; ``source`` is a path, a module or a namespace."""
    chosen = select(ids)
    namespace = load_namespace(source)
    return [run_one(exercise, namespace) for exercise in chosen]


def run_one(exercise: Exercise, namespace) -> Result:
    """PASS, TODO or FAIL for one exercise."""
    try:
        exercise.check(namespace)
    except Todo as todo:
        return Result(exercise.id, "TODO", detail=str(todo))
    except Failure as failure:
        return Result.from_failure(exercise.id, failure)
    except LearnerError as error:
        return Result(exercise.id, "FAIL", cause=raised_cause(error), detail=str(error).splitlines()[0])
    return Result(exercise.id, "PASS")


def raised_cause(error: LearnerError) -> str:
    message = str(error.error)
    for pattern, cause in RAISED_CAUSES:
        if re.search(pattern, message):
            return cause
    return RAISED_FALLBACK


def check(source, *ids: str) -> None:
    """Print one line per exercise: ``<id> PASS``, ``<id> TODO: …`` or ``<id> FAIL …; <cause>``.

    In a notebook, ``check(globals(), "nn1")`` checks the exercise just written.
    """
    for result in run_checks(source, ids):
        print(result.line())


def report_json(results: list[Result], source: str) -> str:
    counts = {status: sum(r.status == status for r in results) for status in ("PASS", "TODO", "FAIL")}
    return dumps({"source": source, "counts": counts, "results": [r.to_json() for r in results]}, indent=2)
