#!/usr/bin/env python
"""Exercise 3.11, every model compared in reports/REPORT.md: a thin wrapper around
``torch_lm.compare.main`` (see ``--help``)."""

import sys
from pathlib import Path

# Run from a checkout without installing: make the repository root importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from torch_lm.compare import main  # noqa: E402  (after the path fix above)

if __name__ == "__main__":
    sys.exit(main())
