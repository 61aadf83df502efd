"""Sampling text, once for every model: the trainer's samples, ``generate.py`` and the reports.

``draw`` is the one sampling loop: it draws one id at a time with a seeded ``torch.Generator``,
asking a ``Stepper`` for the next-character distribution after the prompt and after every drawn
id; the models differ only in their stepper. A window model (any ``next_probs`` of the last
``context`` ids: the reports' count models, ``torch_lm.reports.models``) gets ``WindowStepper``,
which keeps those ids, PAD-padded on the left (``sample``). A NeuralLM gets
``IncrementalStepper``, its incremental predictor, which computes every fusion level once per drawn
id instead of the whole window (``generate``): the NumPy twin (``numpy_ref.incremental``) for a
float32 or float64 model on the CPU, where a step is a few one-row products and torch's per-call
dispatch costs more than the arithmetic, the torch one (``torch_lm.incremental``) elsewhere. ``neural_probs`` is the
NeuralLM's distribution from its logits: softmax(logits / T) over the ``top_k`` largest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch

from numpy_ref.incremental import IncrementalLM as NumpyIncrementalLM
from numpy_ref.validation import check_integer_dtype, check_ndim, check_positive_int
from torch_lm._checks import check_ids_in_range, is_integer_dtype
from torch_lm.cross_entropy import softmax
from torch_lm.incremental import IncrementalLM, numpy_views
from torch_lm.neural_lm import PAD_ID

NextProbs = Callable[[torch.Tensor], torch.Tensor]  # windows (B, C) int64 -> probabilities (B, V)


class Stepper(Protocol):
    """A model's next-character distribution, one drawn id at a time."""

    def start(self, prompt: torch.Tensor) -> torch.Tensor:
        """prompt (B, t) int64, t >= 0 -> probabilities (B, V) of the character after it."""
        ...

    def advance(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B,) int64, the ids just drawn -> probabilities (B, V) of the character after them."""
        ...


def sample_prompt(vocab) -> str:
    """Samples start at a new line when the vocabulary has one (as the plays' speeches do)."""
    return "\n" if "\n" in vocab else vocab.to_list()[0]


@torch.no_grad()
def draw(
    stepper: Stepper,
    vocab_size: int,
    prompt: torch.Tensor,
    length: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``length`` ids drawn one at a time after the prompt, each from ``stepper``'s distribution.

    prompt (B, t) integer ids in [0, vocab_size), any t >= 0 -> (B, t + length), the prompt first.
    ``generator`` must live on the prompt's device.
    """
    where = "sample"
    check_integer_dtype(where, "prompt", is_integer_dtype(prompt.dtype), prompt.dtype)
    check_ndim(where, "prompt", tuple(prompt.shape), (2,))
    check_positive_int(where, "length", length)
    check_ids_in_range(where, "prompt", prompt, vocab_size)
    prompt = prompt.long()
    drawn = []
    probs = stepper.start(prompt)  # (B, V)
    for i in range(length):
        if i:  # no distribution is asked for after the last draw
            probs = stepper.advance(drawn[-1][:, 0])  # (B, V)
        drawn.append(torch.multinomial(probs, 1, generator=generator))  # (B, 1)
    return torch.cat([prompt, *drawn], dim=1)  # (B, t + length)


def sample(
    next_probs: NextProbs,
    context: int,
    vocab_size: int,
    prompt: torch.Tensor,
    length: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``draw`` from a window model: each draw conditions on the last ``context`` ids, a prompt
    shorter than the context left-padded with ``PAD_ID`` (not returned). prompt (B, t), any
    t >= 0 -> (B, t + length)."""
    return draw(WindowStepper(next_probs, context), vocab_size, prompt, length, generator)


class WindowStepper:
    """A window model as a ``Stepper``: keeps the last ``context`` ids (B, C), PAD-padded on the
    left while fewer have been seen, and asks ``next_probs`` of them."""

    def __init__(self, next_probs: NextProbs, context: int) -> None:
        self.next_probs = next_probs
        self.context = context
        self.window: torch.Tensor | None = None  # (B, C)

    def start(self, prompt: torch.Tensor) -> torch.Tensor:
        pad = torch.full((prompt.shape[0], self.context), PAD_ID, dtype=torch.long, device=prompt.device)
        return self._next(torch.cat([pad, prompt], dim=1))  # (B, C + t)

    def advance(self, ids: torch.Tensor) -> torch.Tensor:
        return self._next(torch.cat([self.window, ids[:, None]], dim=1))  # (B, C + 1)

    def _next(self, seq: torch.Tensor) -> torch.Tensor:
        self.window = seq[:, seq.shape[1] - self.context :]  # (B, C); context 0 keeps (B, 0), as [:, -0:] would not
        return self.next_probs(self.window)


class IncrementalStepper:
    """A NeuralLM as a ``Stepper``: its incremental predictor (one step per drawn id), and
    ``neural_probs`` of the logits. The model must be in eval mode (``generate`` puts it there)."""

    def __init__(self, model: torch.nn.Module, temperature: float = 1.0, top_k: int | None = None) -> None:
        if top_k is not None:
            check_positive_int("sample", "top_k", top_k)
        self.predictor = incremental_predictor(model)
        self.temperature, self.top_k = temperature, top_k

    def start(self, prompt: torch.Tensor) -> torch.Tensor:
        # The predictor's stream starts as `context` pads, and a pad fed first keeps it so while giving the
        # prediction after it: feeding [PAD, prompt] is feeding the PAD-padded prompt. Its state is a function
        # of the last `context` ids only, so a longer prompt is fed from there.
        pad = torch.full((prompt.shape[0], 1), PAD_ID, dtype=torch.long, device=prompt.device)
        padded = torch.cat([pad, prompt], dim=1)  # (B, 1 + t)
        self.predictor.reset(prompt.shape[0])
        logits = self.predictor.feed(padded[:, max(0, padded.shape[1] - self.predictor.config.context) :])
        return neural_probs(logits, self.temperature, self.top_k)

    def advance(self, ids: torch.Tensor) -> torch.Tensor:
        return neural_probs(self.predictor.step(ids), self.temperature, self.top_k)


def incremental_predictor(model: torch.nn.Module):
    """The incremental predictor of a NeuralLM in eval mode: ``reset``, ``feed`` and ``step`` on
    tensors. NumPy's on the CPU in float32 or float64 (``NumpySteps``), torch's elsewhere."""
    weight = model.embedding.weight
    if weight.device.type == "cpu" and weight.dtype in (torch.float32, torch.float64) and not model.training:
        return NumpySteps(model)
    return IncrementalLM(model)  # which refuses a model in training mode


class NumpySteps:
    """``numpy_ref.incremental.IncrementalLM`` on views of a CPU model's parameters (the same
    memory), taking and returning tensors."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.lm = NumpyIncrementalLM(numpy_views(model), model.config)
        self.config = model.config

    def reset(self, batch: int = 1) -> None:
        self.lm.reset(batch)

    def feed(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.lm.feed(ids.numpy()))

    def step(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.lm.step(ids.numpy()))


def neural_probs(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None) -> torch.Tensor:
    """softmax(logits / temperature) over the ``top_k`` largest logits of each row (all when None):
    logits (B, V) -> probabilities (B, V); a very low temperature approaches greedy argmax."""
    return softmax(keep_top_k(logits, top_k), temperature)


def neural_next_probs(model: torch.nn.Module, temperature: float = 1.0, top_k: int | None = None) -> NextProbs:
    """``neural_probs`` of ``model(windows)``: a NeuralLM-like module as a window model."""
    if top_k is not None:
        check_positive_int("sample", "top_k", top_k)

    def next_probs(windows: torch.Tensor) -> torch.Tensor:
        logits, _ = model(windows)  # (B, V)
        return neural_probs(logits, temperature, top_k)

    return next_probs


def generate(
    model: torch.nn.Module,
    prompt: torch.Tensor,
    length: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    incremental: bool = True,
) -> torch.Tensor:
    """``draw`` from a NeuralLM (``model.config`` gives the context and vocabulary), in eval mode
    (no dropout); the previous mode is restored. prompt (B, t) -> (B, t + length).

    ``incremental`` (the default) steps the incremental predictor; False runs the window forward
    of the last ``context`` ids for every draw (the predictor's witness, and the benchmark's
    baseline). The two give the same logits up to float rounding."""
    was_training = model.training
    model.eval()
    try:
        if incremental:
            stepper = IncrementalStepper(model, temperature, top_k)
        else:
            stepper = WindowStepper(neural_next_probs(model, temperature, top_k), model.config.context)
        return draw(stepper, model.config.vocab_size, prompt, length, generator)
    finally:
        model.train(was_training)


def keep_top_k(logits: torch.Tensor, k: int | None) -> torch.Tensor:
    """Set every logit below the k-th largest of its row to -inf (softmax gives it 0)."""
    if k is None or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[:, -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, float("-inf"))
