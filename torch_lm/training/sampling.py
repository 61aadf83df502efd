"""Sampling text, once for every model: the trainer's samples, ``generate.py`` and the reports.

``sample`` draws one id at a time from a model's next-character distribution given the last
``context`` ids, with a seeded ``torch.Generator``; the models differ only in ``next_probs``.
``neural_next_probs`` is that distribution for a NeuralLM-like module: softmax(logits / T) over
the ``top_k`` largest logits. The reports' count models supply theirs in float64
(``torch_lm.reports.models``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from numpy_ref.validation import check_integer_dtype, check_ndim, check_positive_int
from torch_lm._checks import check_ids_in_range, is_integer_dtype
from torch_lm.cross_entropy import softmax
from torch_lm.neural_lm import PAD_ID

NextProbs = Callable[[torch.Tensor], torch.Tensor]  # windows (B, C) int64 -> probabilities (B, V)


def sample_prompt(vocab) -> str:
    """Samples start at a new line when the vocabulary has one (as the plays' speeches do)."""
    return "\n" if "\n" in vocab else vocab.to_list()[0]


@torch.no_grad()
def sample(
    next_probs: NextProbs,
    context: int,
    vocab_size: int,
    prompt: torch.Tensor,
    length: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``length`` ids drawn one at a time after the prompt.

    prompt (B, t) integer ids, any t >= 0 -> (B, t + length), the prompt first. Each draw
    conditions on the last ``context`` ids; a prompt shorter than the context is left-padded with
    ``PAD_ID`` (not returned). ``generator`` must live on the prompt's device.
    """
    where = "sample"
    check_integer_dtype(where, "prompt", is_integer_dtype(prompt.dtype), prompt.dtype)
    check_ndim(where, "prompt", tuple(prompt.shape), (2,))
    check_positive_int(where, "length", length)
    check_ids_in_range(where, "prompt", prompt, vocab_size)
    pad = torch.full((prompt.shape[0], context), PAD_ID, dtype=torch.long, device=prompt.device)
    seq = torch.cat([pad, prompt.long()], dim=1)  # (B, C + t)
    for _ in range(length):
        probs = next_probs(seq[:, seq.shape[1] - context :])  # (B, V)
        next_id = torch.multinomial(probs, 1, generator=generator)  # (B, 1)
        seq = torch.cat([seq, next_id], dim=1)  # (B, C + t + 1)
    return seq[:, context:]  # (B, t + length)


def neural_next_probs(model: torch.nn.Module, temperature: float = 1.0, top_k: int | None = None) -> NextProbs:
    """softmax(logits / temperature) of ``model(windows)``, restricted to the ``top_k`` largest
    logits when given; a very low temperature approaches greedy argmax."""
    if top_k is not None:
        check_positive_int("sample", "top_k", top_k)

    def next_probs(windows: torch.Tensor) -> torch.Tensor:
        logits, _ = model(windows)  # (B, V)
        return softmax(keep_top_k(logits, top_k), temperature)

    return next_probs


def generate(
    model: torch.nn.Module,
    prompt: torch.Tensor,
    length: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``sample`` from a NeuralLM (``model.config`` gives the context and vocabulary), in eval
    mode (no dropout); the previous mode is restored. prompt (B, t) -> (B, t + length)."""
    was_training = model.training
    model.eval()
    try:
        return sample(
            neural_next_probs(model, temperature, top_k),
            model.config.context,
            model.config.vocab_size,
            prompt,
            length,
            generator,
        )
    finally:
        model.train(was_training)


def keep_top_k(logits: torch.Tensor, k: int | None) -> torch.Tensor:
    """Set every logit below the k-th largest of its row to -inf (softmax gives it 0)."""
    if k is None or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[:, -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, float("-inf"))
