"""One interface over every character model the reports compare, and what they do with it.

SIDE-ONLY: this module exists in ``torch_lm`` only (docs/DESIGN.md §1); it evaluates models, it is not one.

A ``CharModel`` predicts the next character from its ``context`` previous ones, whatever it is
inside: a count n-gram (``NGramModel``), any module with NeuralLM's ``forward(idx) -> (logits,
_)`` (``NeuralModel``: NeuralLM, the neural bigram/trigram), the uniform distribution, or a
mixture of two models (``MixtureModel``, p = lam p_a + (1 - lam) p_b). On top of that interface:

* ``heldout`` — docs/DESIGN.md §3's protocol for any of them: mean -ln p over every target position, the
  first ones taking their history from the end of the preceding text;
* ``tune_on_slice`` and ``mixture_weight`` — hyperparameters chosen on a slice of the *train*
  text held out from fitting (``slice_split``), never on val;
* ``sample`` — the same sampling loop, temperature and random stream for every model;
* ``generation_quality`` — share of generated words found in the training text, distinct-1/2.

Probabilities are float64 throughout, so mixtures and logs of small probabilities stay exact.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from numpy_ref.validation import check_positive_float, check_positive_int, fail
from torch_lm.checkpoint import CheckpointError, load_checkpoint
from torch_lm.data import HeldoutResult
from torch_lm.metrics import bits_per_char, perplexity
from torch_lm.ngram import NGramLM
from torch_lm.neural_lm import PAD_ID

DEFAULT_CHECKPOINT = "runs/default/best.pt"
WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")   # lower-cased words; "king's" is one word, quotes are not
SLICE_FRACTION = 0.05
MIXTURE_GRID = np.linspace(0.0, 1.0, 101)


def last_columns(contexts: torch.Tensor, n: int) -> torch.Tensor:
    """The last ``n`` columns of contexts (N, C >= n); n = 0 gives (N, 0) (``[:, -0:]`` would not)."""
    return contexts[:, contexts.shape[1] - n:]


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
        out = []
        for first in range(start, len(ids), 8192):
            positions = torch.arange(first, min(first + 8192, len(ids)))            # (b,)
            windows = ids[positions[:, None] - self.context + torch.arange(self.context)]  # (b, C)
            out.append(self.next_probs(windows).gather(1, ids[positions, None]).squeeze(1))
        return torch.cat(out)


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

    def next_probs(self, contexts: torch.Tensor) -> torch.Tensor:
        return self.ngram.prob_table(last_columns(contexts, self.context))

    def target_probs(self, ids: torch.Tensor, start: int) -> torch.Tensor:
        return self.ngram.token_probs(ids, start)          # only the targets' probabilities: fast


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


class MixtureModel(CharModel):
    """p = lam p_a + (1 - lam) p_b: linear interpolation of two models over one vocabulary."""

    def __init__(self, a: CharModel, b: CharModel, lam: float):
        if a.vocab_size != b.vocab_size or not 0.0 <= lam <= 1.0:
            fail("MixtureModel", f"needs one vocabulary and lam in [0, 1], got V {a.vocab_size} and "
                                 f"{b.vocab_size}, lam {lam!r}")
        self.a, self.b, self.lam = a, b, float(lam)
        self.context = max(a.context, b.context)
        self.vocab_size = a.vocab_size

    def next_probs(self, contexts: torch.Tensor) -> torch.Tensor:
        return self.lam * self.a.next_probs(contexts) + (1 - self.lam) * self.b.next_probs(contexts)

    def target_probs(self, ids: torch.Tensor, start: int) -> torch.Tensor:
        return self.lam * self.a.target_probs(ids, start) + (1 - self.lam) * self.b.target_probs(ids, start)


def require_checkpoint(path: str | Path) -> dict:
    """The checkpoint at ``path`` (``load_checkpoint``); if there is no file, the error names the
    command that writes it (training saves ``best.pt`` and ``last.pt`` into its ``--run-dir``)."""
    if not Path(path).is_file():
        raise CheckpointError(f"checkpoint {path} not found; train it first with: python "
                              f"scripts/train.py --run-dir {Path(path).parent}")
    return load_checkpoint(path)


# ----------------------------------------------------------------------------- held-out protocol
def heldout_probs(model: CharModel, history: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """p(targets[i] | the ``context`` characters before it), the first ones reaching into the end
    of ``history`` (docs/DESIGN.md §3): history (H >= context,), targets (N,) -> (N,) float64."""
    if len(history) < model.context or len(targets) < 1:
        fail("heldout", f"needs at least {model.context} history ids and 1 target, got "
                        f"{len(history)} and {len(targets)}")
    stream = torch.cat([history[len(history) - model.context:], targets]).cpu()
    return model.target_probs(stream, model.context)


def result_from_probs(probs: torch.Tensor) -> HeldoutResult:
    """Mean -ln p (nats/char), perplexity, bits/char and positions of target probabilities (N,)."""
    loss = float(-torch.log(probs).mean())
    return HeldoutResult(loss=loss, perplexity=float(perplexity(loss)), bpc=float(bits_per_char(loss)),
                         positions=len(probs))


def heldout(model: CharModel, history: torch.Tensor, targets: torch.Tensor) -> HeldoutResult:
    """docs/DESIGN.md §3's held-out figures of ``model`` on ``targets`` after ``history``."""
    return result_from_probs(heldout_probs(model, history, targets))


# ----------------------------------------------------------------------------- tuning on train
def slice_split(train_ids: torch.Tensor, fraction: float = SLICE_FRACTION) -> tuple[torch.Tensor, torch.Tensor]:
    """(fit, slice): the train text without its last ``fraction``, and that last part (>= 1 id)."""
    n_slice = max(1, round(len(train_ids) * fraction))
    if n_slice >= len(train_ids):
        fail("slice_split", f"train text of {len(train_ids)} ids is too short to hold out {fraction:.0%}")
    return train_ids[:-n_slice], train_ids[-n_slice:]


def tune_on_slice(values: Sequence, fit: Callable[[object, torch.Tensor], CharModel],
                  train_ids: torch.Tensor) -> tuple[object, dict]:
    """The value whose model, fitted on ``slice_split(train)[0]``, scores best on the slice.

    ``fit(value, ids)`` builds a model from ids. Returns (best value, {value: slice loss}); ties
    go to the first value. The caller refits with the chosen value on the full train text.
    """
    fit_ids, slice_ids = slice_split(train_ids)
    losses = {value: heldout(fit(value, fit_ids), fit_ids, slice_ids).loss for value in values}
    return min(losses, key=losses.get), losses


def mixture_weight(p_a: torch.Tensor, p_b: torch.Tensor, grid: Iterable[float] = MIXTURE_GRID
                   ) -> tuple[float, float]:
    """(lam, loss): the grid value minimising -mean log(lam p_a + (1 - lam) p_b) over positions.

    The loss is convex in lam, so a fine grid (0.01 steps) is within 0.005 of the optimum.
    """
    lams = torch.as_tensor(np.asarray(list(grid)), dtype=torch.float64)          # (G,)
    losses = -torch.log(lams[:, None] * p_a[None] + (1 - lams[:, None]) * p_b[None]).mean(dim=1)  # (G,)
    best = int(torch.argmin(losses))
    return float(lams[best]), float(losses[best])


# ----------------------------------------------------------------------------- sampling
def sample(model: CharModel, prompt: Sequence[int], length: int, temperature: float = 1.0,
           seed: int = 0) -> list[int]:
    """``length`` ids drawn one at a time from softmax(log p / temperature) after ``prompt``.

    Every model gets the same loop and a ``torch.Generator`` seeded with ``seed``, so with equal
    settings the samples differ only because the models do. A history shorter than the context is
    left-padded with ``PAD_ID``, as ``NeuralLM.generate`` does. Returns the drawn ids only.
    """
    length = check_positive_int("sample", "length", length)
    temperature = check_positive_float("sample", "temperature", temperature)
    generator = torch.Generator().manual_seed(seed)
    history = [PAD_ID] * model.context + list(prompt)
    for _ in range(length):
        window = torch.tensor([history[len(history) - model.context:]], dtype=torch.int64)  # (1, C)
        probs = model.next_probs(window)                                                    # (1, V)
        if temperature != 1.0:
            probs = torch.softmax(torch.log(probs) / temperature, dim=-1)
        history.append(int(torch.multinomial(probs, 1, generator=generator)))
    return history[len(history) - length:]


def words(text: str) -> list[str]:
    """Lower-cased words of ``text`` (letters, inner apostrophes)."""
    return WORD.findall(text.lower())


def distinct_n(tokens: Sequence[str], n: int) -> float:
    """Distinct word n-grams / all word n-grams (Li et al. 2016); 0 if there is none."""
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def generation_quality(text: str, vocabulary: set[str]) -> dict[str, float]:
    """Word-level quality of generated ``text``: share of its words that occur in ``vocabulary``
    (the training text's words), distinct-1, distinct-2, and the number of words."""
    tokens = words(text)
    known = sum(word in vocabulary for word in tokens) / len(tokens) if tokens else math.nan
    return {"in_train_words": known, "distinct_1": distinct_n(tokens, 1),
            "distinct_2": distinct_n(tokens, 2), "words": len(tokens)}
