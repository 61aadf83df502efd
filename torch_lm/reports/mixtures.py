"""Mixtures of the NeuralLM and the Kneser-Ney model whose weight depends on the context, and
the Kneser-Ney model whose counts grow with the held-out text already scored.

A mixture is ``p = lam p_a + (1 - lam) p_b`` at every position, with ``lam`` in (0, 1) given by
``ContextWeights`` from features of what precedes the position only::

    lam = sigmoid(w_order[matched] + w_a * H(p_a) + w_b * H(p_b))

``matched`` is how many characters of the context the count model has seen as a context (its
longest matched order minus one: the more it matched, the more its counts know), ``H`` the
entropies of the two predictions. The weights are fitted on the train slice, by the models fitted
without it (``ContextWeights.fit``); the character being predicted enters only that fit.

``growing_kn`` is the count model of dynamic evaluation: the held-out text is scored block by
block, each block by a model fitted on the history and every held-out character before the block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from numpy_ref.validation import check_positive_int, fail
from torch_lm.ngram import NGramLM
from torch_lm.reports.models import CharModel, NGramModel, last_columns
from torch_lm.training.heldout import heldout_stream, target_contexts

GROWING_BLOCK = 1000  # held-out characters scored between two refits of the growing count model
FIT_STEPS = 100  # L-BFGS iterations of the weights' fit (a smooth problem of a few parameters)


def matched_order(ngram: NGramLM, contexts: torch.Tensor) -> torch.Tensor:
    """How many of the last characters of each context (N, C >= order - 1) the model has seen as a
    context: (N,) int64 on the CPU, in [0, order - 1] (``NGramLM.seen_context_length``)."""
    return ngram.seen_context_length(contexts).cpu()


@dataclass
class CountPredictions:
    """A count model's next-character distributions (N, V) float64 and matched orders (N,)."""

    probs: torch.Tensor
    matched: torch.Tensor


def static_kn(ngram: NGramLM, history: torch.Tensor, targets: torch.Tensor) -> CountPredictions:
    """The fitted model's predictions at every target after ``history``."""
    contexts = target_contexts(heldout_stream(history.cpu(), targets.cpu(), ngram.order - 1), ngram.order - 1)
    return CountPredictions(ngram.prob_table(contexts).cpu(), matched_order(ngram, contexts))


def growing_kn(
    history: torch.Tensor, targets: torch.Tensor, order: int, vocab_size: int, block: int = GROWING_BLOCK
) -> CountPredictions:
    """Modified Kneser-Ney of ``order``, refitted every ``block`` targets on the history and the
    targets already scored: each target is predicted by counts of what precedes it only."""
    check_positive_int("growing_kn", "block", block)
    history, targets = history.cpu(), targets.cpu()
    parts = []
    for start in range(0, len(targets), block):
        seen = torch.cat([history, targets[:start]])
        parts.append(static_kn(NGramLM.fit(seen, order, vocab_size, "mkn"), seen, targets[start : start + block]))
    return CountPredictions(torch.cat([p.probs for p in parts]), torch.cat([p.matched for p in parts]))


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """H(p) in nats of every row of probs (N, V) -> (N,)."""
    return -(probs * torch.log(probs.clamp_min(1e-300))).sum(dim=1)


def entropy_row(probs: np.ndarray) -> float:
    """H(p) in nats of one distribution (V,) float64: ``entropy`` of one row, in NumPy."""
    return float(-(probs * np.log(np.maximum(probs, 1e-300))).sum())


def features(probs_a: torch.Tensor, probs_b: torch.Tensor, matched: torch.Tensor, order: int) -> torch.Tensor:
    """The design (N, order + 2): one-hot ``matched`` (its bucket's bias), then H(p_a) and H(p_b).
    Built from the two predictions and the context only."""
    one_hot = torch.nn.functional.one_hot(matched, order).double()  # (N, order)
    return torch.cat([one_hot, entropy(probs_a)[:, None], entropy(probs_b)[:, None]], dim=1)


@dataclass
class ContextWeights:
    """lam = sigmoid(features @ w): the NeuralLM's share of a two-model mixture, per position."""

    w: torch.Tensor  # (order + 2,) float64
    order: int

    def lam(self, probs_a: torch.Tensor, probs_b: torch.Tensor, matched: torch.Tensor) -> torch.Tensor:
        """(N,) in (0, 1), from the predictions (N, V) and matched orders (N,): no target involved."""
        return torch.sigmoid(features(probs_a, probs_b, matched, self.order) @ self.w)

    def mix(self, probs_a: torch.Tensor, probs_b: torch.Tensor, matched: torch.Tensor) -> torch.Tensor:
        """The mixture's distributions (N, V): every row sums to 1 when the parts' rows do."""
        lam = self.lam(probs_a, probs_b, matched)[:, None]
        return lam * probs_a + (1 - lam) * probs_b

    def mix_row(self, probs_a: np.ndarray, probs_b: np.ndarray, matched: int) -> np.ndarray:
        """``mix`` of one position in NumPy float64: probs (V,) each, matched an int -> (V,). The
        same formula (the matched order's weight, then the entropies'), for a caller that mixes one
        character at a time (the compressor), where torch's per-call overhead would cost more than
        the arithmetic; it agrees with ``mix`` to rounding (``parity_tests/compression``)."""
        w = self.w.tolist()
        z = w[matched] + w[self.order] * entropy_row(probs_a) + w[self.order + 1] * entropy_row(probs_b)
        lam = 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))  # no overflow
        return lam * probs_a + (1 - lam) * probs_b

    @classmethod
    def fit(
        cls, probs_a: torch.Tensor, probs_b: torch.Tensor, matched: torch.Tensor, targets: torch.Tensor, order: int
    ) -> ContextWeights:
        """The weights minimising -mean log(lam p_a(target) + (1 - lam) p_b(target)) (L-BFGS)."""
        if not (len(probs_a) == len(probs_b) == len(matched) == len(targets)) or len(targets) == 0:
            fail("ContextWeights.fit", "needs one prediction of each model and one matched order per target")
        design = features(probs_a, probs_b, matched, order)
        pa = probs_a.gather(1, targets[:, None]).squeeze(1)
        pb = probs_b.gather(1, targets[:, None]).squeeze(1)
        w = torch.zeros(design.shape[1], dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS([w], max_iter=FIT_STEPS, line_search_fn="strong_wolfe")

        def loss() -> torch.Tensor:
            optimizer.zero_grad()
            lam = torch.sigmoid(design @ w)
            value = -torch.log(lam * pa + (1 - lam) * pb).mean()
            value.backward()
            return value

        optimizer.step(loss)
        return cls(w.detach(), order)


class ContextMixtureModel(CharModel):
    """A ``CharModel`` mixing ``a`` (the NeuralLM) and the count model ``b`` with ``weights``: the
    mixture scored and sampled like any other model."""

    def __init__(self, a: CharModel, b: NGramModel, weights: ContextWeights):
        if a.vocab_size != b.vocab_size:
            fail("ContextMixtureModel", f"needs one vocabulary, got V {a.vocab_size} and {b.vocab_size}")
        self.a, self.b, self.weights = a, b, weights
        self.context = max(a.context, b.context)
        self.vocab_size = a.vocab_size

    def next_probs(self, contexts: torch.Tensor) -> torch.Tensor:
        probs_a, probs_b = self.a.next_probs(contexts), self.b.next_probs(contexts)
        matched = matched_order(self.b.ngram, last_columns(contexts, self.b.context))
        return self.weights.mix(probs_a, probs_b, matched)
