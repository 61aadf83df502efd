"""The held-out protocol (docs/DESIGN.md §3), once for every model: which positions are scored,
with which context, and how the figures are reported.

Every target position of the held-out text is predicted exactly once, from the ``context``
characters before it; the first ones reach back into the end of the preceding text (the end of
train for val). The figures are the mean −ln p in nats per character, e^mean and mean / ln 2.
``heldout_loss`` runs it for a NeuralLM-like module (its own loss, in its own dtype);
``torch_lm.reports.models.heldout`` for any character model of the reports (probabilities in
float64). Both build their windows with ``heldout_stream`` and ``windows``; a module with a
``forward_sequence`` (the NeuralLM) is evaluated on ``sequence_rows`` instead, every position of a
row at once, which computes each fusion level once per position rather than once per window.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from numpy_ref.validation import check_positive_int
from torch_lm.metrics import bits_per_char, perplexity


@dataclass(frozen=True)
class HeldoutResult:
    """The held-out protocol's figures: mean loss in nats/char, e^loss, loss/ln 2, positions."""

    loss: float
    perplexity: float
    bpc: float
    positions: int

    @classmethod
    def from_mean(cls, loss: float, positions: int) -> HeldoutResult:
        """The figures of a mean loss (nats/char) over ``positions`` targets."""
        return cls(
            loss=loss, perplexity=float(perplexity(loss)), bpc=float(bits_per_char(loss)), positions=int(positions)
        )

    def to_dict(self) -> dict:
        """The ``evaluate --json`` keys: ``val_loss``, ``val_ppl``, ``bpc``, ``positions``."""
        return {"val_loss": self.loss, "val_ppl": self.perplexity, "bpc": self.bpc, "positions": self.positions}


def heldout_stream(history: torch.Tensor, targets: torch.Tensor, context: int) -> torch.Tensor:
    """The last ``context`` ids of ``history`` followed by ``targets``: (context + N,).

    Position ``context + i`` of the stream is ``targets[i]``, and its window is the ``context``
    ids before it. Raises ``ValueError`` if the history is shorter than the context or there is
    no target.
    """
    if len(history) < context or len(targets) < 1:
        raise ValueError(
            f"heldout: need at least {context} history ids and 1 target, got {len(history)} and {len(targets)}"
        )
    return torch.cat([history[len(history) - context :], targets.to(history.device)])


def windows(
    stream: torch.Tensor, context: int, start: int, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(x (b, context), y (b,)) for every position ``start..len(stream)-1``, ``batch_size`` at a time:
    y the id at the position, x the ``context`` ids before it."""
    arange = torch.arange(context, device=stream.device)  # (C,)
    for first in range(start, len(stream), batch_size):
        positions = torch.arange(first, min(first + batch_size, len(stream)), device=stream.device)  # (b,)
        yield stream[positions[:, None] - context + arange], stream[positions]  # (b, C), (b,)


ROW_POSITIONS = 256  # targets per row of the sequence evaluation


def sequence_rows(stream: torch.Tensor, context: int, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Every target of ``stream`` (the ids after its first ``context``) in rows, about
    ``batch_size`` targets at a time: (idx (R, P + context - 1), targets (R, P)), row r covering
    P consecutive targets with the context of the first one; the remainder is a last row of its own.
    """
    n_targets = len(stream) - context
    positions = min(ROW_POSITIONS, batch_size)  # P
    full_rows, rows_per_batch = n_targets // positions, max(1, batch_size // positions)
    window = torch.arange(positions + context - 1, device=stream.device)  # (P + C - 1,)
    for first in range(0, full_rows, rows_per_batch):
        starts = positions * torch.arange(first, min(first + rows_per_batch, full_rows), device=stream.device)  # (R,)
        idx = stream[starts[:, None] + window]  # (R, P + C - 1)
        yield idx, stream[starts[:, None] + context + window[:positions]]  # (R, P)
    done = full_rows * positions
    if done < n_targets:
        yield stream[None, done : len(stream) - 1], stream[None, done + context :]


@torch.no_grad()
def heldout_loss(
    model: torch.nn.Module, history: torch.Tensor, targets: torch.Tensor, context: int, batch_size: int = 4096
) -> HeldoutResult:
    """The held-out figures of a module with ``forward(x, y) -> (logits, mean loss)`` on
    ``targets`` after ``history`` (the train split and val for the protocol).

    Token-weighted: each batch's mean loss times its number of targets, summed in float64 on the
    model's device, in eval mode (no dropout; the mode is restored afterwards). A module with a
    ``forward_sequence`` is evaluated row by row (``sequence_rows``): the same sum up to rounding.
    """
    check_positive_int("heldout_loss", "context", context)
    check_positive_int("heldout_loss", "batch_size", batch_size)
    device = next(model.parameters()).device
    stream = heldout_stream(history.to(device), targets, context)  # (C + N,)
    total = torch.zeros((), dtype=torch.float64, device=device)
    was_training = model.training
    model.eval()
    try:
        sequence_forward = getattr(model, "forward_sequence", None)
        if sequence_forward is None:
            batches = ((model, x, y) for x, y in windows(stream, context, context, batch_size))
        else:
            batches = ((sequence_forward, x, y) for x, y in sequence_rows(stream, context, batch_size))
        for forward, x, y in batches:
            _, loss = forward(x, y)
            total += loss.double() * y.numel()
    finally:
        model.train(was_training)
    return HeldoutResult.from_mean(total.item() / len(targets), len(targets))


def sharded_heldout(
    model: torch.nn.Module,
    prefix: torch.Tensor,
    shard: torch.Tensor,
    context: int,
    batch_size: int,
    all_reduce: Callable[[torch.Tensor], torch.Tensor],
) -> HeldoutResult:
    """The held-out figures over every rank's shard of the val positions: each rank scores its
    ``shard`` after its ``prefix`` (the ``context`` ids before it) and ``all_reduce`` sums the
    (sum of losses, positions) pairs, so each position counts exactly once. One rank: the whole
    split, ``all_reduce`` the identity."""
    device = next(model.parameters()).device
    loss_sum, positions = 0.0, 0
    if len(shard):
        result = heldout_loss(model, prefix, shard, context, batch_size)
        loss_sum, positions = result.loss * result.positions, result.positions
    totals = torch.tensor([loss_sum, positions], dtype=torch.float64, device=device)
    loss_sum, positions = all_reduce(totals).tolist()
    return HeldoutResult.from_mean(loss_sum / positions, int(positions))


def ngram_heldout(
    ngram_class, ids, n_train: int, order: int, vocab_size: int, smoothing: str, **settings
) -> dict[str, float]:
    """A count model of either engine (``numpy_ref.ngram.NGramLM`` or ``torch_lm.ngram.NGramLM``,
    ids of its array type) fitted on ``ids[:n_train]`` and scored on every later position, with
    history from the end of train: ``{"loss", "fit_s", "score_s"}`` (nats/char, seconds)."""
    began = time.perf_counter()
    model = ngram_class.fit(ids[:n_train], order, vocab_size, smoothing, **settings)
    fitted = time.perf_counter()
    loss = model.score(ids, n_train)
    return {"loss": loss, "fit_s": fitted - began, "score_s": time.perf_counter() - fitted}
