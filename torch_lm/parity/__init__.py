"""The parity harness: a component run by the NumPy reference and by torch, compared entry by
entry (``compare``), and the battery of checks every component passes (``battery``). The project's
parity tests run on it, and so does the checker of a learner's exercises (``torch_lm.exercises``).
"""

from torch_lm.parity.battery import (
    DTYPE_IDS,
    DTYPE_PAIRS,
    Case,
    Component,
    Run,
    assert_central_differences,
    assert_gradcheck,
    assert_parity,
    assert_refused_alike,
    central_difference_errors,
    parity_mismatches,
    run_numpy,
    run_torch,
)
from torch_lm.parity.compare import (
    Mismatch,
    assert_same,
    grads_of,
    mismatches,
    state_of,
    to_numpy,
    to_torch,
    tolerance,
)

__all__ = [
    "DTYPE_IDS",
    "DTYPE_PAIRS",
    "Case",
    "Component",
    "Mismatch",
    "Run",
    "assert_central_differences",
    "assert_gradcheck",
    "assert_parity",
    "assert_refused_alike",
    "assert_same",
    "central_difference_errors",
    "grads_of",
    "mismatches",
    "parity_mismatches",
    "run_numpy",
    "run_torch",
    "state_of",
    "to_numpy",
    "to_torch",
    "tolerance",
]
