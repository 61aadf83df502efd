#!/usr/bin/env python
"""Train N steps in numpy_ref and with the trainer's step, and compare.

Runs ``torch_lm.cli.trajectory_parity.main`` (see ``--help``); also installed as ``torch-lm-trajectory-parity``.
"""

import sys
from pathlib import Path

# Run from a checkout without installing: make the repository root importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from torch_lm.cli.trajectory_parity import main  # noqa: E402  (after the path fix above)

if __name__ == "__main__":
    sys.exit(main())
