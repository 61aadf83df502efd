"""Matplotlib for the report scripts: the Agg backend (no display needed) and reproducible PNGs.

matplotlib is imported here, once, so that every figure uses the same backend and style.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: render to files, never open a window

import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

# Category colours of the character plots and the report figures (colour-blind-safe Tableau 10).
COLORS = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac")


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


def plot_loss_curves(curves: dict, reference_label: str, reference_loss: float, path: Path) -> Path:
    """The run's ``loss/train`` and ``loss/val`` against the step, with a reference model's val loss."""
    fig, ax = figure(8.0, 4.8)
    for color, (tag, points) in zip(COLORS, sorted(curves.items())):
        steps, values = zip(*points)
        ax.plot(steps, values, "o-" if len(points) < 30 else "-", color=color, label=tag, markersize=3)
    ax.axhline(reference_loss, color=COLORS[2], linestyle="--", label=f"{reference_label}, val ({reference_loss:.3f})")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/char)")
    ax.set_title("NeuralLM training curves (TensorBoard events of the checkpoint's run)")
    ax.grid(alpha=0.3)
    ax.legend()
    return save(fig, path)


def plot_quality(quality: dict[str, dict], path: Path) -> Path:
    """Grouped bars per model: share of words found in train, distinct-1, distinct-2."""
    keys = list(quality)
    metrics = (("in_train_words", "words found in train"), ("distinct_1", "distinct-1"), ("distinct_2", "distinct-2"))
    fig, ax = figure(11.0, 5.0)
    width = 0.8 / len(metrics)
    for j, (metric, name) in enumerate(metrics):
        values = [0.0 if math.isnan(quality[k][metric]) else quality[k][metric] for k in keys]
        ax.bar([i + (j - 1) * width for i in range(len(keys))], values, width, color=COLORS[j], label=name)
    ax.set_xticks(range(len(keys)), [quality[k]["label"] for k in keys], rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("share")
    ax.set_title("Generation quality (same temperature and seed for every model)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, path)
