"""The report's rows beyond one fixed mixing weight: the NeuralLM + Kneser-Ney mixture whose weight
depends on the context, and the dynamic rows — dynamic evaluation of the NeuralLM
(``torch_lm.training.dynamic``), the Kneser-Ney model whose counts grow with the val text already
scored, and their context mixture. Dynamic rows are their own table, never mixed into the static one.

Every choice is made on the train slice by the models fitted without it: the dynamic evaluation's
settings (``DYNAMIC_GRID``), and each mixture's weights (``ContextWeights.fit``).
"""

from __future__ import annotations

import torch

from torch_lm.reports.compare_rows import Data, Row, scored
from torch_lm.reports.mixtures import GROWING_BLOCK, ContextMixtureModel, ContextWeights, growing_kn, static_kn
from torch_lm.reports.models import NeuralModel, NGramModel
from torch_lm.reports.tuning import slice_split
from torch_lm.training.dynamic import DynamicSettings, dynamic_log_probs
from torch_lm.training.heldout import next_log_probs, pick

DYNAMIC_LRS = (1e-4, 2e-4, 3e-4)
DYNAMIC_DECAYS = (0.0, 0.001, 0.01)
DYNAMIC_GRID = tuple(DynamicSettings(lr=lr, decay=decay) for lr in DYNAMIC_LRS for decay in DYNAMIC_DECAYS)


def neural_distributions(module: torch.nn.Module, history: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The NeuralLM's next-character distributions at every target: (N, V) float64 on the CPU, by
    the held-out protocol's scorer."""
    return next_log_probs(module, history, targets).exp().cpu()


def tune_dynamic(module: torch.nn.Module, data: Data) -> tuple[DynamicSettings, torch.Tensor, dict[str, float]]:
    """The ``DYNAMIC_GRID`` settings whose dynamic evaluation of ``module`` (trained without the train
    slice) scores best on the slice, their slice distributions (N, V), and every setting's slice loss."""
    fit_ids, slice_ids = slice_split(data.train)
    losses, best = {}, None
    for settings in DYNAMIC_GRID:
        probs = dynamic_log_probs(module, fit_ids, slice_ids, settings).exp()  # (N, V)
        losses[settings] = float(-torch.log(pick(probs, slice_ids)).mean())
        if best is None or losses[settings] < losses[best[0]]:
            best = (settings, probs)
    return *best, {f"lr {s.lr:g}, decay {s.decay:g}": loss for s, loss in losses.items()}


def context_mixture_row(neural: Row, tuner: NeuralModel, kn_full: Row, kn_order: int, data: Data) -> tuple[Row, dict]:
    """p = lam(context) p_NeuralLM + (1 - lam) p_KN, the weights fitted on the train slice by the two
    models fitted without it, then scored on val with the NeuralLM and KN of the full train text."""
    fit_ids, slice_ids = slice_split(data.train)
    kn_fit = NGramModel.fit(fit_ids, kn_order, len(data.vocab), "mkn")
    slice_kn = static_kn(kn_fit.ngram, fit_ids, slice_ids)
    slice_nn = neural_distributions(tuner.module, fit_ids, slice_ids)
    weights = ContextWeights.fit(slice_nn, slice_kn.probs, slice_kn.matched, slice_ids, kn_order)
    model = ContextMixtureModel(neural.model, kn_full.model, weights)
    row = scored(
        "mixture_context",
        f"NeuralLM + modified KN {kn_order}-gram, weight from the context",
        "mixture",
        "weights on KN matched order and both entropies (train slice)",
        model,
        data,
    )
    return row, {"weights": weights.w.tolist()}


def dynamic_rows(neural: Row, tuner: NeuralModel, kn_full: Row, kn_order: int, data: Data) -> tuple[list[Row], dict]:
    """The NeuralLM under dynamic evaluation, the growing KN and their context mixture on val; the
    settings and the weights chosen on the train slice."""
    V = len(data.vocab)
    fit_ids, slice_ids = slice_split(data.train)
    settings, slice_nn, grid = tune_dynamic(tuner.module, data)
    slice_kn = growing_kn(fit_ids, slice_ids, kn_order, V)
    weights = ContextWeights.fit(slice_nn, slice_kn.probs, slice_kn.matched, slice_ids, kn_order)
    val_nn = dynamic_log_probs(neural.model.module, data.train, data.val, settings).exp()
    val_kn = growing_kn(data.train, data.val, kn_order, V)
    mixed = weights.mix(val_nn, val_kn.probs, val_kn.matched)
    how = f"segment {settings.segment}, {settings.rule} lr {settings.lr:g}, decay {settings.decay:g} (train slice)"
    rows = [
        Row("neural_lm_dynamic", "NeuralLM, dynamic evaluation", "dynamic", how, neural.model, pick(val_nn, data.val)),
        Row(
            "kn_growing",
            f"modified KN {kn_order}-gram, counts growing with scored val",
            "dynamic",
            f"refitted every {GROWING_BLOCK:,} val characters",
            kn_full.model,
            pick(val_kn.probs, data.val),
        ),
        Row(
            "mixture_dynamic",
            "the two above, weight from the context",
            "dynamic",
            "weights fitted on the train slice, scored the same way",
            ContextMixtureModel(neural.model, kn_full.model, weights),  # the mixture it starts from
            pick(mixed, data.val),
        ),
    ]
    return rows, {"settings": settings.to_dict(), "slice_losses": grid, "weights": weights.w.tolist()}
