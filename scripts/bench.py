#!/usr/bin/env python
"""Speed benchmarks against this machine's GEMM peak: a thin wrapper around
``torch_lm.bench.main`` (see ``--help``; what is measured and how is in that module)."""

import os
import sys
from pathlib import Path

# --threads must reach NumPy's BLAS before NumPy is imported (it reads the variables once).
for i, arg in enumerate(sys.argv):
    value = arg.split("=", 1)[1] if arg.startswith("--threads=") else (
        sys.argv[i + 1] if arg == "--threads" and i + 1 < len(sys.argv) else None)
    if value is not None and value.isdigit() and int(value) > 0:
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[name] = value

# Run from a checkout without installing: make the repository root importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from torch_lm.bench import main  # noqa: E402  (after the environment and path fixes above)

if __name__ == "__main__":
    sys.exit(main())
