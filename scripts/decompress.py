#!/usr/bin/env python
"""Restore a text file that compress wrote, byte for byte.

Runs ``torch_lm.cli.decompress.main`` (see ``--help``); also installed as ``torch-lm-decompress``.
"""

import sys
from pathlib import Path

# Run from a checkout without installing: make the repository root importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from torch_lm.cli.decompress import main  # noqa: E402  (after the path fix above)

if __name__ == "__main__":
    sys.exit(main())
