#!/usr/bin/env python
"""Every model on the held-out protocol, written up in reports/REPORT.md.

Runs ``torch_lm.cli.compare.main`` (see ``--help``); also installed as ``torch-lm-compare``.
"""

import sys
from pathlib import Path

# Run from a checkout without installing: make the repository root importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from torch_lm.cli.compare import main  # noqa: E402  (after the path fix above)

if __name__ == "__main__":
    sys.exit(main())
