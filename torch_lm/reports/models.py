"""One interface over every character model the reports compare, and the protocol on it.

A ``CharModel`` predicts the next character from its ``context`` previous ones, whatever it is
inside: a count n-gram (``NGramModel``), any module with NeuralLM's ``forward(idx) -> (logits,
_)`` (``NeuralModel``: NeuralLM, the neural bigram/trigram), the uniform distribution, or a
mixture of two models (``MixtureModel``, p = lam p_a + (1 - lam) p_b). ``heldout`` is the
held-out protocol of ``torch_lm.training.heldout`` for any of them, and ``sample`` the one
sampling loop of ``torch_lm.training.sampling``.

Probabilities are float64 throughout, so mixtures and logs of small probabilities stay exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from numpy_ref.ngram import DEFAULT_DISCOUNT, DEFAULT_K
from numpy_ref.validation import check_positive_float, fail
from torch_lm.ngram import NGramLM
from torch_lm.training.heldout import HeldoutResult, heldout_stream, log_prob_batches, pick, rows
from torch_lm.training.sampling import sample as sample_ids


def last_columns(contexts: torch.Tensor, n: int) -> torch.Tensor:
    """The last ``n`` columns of contexts (N, C >= n); n = 0 gives (N, 0) (``[:, -0:]`` would not)."""
    return contexts[:, contexts.shape[1] - n :]


class CharModel:
    """Next-character distributions from ``context`` previous characters over ``vocab_size`` ids."""

    context: int
    vocab_size: int

    def next_probs(self, contexts: torch.Tensor) -> torch.Tensor:
        """contexts (N, C >= context) int64 -> (N, V) float64, rows summing to 1 (last columns used)."""
        raise NotImplementedError

    def target_probs(self, ids: torch.Tensor, start: int) -> torch.Tensor:
        """p(ids[i] | ids[i-context:i]) for i = start..T-1: ids (T,), start >= context -> (T - start,).

        Default: ``next_probs`` over windows in chunks, then the target's column.
        """
        return torch.cat([pick(self.next_probs(x), y[:, 0]) for x, y in rows(ids, self.context, 1, 8192, start)])


@dataclass
class UniformModel(CharModel):
    """1/V for every character."""

    vocab_size: int
    context: int = 0

    def next_probs(self, contexts: torch.Tensor) -> torch.Tensor:
        return torch.full((contexts.shape[0], self.vocab_size), 1.0 / self.vocab_size, dtype=torch.float64)

    def target_probs(self, ids: torch.Tensor, start: int) -> torch.Tensor:
        return torch.full((len(ids) - start,), 1.0 / self.vocab_size, dtype=torch.float64)


class NGramModel(CharModel):
    """A fitted ``torch_lm.ngram.NGramLM`` (context = order - 1)."""

    def __init__(self, ngram: NGramLM):
        self.ngram = ngram
        self.context = ngram.order - 1
        self.vocab_size = ngram.vocab_size

    @classmethod
    def fit(
        cls,
        ids: torch.Tensor,
        order: int,
        vocab_size: int,
        smoothing: str,
        k: float = DEFAULT_K,
        discount: float = DEFAULT_DISCOUNT,
    ) -> NGramModel:
        """``NGramLM.fit`` on ``ids`` (the train text), as a ``CharModel``."""
        return cls(NGramLM.fit(ids, order, vocab_size, smoothing, k=k, discount=discount))

    def next_probs(self, contexts: torch.Tensor) -> torch.Tensor:
        return self.ngram.prob_table(last_columns(contexts, self.context))

    def target_probs(self, ids: torch.Tensor, start: int) -> torch.Tensor:
        return self.ngram.token_probs(ids, start)  # only the targets' probabilities: fast


class NeuralModel(CharModel):
    """Any module with ``forward(idx (N, C)) -> (logits (N, V), _)``, evaluated in eval mode."""

    def __init__(self, module: torch.nn.Module, context: int, vocab_size: int):
        self.module = module.eval()
        self.context = context
        self.vocab_size = vocab_size
        self.device = next(module.parameters()).device

    @torch.no_grad()
    def next_probs(self, contexts: torch.Tensor) -> torch.Tensor:
        logits, _ = self.module(last_columns(contexts, self.context).to(self.device))
        return torch.softmax(logits.double(), dim=-1).cpu()

    def target_probs(self, ids: torch.Tensor, start: int) -> torch.Tensor:
        """The held-out protocol's scorer (``log_prob_batches``: the sequence forward for a
        NeuralLM), so a report's figure is ``evaluate``'s."""
        batches = log_prob_batches(self.module, ids.to(self.device), self.context, start=start)
        return torch.cat([pick(lp, y) for lp, y in batches]).exp().cpu()


class MixtureModel(CharModel):
    """p = lam p_a + (1 - lam) p_b: linear interpolation of two models over one vocabulary."""

    def __init__(self, a: CharModel, b: CharModel, lam: float):
        if a.vocab_size != b.vocab_size or not 0.0 <= lam <= 1.0:
            fail(
                "MixtureModel",
                f"needs one vocabulary and lam in [0, 1], got V {a.vocab_size} and {b.vocab_size}, lam {lam!r}",
            )
        self.a, self.b, self.lam = a, b, float(lam)
        self.context = max(a.context, b.context)
        self.vocab_size = a.vocab_size

    def next_probs(self, contexts: torch.Tensor) -> torch.Tensor:
        return self.lam * self.a.next_probs(contexts) + (1 - self.lam) * self.b.next_probs(contexts)

    def target_probs(self, ids: torch.Tensor, start: int) -> torch.Tensor:
        return self.lam * self.a.target_probs(ids, start) + (1 - self.lam) * self.b.target_probs(ids, start)


# ----------------------------------------------------------------------------- held-out protocol
def heldout_probs(model: CharModel, history: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """p(targets[i] | the ``context`` characters before it), the first ones reaching into the end
    of ``history``: history (H >= context,), targets (N,) -> (N,) float64."""
    stream = heldout_stream(history.cpu(), targets.cpu(), model.context)
    return model.target_probs(stream, model.context)


def heldout(model: CharModel, history: torch.Tensor, targets: torch.Tensor) -> HeldoutResult:
    """The held-out figures of ``model`` on ``targets`` after ``history``."""
    return HeldoutResult.from_target_probs(heldout_probs(model, history, targets))


# ----------------------------------------------------------------------------- sampling
def sample(model: CharModel, prompt: Sequence[int], length: int, temperature: float = 1.0, seed: int = 0) -> list[int]:
    """``length`` ids drawn from softmax(log p / temperature) after ``prompt``, by the one sampling
    loop with a ``torch.Generator`` seeded with ``seed``: with equal settings the samples of two
    models differ only because the models do. Returns the drawn ids only."""
    temperature = check_positive_float("sample", "temperature", temperature)

    def next_probs(windows: torch.Tensor) -> torch.Tensor:
        probs = model.next_probs(windows)  # (1, V)
        return probs if temperature == 1.0 else torch.softmax(torch.log(probs) / temperature, dim=-1)

    prompt = torch.tensor([list(prompt)], dtype=torch.int64)  # (1, t)
    ids = sample_ids(next_probs, model.context, model.vocab_size, prompt, length, torch.Generator().manual_seed(seed))
    return ids[0, prompt.shape[1] :].tolist()
