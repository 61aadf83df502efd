#!/usr/bin/env python
"""Speed against this machine's GEMM peak.

Runs ``torch_lm.cli.bench.main`` (see ``--help``); also installed as ``torch-lm-bench``.
"""

import sys
from pathlib import Path

# Run from a checkout without installing: make the repository root importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from torch_lm.cli.bench import main  # noqa: E402  (after the path fix above)

if __name__ == "__main__":
    sys.exit(main())
