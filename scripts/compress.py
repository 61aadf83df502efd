#!/usr/bin/env python
"""Compress a text file with a model driving a range coder.

Runs ``torch_lm.cli.compress.main`` (see ``--help``); also installed as ``torch-lm-compress``.
"""

import sys
from pathlib import Path

# Run from a checkout without installing: make the repository root importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from torch_lm.cli.compress import main  # noqa: E402  (after the path fix above)

if __name__ == "__main__":
    sys.exit(main())
