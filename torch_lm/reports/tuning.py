"""Choosing a hyperparameter without touching val: on the last 5 % of the train text, with the
model fitted on the rest (``slice_split``, ``tune_on_slice``), and the mixture weight of two
models' probabilities on such a slice (``mixture_weight``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch

from numpy_ref.validation import fail
from torch_lm.reports.models import CharModel, heldout

SLICE_FRACTION = 0.05
MIXTURE_GRID = np.linspace(0.0, 1.0, 101)


def slice_split(train_ids: torch.Tensor, fraction: float = SLICE_FRACTION) -> tuple[torch.Tensor, torch.Tensor]:
    """(fit, slice): the train text without its last ``fraction``, and that last part (>= 1 id)."""
    n_slice = max(1, round(len(train_ids) * fraction))
    if n_slice >= len(train_ids):
        fail("slice_split", f"train text of {len(train_ids)} ids is too short to hold out {fraction:.0%}")
    return train_ids[:-n_slice], train_ids[-n_slice:]


def tune_on_slice(
    values: Sequence, fit: Callable[[object, torch.Tensor], CharModel], train_ids: torch.Tensor
) -> tuple[object, dict]:
    """The value whose model, fitted on ``slice_split(train)[0]``, scores best on the slice.

    ``fit(value, ids)`` builds a model from ids. Returns (best value, {value: slice loss}); ties
    go to the first value. The caller refits with the chosen value on the full train text.
    """
    fit_ids, slice_ids = slice_split(train_ids)
    losses = {value: heldout(fit(value, fit_ids), fit_ids, slice_ids).loss for value in values}
    return min(losses, key=losses.get), losses


def mixture_weight(p_a: torch.Tensor, p_b: torch.Tensor, grid: Iterable[float] = MIXTURE_GRID) -> tuple[float, float]:
    """(lam, loss): the grid value minimising -mean log(lam p_a + (1 - lam) p_b) over positions.

    The loss is convex in lam, so a fine grid (0.01 steps) is within 0.005 of the optimum.
    """
    lams = torch.as_tensor(np.asarray(list(grid)), dtype=torch.float64)  # (G,)
    losses = -torch.log(lams[:, None] * p_a[None] + (1 - lams[:, None]) * p_b[None]).mean(dim=1)  # (G,)
    best = int(torch.argmin(losses))
    return float(lams[best]), float(losses[best])
