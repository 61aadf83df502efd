"""The two exercise sheets as checks of a learner's own code.

``check(globals(), "nn1")`` in a notebook, or ``torch-lm-check FILE.py`` on a file, runs every
exercise it finds under the names of the exercise notebooks' stubs (``notebooks/exercises/``)
against the torch twins through the parity harness, and prints one line per exercise: PASS, TODO
(not written yet) or FAIL with the first differing value and its likely cause.
"""

from torch_lm.exercises.checker import EXERCISES, check, run_checks
from torch_lm.exercises.stage3 import Batch

__all__ = ["EXERCISES", "Batch", "check", "run_checks"]
