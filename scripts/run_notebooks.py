#!/usr/bin/env python
"""Execute the exercise notebooks and write their outputs.

Runs ``torch_lm.cli.run_notebooks.main`` (see ``--help``); also installed as ``torch-lm-run-notebooks``.
"""

import sys
from pathlib import Path

# Run from a checkout without installing: make the repository root importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from torch_lm.cli.run_notebooks import main  # noqa: E402  (after the path fix above)

if __name__ == "__main__":
    sys.exit(main())
