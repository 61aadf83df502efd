"""Neural bigram (and trigram) language models in PyTorch, and their exact full-batch training.

Twin of ``numpy_ref/bigram.py``, whose docstring gives the math: the table form
``logits = W[code(idx)]`` (W of shape (V**C, V); C = 1 is the V x V bigram) and the factored
form Embedding (V, E) -> flatten -> Linear (C*E -> V); why gradient training of the table form
converges to the count model's maximum-likelihood estimate, and why the factored form can
represent it too once E >= V - 1.

Both modules share NeuralLM's signature ``forward(idx (B, C), targets (B,) | None) ->
(logits (B, V), loss)``, so ``torch_lm.training.heldout.heldout_loss`` and the comparison scripts treat
them like any other model. ``fit_counts`` trains them with **the count trick**: the training
loss over the whole train text equals the count-weighted cross-entropy over its K distinct
contexts (``count_cross_entropy``), so every step is exact full-batch gradient descent at the
cost of K rows (K = 65 for the Tiny Shakespeare bigram, 1,380 for the trigram, instead of a
million windows), which is why a few thousand Adam steps take seconds.

Proof: ``parity_tests/test_bigram.py``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from numpy_ref.bigram import check_context_idx, check_counts_args, check_counts_values, table_rows
from numpy_ref.neural_lm import OUTPUT_INIT_SCALE
from numpy_ref.validation import (
    check_index_range,
    check_integer_dtype,
    check_ndim,
    check_nonnegative_float,
    check_positive_float,
    check_positive_int,
    fail,
)
from torch_lm._checks import check_ids_in_range, is_integer_dtype
from torch_lm.cross_entropy import cross_entropy, log_softmax
from torch_lm.embedding import Embedding
from torch_lm.linear import Linear


# ----------------------------------------------------------------------------- counting
def context_codes(idx: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Base-V code of every context row: idx (B, C) -> (B,) int64, oldest id most significant."""
    codes = torch.zeros(idx.shape[0], dtype=torch.int64, device=idx.device)
    for column in range(idx.shape[1]):
        codes = codes * vocab_size + idx[:, column].long()
    return codes


def count_table(ids: torch.Tensor, context: int, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ids (T,) -> (contexts (K, C) int64, counts (K, V) int64), as ``numpy_ref.bigram.count_table``:
    the distinct contexts followed by a token (sorted by code) and their next-token counts."""
    where = "count_table"
    context = check_positive_int(where, "context", context)
    vocab_size = check_positive_int(where, "vocab_size", vocab_size)
    check_ndim(where, "ids", tuple(ids.shape), (1,))
    check_integer_dtype(where, "ids", is_integer_dtype(ids.dtype), ids.dtype)
    if len(ids) < context + 1:
        fail(where, f"ids has {len(ids)} tokens; context {context} needs at least {context + 1}")
    check_index_range(where, "ids", int(ids.min()), int(ids.max()), vocab_size)
    ids = ids.long()
    windows = ids[:-1].unfold(0, context, 1)  # (T-C, C) view
    codes = context_codes(windows, vocab_size)  # (T-C,)
    distinct, inverse = torch.unique(codes, sorted=True, return_inverse=True)
    counts = torch.zeros(len(distinct) * vocab_size, dtype=torch.int64, device=ids.device)
    counts.index_add_(0, inverse * vocab_size + ids[context:], torch.ones_like(inverse))
    return decode_codes(distinct, context, vocab_size), counts.reshape(len(distinct), vocab_size)


def decode_codes(codes: torch.Tensor, context: int, vocab_size: int) -> torch.Tensor:
    """Inverse of ``context_codes``: codes (K,) int64 -> contexts (K, C) int64."""
    powers = vocab_size ** torch.arange(context - 1, -1, -1, device=codes.device)  # (C,)
    return codes[:, None] // powers % vocab_size


def count_mle_loss(counts: torch.Tensor) -> float:
    """Train loss of the unsmoothed count model, -(1/N) sum c log(c / c_row) with 0 log 0 = 0:
    the infimum of the table form's training loss. counts (K, V) >= 0 -> float."""
    counts = counts.double()
    check_ndim("count_mle_loss", "counts", tuple(counts.shape), (2,))
    check_counts_values("count_mle_loss", float(counts.min()), float(counts.sum()))
    rows = counts.sum(dim=1, keepdim=True).clamp(min=1)  # (K, 1)
    seen = counts > 0
    return float(-(counts[seen] * (counts / rows)[seen].log()).sum() / counts.sum())


def count_cross_entropy(logits: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """-sum(counts * log_softmax(logits)) / sum(counts): logits (K, V) float, counts (K, V) >= 0
    -> 0-d tensor of logits' dtype, the mean cross-entropy over the windows the counts summarise."""
    where = "count_cross_entropy"
    if not logits.is_floating_point():
        fail(where, f"logits must be a floating-point array, got dtype {logits.dtype}")
    check_counts_args(
        where,
        tuple(logits.shape),
        tuple(counts.shape),
        counts.is_floating_point() or is_integer_dtype(counts.dtype),
        counts.dtype,
    )
    check_counts_values(where, float(counts.min()), float(counts.sum()))
    weights = counts.to(logits.dtype)
    return -(weights * log_softmax(logits)).sum() / weights.sum()


# ----------------------------------------------------------------------------- models
class TableLM(nn.Module):
    """``logits = table.weight[code(idx)]``, table (V**C, V): forward(idx (B, C), targets) -> (logits, loss).

    The table starts at zero (every row uniform, loss ln V). ``context`` 1 is the V x V bigram.
    """

    def __init__(self, vocab_size: int, context: int = 1) -> None:
        super().__init__()
        rows = table_rows("TableLM", vocab_size, context)
        self.vocab_size, self.context = vocab_size, context
        self.table = Embedding(rows, vocab_size)
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Zero table (``generator`` is accepted for a uniform interface and unused)."""
        with torch.no_grad():
            self.table.weight.zero_()

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        where = "TableLM.forward"
        check_context_idx(where, self.context, tuple(idx.shape), is_integer_dtype(idx.dtype), idx.dtype)
        check_ids_in_range(where, "idx", idx, self.vocab_size)
        logits = self.table(context_codes(idx, self.vocab_size))  # (B,) -> (B, V)
        return logits, None if targets is None else cross_entropy(logits, targets)


class FactoredLM(nn.Module):
    """Embedding (V, E) -> flatten (B, C*E) -> Linear -> logits (B, V); forward(idx (B, C), targets).

    Initialised like NeuralLM: embedding N(0, 1), output OUTPUT_INIT_SCALE x Xavier, zero bias.
    """

    def __init__(self, vocab_size: int, context: int, embed_dim: int) -> None:
        super().__init__()
        self.vocab_size = check_positive_int("FactoredLM", "vocab_size", vocab_size)
        self.context = check_positive_int("FactoredLM", "context", context)
        self.embedding = Embedding(vocab_size, embed_dim)
        self.output = Linear(context * embed_dim, vocab_size)
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        self.embedding.reset_parameters(generator)
        self.output.reset_parameters(generator)
        with torch.no_grad():
            self.output.weight.mul_(OUTPUT_INIT_SCALE)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        check_context_idx("FactoredLM.forward", self.context, tuple(idx.shape), is_integer_dtype(idx.dtype), idx.dtype)
        x = self.embedding(idx)  # (B, C, E)
        logits = self.output(x.reshape(x.shape[0], -1))  # (B, C*E) -> (B, V)
        return logits, None if targets is None else cross_entropy(logits, targets)


# ----------------------------------------------------------------------------- training
def l2_penalty(model: nn.Module, n_tokens: int) -> torch.Tensor:
    """l2 = 1 scale of the weight penalty: sum of w**2 over the weight matrices, divided by N.

    ``fit_counts`` minimises loss + l2 * this: with the loss a mean over N tokens, that is the
    MAP estimate under a Gaussian prior N(0, 1 / (2 l2)) on every weight, so one l2 means the
    same prior whatever the table size. It acts as smoothing: an unseen (context, next) pair
    keeps a finite logit instead of drifting to -inf.
    """
    return sum((p**2).sum() for p in model.parameters() if p.ndim >= 2) / n_tokens


def fit_counts(
    model: nn.Module, contexts: torch.Tensor, counts: torch.Tensor, steps: int, lr: float = 0.1, l2: float = 0.0
) -> list[float]:
    """Full-batch Adam on the count-weighted loss (the count trick): exact gradient descent on
    the whole text's training loss. contexts (K, C), counts (K, V) from ``count_table``.

    Minimises ``count_cross_entropy(model(contexts), counts) + l2 * l2_penalty``; returns the
    unpenalised training loss before every step and after the last (steps + 1 floats).
    Deterministic: no sampling, and Adam's update is a pure function of the gradients.
    """
    steps = check_positive_int("fit_counts", "steps", steps)
    lr = check_positive_float("fit_counts", "lr", lr)
    l2 = check_nonnegative_float("fit_counts", "l2", l2)
    n_tokens = int(counts.sum())
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    # Cosine decay to 0: with a constant rate Adam's normalised steps keep the loss oscillating
    # about 1e-4 above the optimum (the -inf directions of unseen pairs never stop pulling).
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * step / steps)))
    history = []
    for _ in range(steps):
        loss = count_cross_entropy(model(contexts)[0], counts)
        history.append(float(loss.detach()))
        objective = loss + l2 * l2_penalty(model, n_tokens) if l2 else loss
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
        optimizer.step()
        schedule.step()
    with torch.no_grad():
        history.append(float(count_cross_entropy(model(contexts)[0], counts)))
    return history
