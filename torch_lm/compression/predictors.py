"""Every model of the compressor as a ``Predictor``: it sees a text one character at a time and
gives the distribution of the next one, from the characters before it alone.

    probs = predictor.reset()         # (V,) float64: the first character's distribution
    probs = predictor.step(symbol)    # after seeing ``symbol``: the next character's

Before the text every model reads ``PAD_ID`` (a newline in Tiny Shakespeare's vocabulary), as
sampling does with a short prompt, so a text starts as if at the start of a line. The count
models here are ``torch_lm.ngram.NGramLM``'s numbers read one context at a time
(``CountTable``: bitwise the rows of ``NGramLM.prob_table``); the NeuralLM predicts with its
incremental form (``numpy_ref.incremental``), NumPy because at one character per call torch's
per-operation dispatch costs more than the arithmetic (docs/compression.md); dynamic evaluation
and the mixtures are ``torch_lm.training.dynamic.Adaptation`` and
``torch_lm.reports.mixtures.ContextWeights`` (``mix_row``).
"""

from __future__ import annotations

import numpy as np
import torch

from numpy_ref.incremental import PAD_ID, IncrementalLM
from torch_lm.incremental import numpy_views
from torch_lm.ngram import NGramLM
from torch_lm.reports.mixtures import ContextWeights
from torch_lm.training.dynamic import Adaptation, DynamicSettings


class Predictor:
    """The next-character distribution of a model reading a text one character at a time."""

    vocab_size: int

    def reset(self) -> np.ndarray:
        """Forget everything seen; the distribution (V,) float64 of the first character."""
        raise NotImplementedError

    def step(self, symbol: int) -> np.ndarray:
        """See ``symbol``; the distribution (V,) float64 of the character after it."""
        raise NotImplementedError


def softmax(logits: np.ndarray) -> np.ndarray:
    """logits (V,) any float dtype -> probabilities (V,) float64."""
    z = logits.astype(np.float64)
    e = np.exp(z - z.max())
    return e / e.sum()


# ----------------------------------------------------------------------------- NeuralLM
class NeuralPredictor(Predictor):
    """A trained NeuralLM (CPU, eval), predicting from cached fusion-level outputs."""

    def __init__(self, model: torch.nn.Module):
        self.vocab_size = model.config.vocab_size
        self.incremental = IncrementalLM(numpy_views(model), model.config)

    def reset(self) -> np.ndarray:
        self.incremental.reset(1)
        return self._next(PAD_ID)  # the stream before the text is PADs: one more gives the all-PAD window

    def step(self, symbol: int) -> np.ndarray:
        return self._next(symbol)

    def _next(self, symbol: int) -> np.ndarray:
        return softmax(self.incremental.step(np.array([symbol]))[0])


class DynamicNeuralPredictor(NeuralPredictor):
    """The NeuralLM under dynamic evaluation: after every ``settings.segment`` characters the
    weights take ``Adaptation``'s step on that segment (with its context), and the cached level
    outputs are recomputed from the last ``context`` characters with the new weights, so each
    prediction is what ``evaluate --dynamic`` would make from the same characters."""

    def __init__(self, model: torch.nn.Module, history: torch.Tensor, settings: DynamicSettings):
        self.settings = settings
        self.model, self.history = model, history
        self.context = model.config.context
        self.vocab_size = model.config.vocab_size

    def reset(self) -> np.ndarray:
        self.adaptation = Adaptation(self.model, self.history, self.settings)  # fresh weights
        self.incremental = IncrementalLM(numpy_views(self.adaptation.model), self.model.config)
        self.stream = [PAD_ID] * self.context
        return super().reset()

    def step(self, symbol: int) -> np.ndarray:
        self.stream.append(symbol)
        seen, segment = len(self.stream) - self.context, self.settings.segment
        if seen % segment:
            return self._next(symbol)
        ids = torch.tensor(self.stream[-(segment + self.context) :])[None]  # (1, P + C)
        self.adaptation.step(ids[:, :-1], ids[:, self.context :])  # the segment's targets and their windows
        self.incremental.reset(1)
        return softmax(self.incremental.feed(ids[:, -self.context :].numpy())[0])


# ----------------------------------------------------------------------------- count models
class CountTable:
    """A fitted Kneser-Ney ``NGramLM`` read one context at a time: per order m, the sorted context
    codes, where each context's m-grams start and end in the sorted m-gram codes, their last
    tokens, alpha and the contexts' gamma. ``distribution`` is the row ``prob_table`` gives,
    bitwise: the same products and sums (``alpha + gamma * p``, alpha = 0 where no m-gram) in the
    same order, lowest order first."""

    def __init__(self, ngram: NGramLM):
        if ngram.smoothing == "addk":
            raise ValueError("CountTable: add-k models are not interpolated; use a kn or mkn model")
        self.order, self.vocab_size = ngram.order, ngram.vocab_size
        self.levels = []
        for level in ngram.levels:
            keys, contexts = level.keys.cpu().numpy(), level.context_keys.cpu().numpy()
            starts = np.searchsorted(keys, contexts * self.vocab_size)  # keys sort by context, then token
            ends = np.append(starts[1:], len(keys))
            tokens = keys % self.vocab_size
            self.levels.append((contexts, starts, ends, tokens, level.alpha.cpu().numpy(), level.gamma.cpu().numpy()))

    def distribution(self, history: list[int]) -> tuple[np.ndarray, int]:
        """history: the last ``order - 1`` ids (oldest first) -> (probabilities (V,) float64, how
        many of its last ids were seen as a context: ``NGramLM.seen_context_length``)."""
        V = self.vocab_size
        prob, matched, code = np.full(V, 1.0 / V), 0, 0
        for m, (contexts, starts, ends, tokens, alpha, gamma) in enumerate(self.levels):
            if m:  # the context of order m + 1: the last m ids
                code += history[len(history) - m] * V ** (m - 1)
            j = int(np.searchsorted(contexts, code))
            if j == len(contexts) or contexts[j] != code:
                continue  # unseen context: gamma 1 and alpha 0 leave prob as it is
            prob = prob * gamma[j]
            prob[tokens[starts[j] : ends[j]]] += alpha[starts[j] : ends[j]]
            matched = m
        return prob, matched


class CountPredictor(Predictor):
    """A count model fitted once (on the train text): ``matched`` is the current context's seen
    length, the context mixture's feature."""

    def __init__(self, ngram: NGramLM):
        self.table = CountTable(ngram)
        self.vocab_size, self.order = ngram.vocab_size, ngram.order
        self.matched = 0

    def reset(self) -> np.ndarray:
        self.history = [PAD_ID] * (self.order - 1)
        return self._next()

    def step(self, symbol: int) -> np.ndarray:
        self.history = self.history[1:] + [symbol] if self.order > 1 else []
        return self._next()

    def _next(self) -> np.ndarray:
        probs, self.matched = self.table.distribution(self.history)
        return probs


class GrowingCountPredictor(CountPredictor):
    """Modified Kneser-Ney refitted every ``block`` characters on ``history`` (the train text) and
    every character of the text seen so far (``torch_lm.reports.mixtures.growing_kn``)."""

    def __init__(self, history: torch.Tensor, order: int, vocab_size: int, block: int):
        self.train, self.block = history.cpu(), block
        self.vocab_size, self.order = vocab_size, order
        self.matched = 0

    def reset(self) -> np.ndarray:
        self.seen: list[int] = []
        self._refit()
        return super().reset()

    def step(self, symbol: int) -> np.ndarray:
        self.seen.append(symbol)
        if len(self.seen) % self.block == 0:
            self._refit()
        return super().step(symbol)

    def _refit(self) -> None:
        ids = torch.cat([self.train, torch.tensor(self.seen, dtype=torch.int64)])
        self.table = CountTable(NGramLM.fit(ids, self.order, self.vocab_size, "mkn"))


# ----------------------------------------------------------------------------- mixtures
class MixturePredictor(Predictor):
    """p = lam p_a + (1 - lam) p_b with one weight (``torch_lm.reports.models.MixtureModel``)."""

    def __init__(self, a: Predictor, b: Predictor, lam: float):
        self.a, self.b, self.lam = a, b, lam
        self.vocab_size = a.vocab_size

    def reset(self) -> np.ndarray:
        return self._mix(self.a.reset(), self.b.reset())

    def step(self, symbol: int) -> np.ndarray:
        return self._mix(self.a.step(symbol), self.b.step(symbol))

    def _mix(self, pa: np.ndarray, pb: np.ndarray) -> np.ndarray:
        return self.lam * pa + (1 - self.lam) * pb


class ContextMixturePredictor(MixturePredictor):
    """The NeuralLM ``a`` and a count model ``b`` mixed with a weight from the context
    (``ContextWeights``: the count model's matched order and both entropies)."""

    def __init__(self, a: Predictor, b: CountPredictor, weights: ContextWeights):
        self.a, self.b, self.weights = a, b, weights
        self.vocab_size = a.vocab_size

    def _mix(self, pa: np.ndarray, pb: np.ndarray) -> np.ndarray:
        return self.weights.mix_row(pa, pb, self.b.matched)
