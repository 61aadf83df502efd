#!/usr/bin/env python
"""Trajectory parity: train the NeuralLM N steps in numpy_ref and in torch_lm and compare.

    python scripts/trajectory_parity.py --steps 200 --dtype float64 --optimizer adamw --json

Prints the largest relative differences of the loss (over all steps) and of the parameters (at
the end); exits 0 within tolerance, 1 beyond it, 2 on a bad argument. The logic, and the
justification of the tolerances, live in ``torch_lm/trajectory.py``.
"""

import os
import sys
from pathlib import Path

# One BLAS / OpenMP thread, set before NumPy and torch start their thread pools: the matrices
# are tiny, and on shared cores two threads spin-wait on each other (measured 20x slower for
# NumPy's matmuls and 40x for torch's; see ``torch_lm.trajectory._single_threaded``).
for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(variable, "1")

# Run from a checkout without installing: make the repository root importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from torch_lm.trajectory import main  # noqa: E402  (after the settings above)

if __name__ == "__main__":
    sys.exit(main())
