#!/usr/bin/env python
"""Held-out evaluation of a checkpoint (docs/DESIGN.md §3): a thin wrapper around ``torch_lm.cli.evaluate_main`` (see ``--help``)."""

import sys
from pathlib import Path

# Run from a checkout without installing: make the repository root importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from torch_lm.cli import evaluate_main  # noqa: E402  (after the path fix above)

if __name__ == "__main__":
    sys.exit(evaluate_main())
