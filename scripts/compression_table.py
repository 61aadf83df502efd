#!/usr/bin/env python
"""Compress and decompress the val text with every model, beside gzip, bzip2, xz and zstd.

Runs ``torch_lm.cli.compression_table.main`` (see ``--help``); also installed as ``torch-lm-compression-table``.
"""

import sys
from pathlib import Path

# Run from a checkout without installing: make the repository root importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from torch_lm.cli.compression_table import main  # noqa: E402  (after the path fix above)

if __name__ == "__main__":
    sys.exit(main())
