#!/usr/bin/env python
"""Put Tiny Shakespeare into data/ with sha256 verification: a thin wrapper around ``torch_lm.cli.download_main`` (see ``--help``)."""

import sys
from pathlib import Path

# Run from a checkout without installing: make the repository root importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from torch_lm.cli import download_main  # noqa: E402  (after the path fix above)

if __name__ == "__main__":
    sys.exit(download_main())
