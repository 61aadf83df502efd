#!/usr/bin/env python
"""Held-out perplexity against context length, NeuralLM and Kneser-Ney.

Runs ``torch_lm.cli.sweep_context.main`` (see ``--help``); also installed as ``torch-lm-sweep-context``.
"""

import sys
from pathlib import Path

# Run from a checkout without installing: make the repository root importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from torch_lm.cli.sweep_context import main  # noqa: E402  (after the path fix above)

if __name__ == "__main__":
    sys.exit(main())
