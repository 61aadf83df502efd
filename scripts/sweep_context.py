#!/usr/bin/env python
"""Exercise 3.10, perplexity against context: a thin wrapper around ``torch_lm.sweep.main`` (see ``--help``)."""

import sys
from pathlib import Path

# Run from a checkout without installing: make the repository root importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from torch_lm.sweep import main  # noqa: E402  (after the path fix above)

if __name__ == "__main__":
    sys.exit(main())
