#!/usr/bin/env python
"""Count n-gram baselines under the held-out protocol.

Runs ``torch_lm.cli.ngram_baselines.main`` (see ``--help``); also installed as ``torch-lm-ngram-baselines``.
"""

import sys
from pathlib import Path

# Run from a checkout without installing: make the repository root importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from torch_lm.cli.ngram_baselines import main  # noqa: E402  (after the path fix above)

if __name__ == "__main__":
    sys.exit(main())
