"""Likely causes of a mismatch, read off the two values: the README's "How to read a parity
failure" as code.

``likely_cause(mismatch, factors)`` looks at the whole arrays a ``Mismatch`` carries and names
the first pattern that explains them exactly:

* a shape that is the expected one reversed: a transpose;
* inf or NaN where the expected value is finite: an overflow (exp of a large number), or -inf
  from the log of a probability that underflowed to 0;
* every entry off by one constant factor: a named one (1/N, 1/(1-p), 1/T, ln 2, 2, ...) when
  ``factors`` has it, a sign, or the bare constant;
* values equal to the transpose of the expected ones: a transpose;
* only some rows differing: indexing (which rows is said).

``None`` when no pattern fits; a caller with more knowledge (the exercise checker) tries its own
catalogue of mistakes first.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from torch_lm.parity.compare import Mismatch

# Agreement of a reconstructed value with what was got: looser than parity, since the mistaken
# computation may round differently from the code that made it.
_RTOL, _ATOL = 1e-6, 1e-9


def agrees(got, candidate) -> bool:
    """``got`` equals ``candidate`` up to rounding, shapes included (NaN never agrees)."""
    try:
        a, b = np.asarray(got, dtype=np.float64), np.asarray(candidate, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    if a.shape != b.shape:
        return False
    with np.errstate(invalid="ignore"):
        return bool(np.all((a == b) | (np.abs(a - b) <= _ATOL + _RTOL * np.abs(b))))


def likely_cause(mismatch: Mismatch, factors: Mapping[str, float] | None = None) -> str | None:
    """The first generic pattern that explains ``mismatch`` (see the module docstring), or None."""
    got, expected = mismatch.got_array, mismatch.expected_array
    if got is None or expected is None:
        return None
    if mismatch.kind == "shape":
        return _transposed_shape(got.shape, expected.shape)
    for detector in (_non_finite, lambda g, e: _constant_factor(g, e, factors or {}), _transposed, _some_rows):
        cause = detector(got.astype(np.float64, copy=False), expected.astype(np.float64, copy=False))
        if cause:
            return cause
    return None


def _transposed_shape(got: tuple, expected: tuple) -> str | None:
    if len(got) >= 2 and got == expected[::-1]:
        return f"a transpose: shape {got} where {expected} is expected"
    return None


def _non_finite(got: np.ndarray, expected: np.ndarray) -> str | None:
    finite_expected = np.isfinite(expected)
    if np.any(np.isneginf(got) & finite_expected):
        return "-inf where the value is finite: the log of a probability that underflowed to 0 (log-sum-exp avoids it)"
    if np.any(~np.isfinite(got) & finite_expected):
        return (
            "inf or nan where the value is finite: an overflow, as exp of a large number gives (subtract the max first)"
        )
    return None


def _constant_factor(got: np.ndarray, expected: np.ndarray, factors: Mapping[str, float]) -> str | None:
    """got == c * expected for one constant c != 1 on every entry (zeros where expected is 0)."""
    nonzero = np.abs(expected) > 1e-12
    if not nonzero.any() or not np.all(np.isfinite(got)) or np.any(np.abs(got[~nonzero]) > 1e-12):
        return None
    ratios = got[nonzero] / expected[nonzero]
    c = float(np.median(ratios))
    if not np.allclose(ratios, c, rtol=1e-6, atol=0) or math.isclose(c, 1.0, rel_tol=1e-9):
        return None
    for name, value in factors.items():
        if math.isclose(c, value, rel_tol=1e-6):
            return f"a factor {name} too many: every entry is {c:.6g} times the expected one"
        if math.isclose(c, 1 / value, rel_tol=1e-6):
            return f"a missing factor {name}: every entry is {c:.6g} times the expected one"
    if math.isclose(c, -1.0, rel_tol=1e-9):
        return "a sign: every entry has the opposite sign"
    return f"a constant factor: every entry is {c:.6g} times the expected one (a missing or extra scale)"


def _transposed(got: np.ndarray, expected: np.ndarray) -> str | None:
    if got.ndim == 2 and got.shape[0] == got.shape[1] and got.shape[0] > 1 and agrees(got, expected.T):
        return "a transpose: the values are the expected ones transposed"
    return None


def _some_rows(got: np.ndarray, expected: np.ndarray) -> str | None:
    if got.ndim < 2 or got.shape[0] < 2:
        return None
    rows = [i for i in range(got.shape[0]) if not agrees(got[i], expected[i])]
    if 0 < len(rows) < got.shape[0]:
        return f"only rows {rows} of {got.shape[0]} differ: an indexing mistake (repeated ids, a reshape order)"
    return None
