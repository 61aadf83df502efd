"""Matplotlib for the report scripts: the Agg backend (no display needed) and reproducible PNGs.

SIDE-ONLY: this module exists in ``torch_lm`` only (docs/DESIGN.md §1).

matplotlib is imported here, once, so that every figure uses the same backend and style.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: render to files, never open a window

import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

# Category colours of the character plots and the report figures (colour-blind-safe Tableau 10).
COLORS = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
          "#9c755f", "#bab0ac")


def save(fig, path: str | Path) -> Path:
    """Write ``fig`` as a PNG at ``path`` (parents created) and close it.

    No "Software" metadata: the PNG bytes then depend only on what is drawn, so re-running a
    report reproduces its figures exactly.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return path


def figure(width: float = 8.0, height: float = 5.0):
    """A new (figure, axes) pair of the given size in inches."""
    return plt.subplots(figsize=(width, height))
