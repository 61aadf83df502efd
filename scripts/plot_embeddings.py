#!/usr/bin/env python
"""The character embeddings projected to 2-D (PCA and t-SNE).

Runs ``torch_lm.cli.plot_embeddings.main`` (see ``--help``); also installed as ``torch-lm-plot-embeddings``.
"""

import sys
from pathlib import Path

# Run from a checkout without installing: make the repository root importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from torch_lm.cli.plot_embeddings import main  # noqa: E402  (after the path fix above)

if __name__ == "__main__":
    sys.exit(main())
