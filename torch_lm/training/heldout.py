"""The held-out protocol (docs/DESIGN.md §3), once for every model: which positions are scored,
with which context, and how the figures are reported.

Every target position of the held-out text is predicted exactly once, from the ``context``
characters before it; the first ones reach back into the end of the preceding text (the end of
train for val). The figures are the mean −ln p in nats per character, e^mean and mean / ln 2
(``HeldoutResult``, the one result type).

One row iterator serves every scorer: ``rows`` cuts the targets of a ``heldout_stream`` into rows
of P consecutive targets with their contexts (P = 1: windows). A neural model is scored by
``next_log_probs`` / ``target_log_probs`` (the sequence forward row by row when it has one, the
window forward otherwise; log-softmax in float64), which ``heldout_loss`` (the trainer and
``evaluate``), the reports' ``NeuralModel``, the mixtures and dynamic evaluation all use; a count
model by ``ngram_heldout``.
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

    @classmethod
    def from_target_log_probs(cls, log_probs: torch.Tensor) -> HeldoutResult:
        """The figures of the log-probabilities (N,) a model gave the targets."""
        return cls.from_mean(float(-log_probs.double().mean()), len(log_probs))

    @classmethod
    def from_target_probs(cls, probs: torch.Tensor) -> HeldoutResult:
        """The figures of the probabilities (N,) a model gave the targets."""
        return cls.from_target_log_probs(torch.log(probs.double()))

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


ROW_POSITIONS = 256  # targets per row when a neural model is scored by its sequence forward


def rows(
    stream: torch.Tensor, context: int, per_row: int, rows_per_batch: int = 1, start: int | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Every target of ``stream`` from position ``start`` (default ``context``, the first with a
    full context), each once and in order, in rows of ``per_row`` consecutive targets with their
    contexts, ``rows_per_batch`` rows at a time: (idx (R, per_row + context - 1), targets
    (R, per_row)); the remainder is a last, shorter row of its own. ``per_row`` 1 gives windows,
    idx (R, context)."""
    start = context if start is None else start
    full_rows, remainder = divmod(len(stream) - start, per_row)
    span = torch.arange(per_row + context - 1, device=stream.device)  # (P + C - 1,)
    for first in range(0, full_rows, rows_per_batch):
        row = torch.arange(first, min(first + rows_per_batch, full_rows), device=stream.device)  # (R,)
        offsets = start - context + per_row * row  # where each row's first context begins
        yield stream[offsets[:, None] + span], stream[offsets[:, None] + context + span[:per_row]]
    if remainder:
        first_target = start + full_rows * per_row
        yield stream[None, first_target - context : len(stream) - 1], stream[None, first_target:]


def target_contexts(stream: torch.Tensor, context: int) -> torch.Tensor:
    """The ``context`` ids before every target of ``stream``: (N, context), one window per row."""
    return next(rows(stream, context, 1, rows_per_batch=len(stream)))[0]


def pick(table: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The targets' entries of per-position distributions: table (N, V), targets (N,) -> (N,)."""
    return table.gather(1, targets.to(table.device)[:, None]).squeeze(1)


def log_prob_batches(
    module: torch.nn.Module, stream: torch.Tensor, context: int, batch_size: int = 4096, start: int | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(log p (n, V) float64, targets (n,)) for every target of ``stream`` from ``start``, in order:
    the module's sequence forward on rows of ``ROW_POSITIONS`` targets when it has one, its window
    forward otherwise, about ``batch_size`` targets at a time, in eval mode (restored after)."""
    sequence = getattr(module, "forward_sequence", None)
    per_row = min(ROW_POSITIONS, batch_size) if sequence is not None else 1
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            for idx, y in rows(stream, context, per_row, max(1, batch_size // per_row), start):
                logits = sequence(idx)[0] if sequence is not None else module(idx)[0]  # (R, P, V) or (R, V)
                yield torch.log_softmax(logits.double(), dim=-1).reshape(y.numel(), -1), y.reshape(-1)
    finally:
        module.train(was_training)


def next_log_probs(
    module: torch.nn.Module, history: torch.Tensor, targets: torch.Tensor, batch_size: int = 4096
) -> torch.Tensor:
    """log p(next character) at every target after ``history``: (N, V) float64 on the module's
    device. ``module`` has ``config.context`` (a NeuralLM) or is scored with its ``context``."""
    device = next(module.parameters()).device
    context = module.config.context
    stream = heldout_stream(history.to(device), targets, context)
    return torch.cat([lp for lp, _ in log_prob_batches(module, stream, context, batch_size)])


def target_log_probs(
    module: torch.nn.Module, history: torch.Tensor, targets: torch.Tensor, context: int, batch_size: int = 4096
) -> torch.Tensor:
    """log p(target) at every target after ``history``: (N,) float64 on the module's device."""
    check_positive_int("heldout", "context", context)
    check_positive_int("heldout", "batch_size", batch_size)
    device = next(module.parameters()).device
    stream = heldout_stream(history.to(device), targets, context)
    return torch.cat([pick(lp, y) for lp, y in log_prob_batches(module, stream, context, batch_size)])


def heldout_loss(
    model: torch.nn.Module, history: torch.Tensor, targets: torch.Tensor, context: int, batch_size: int = 4096
) -> HeldoutResult:
    """The held-out figures of a NeuralLM-like module (``forward(x) -> (logits, _)``, and
    ``forward_sequence`` if it has one) on ``targets`` after ``history`` (the train split and val
    for the protocol): the mean of ``-target_log_probs``, summed in float64 on the model's device."""
    return HeldoutResult.from_target_log_probs(target_log_probs(model, history, targets, context, batch_size))


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


@dataclass(frozen=True)
class CountScore:
    """A count model's held-out figures and what fitting and scoring it took (seconds)."""

    result: HeldoutResult
    fit_s: float
    score_s: float


def ngram_heldout(
    ngram_class, ids, n_train: int, order: int, vocab_size: int, smoothing: str, **settings
) -> CountScore:
    """A count model of either engine (``numpy_ref.ngram.NGramLM`` or ``torch_lm.ngram.NGramLM``,
    ids of its array type) fitted on ``ids[:n_train]`` and scored on every later position, with
    history from the end of train."""
    began = time.perf_counter()
    model = ngram_class.fit(ids[:n_train], order, vocab_size, smoothing, **settings)
    fitted = time.perf_counter()
    loss = model.score(ids, n_train)
    result = HeldoutResult.from_mean(loss, len(ids) - n_train)
    return CountScore(result, fitted - began, time.perf_counter() - fitted)
