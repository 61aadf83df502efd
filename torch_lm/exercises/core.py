"""What an exercise check is made of: the ``Exercise`` record, the verdict of one check
(``Result``), and ``expect``, which compares a learner's value with the other engine's and, when
they differ, names the likely cause.

A check function receives the learner's namespace and returns normally when every case passes; it
raises ``Todo`` (not written yet), ``Failure`` (a value differs: the ``Mismatch`` and its cause)
or lets a ``LearnerError`` through (the learner's code raised).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from torch_lm.parity import Mismatch, mismatches
from torch_lm.parity.causes import agrees, likely_cause

# A learner's float64 NumPy code agrees with the torch twin to ~1e-15; the float64 parity
# tolerance (docs/DESIGN.md §2) still catches every mistake in the catalogue by orders of magnitude.
RTOL, ATOL = 1e-7, 1e-9
NO_KNOWN_CAUSE = "no known mistake matches: compare the code with the formula entry by entry"


@dataclass(frozen=True)
class Mistake:
    """A known wrong way to write an exercise: ``compute`` does what the mistaken code does, from
    the same arguments; ``cause`` says what it is and what the right line is."""

    cause: str
    compute: Callable


@dataclass(frozen=True)
class Exercise:
    """One exercise of a sheet: its id (``nn1`` … ``nn10``, ``3.5`` … ``3.8``), what the learner
    defines (``names``, ``signature``) and the check that runs it."""

    id: str
    title: str
    names: tuple[str, ...]
    signature: str
    check: Callable[[Mapping], None] = field(repr=False)


@dataclass(frozen=True)
class Result:
    """The verdict on one exercise: PASS, TODO (``detail`` says what is missing) or FAIL (the first
    mismatch and its likely cause, or ``detail`` naming what the learner's code raised)."""

    id: str
    status: str
    quantity: str | None = None
    expected: str | None = None
    got: str | None = None
    cause: str | None = None
    detail: str | None = None

    @classmethod
    def from_failure(cls, exercise_id: str, failure: Failure) -> Result:
        m = failure.mismatch
        return cls(exercise_id, "FAIL", m.where(), m.expected_text(), m.got_text(), failure.cause)

    def line(self) -> str:
        """``<id> PASS``, ``<id> TODO: …`` or ``<id> FAIL <quantity>: expected … got …; <cause>``."""
        if self.status == "PASS":
            return f"{self.id} PASS"
        if self.status == "TODO":
            return f"{self.id} TODO: {self.detail}"
        what = self.detail if self.quantity is None else f"{self.quantity}: expected {self.expected} got {self.got}"
        return f"{self.id} FAIL {what}; {self.cause}"

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


class Failure(Exception):
    """A learner's value differs from the expected one: the mismatch and its likely cause."""

    def __init__(self, mismatch: Mismatch, cause: str):
        super().__init__(f"{mismatch}; {cause}")
        self.mismatch, self.cause = mismatch, cause


def expect(
    got,
    expected,
    quantity: str,
    mistakes: Sequence[Mistake] = (),
    args: tuple = (),
    factors: Mapping[str, float] | None = None,
    also: Sequence[tuple[object, tuple]] = (),
) -> None:
    """Raise ``Failure`` unless ``got`` equals ``expected`` (shape included, rtol 1e-7).

    The cause is the catalogued mistake whose ``compute(*args)`` equals what was got, else the
    generic pattern ``torch_lm.parity.causes`` finds (``factors`` names the scales it may blame).
    ``also`` holds the learner's answers on other cases, ``(got, args)``: when several mistakes
    reproduce this answer, the ones that reproduce those too are named.
    """
    got_array = _numeric(got, quantity, expected)
    found = mismatches(got_array, np.asarray(expected, np.float64), quantity, rtol=RTOL, atol=ATOL, check_dtype=False)
    if not found:
        return
    mismatch = found[0]
    raise Failure(mismatch, diagnose(got_array, mismatch, mistakes, args, factors, also))


def diagnose(got, mismatch: Mismatch, mistakes: Sequence[Mistake], args: tuple, factors, also=()) -> str:
    """The cause of ``mismatch``: the catalogued mistakes that reproduce ``got`` (narrowed by the
    answers in ``also``; several when no case tells them apart), else a generic pattern."""
    matching = [m for m in mistakes if _reproduces(m, got, args)]
    narrowed = [m for m in matching if all(_reproduces(m, other, other_args) for other, other_args in also)]
    causes = list(dict.fromkeys(m.cause for m in (narrowed or matching)))
    if causes:
        return " or ".join(causes)
    return likely_cause(mismatch, factors) or NO_KNOWN_CAUSE


def _reproduces(mistake: Mistake, got, args: tuple) -> bool:
    try:
        with np.errstate(all="ignore"):
            wrong = mistake.compute(*args)
    except Exception:  # the mistaken code would not even run on these arguments
        return False
    return agrees(got, wrong)


def fail(quantity: str, expected: str, got: str, cause: str) -> Failure:
    """A ``Failure`` for a property rather than a value (a shape, a count, a missing theme)."""
    return Failure(Mismatch(quantity, None, expected, got, kind="property"), cause)


def _numeric(value, quantity: str, expected) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise fail(
            quantity, f"numbers shaped {np.shape(expected)}", type(value).__name__, "return a NumPy array"
        ) from None
    return array
