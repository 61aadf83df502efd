"""Language-model metrics from a mean cross-entropy in nats per token (PyTorch).

perplexity = exp(mean loss), bits per character = mean loss / ln 2, and the token-weighted mean
over batches of different sizes (see ``numpy_ref/metrics.py`` for why it must be weighted).
Computed in float64, on the device of the loss. ``RunningMean`` keeps its sum as a tensor so
that ``update`` never waits for the GPU; reading ``mean`` transfers one number.

Twin: ``numpy_ref/metrics.py``; proof: ``parity_tests/test_metrics.py``.
"""

from __future__ import annotations

import math

import torch

from numpy_ref.validation import check_integer_dtype, check_ndim, check_nonnegative_int, check_same_shape, fail
from torch_lm._checks import is_integer_dtype


def perplexity(mean_loss: torch.Tensor | float) -> torch.Tensor:
    """``exp(mean_loss)``; a tensor (any shape) or number -> float64 tensor of the same shape."""
    return torch.as_tensor(mean_loss, dtype=torch.float64).exp()


def bits_per_char(mean_loss: torch.Tensor | float) -> torch.Tensor:
    """``mean_loss / ln 2``; a tensor (any shape) or number -> float64 tensor of the same shape."""
    return torch.as_tensor(mean_loss, dtype=torch.float64) / math.log(2)


def token_weighted_mean(losses: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Mean over all tokens from per-batch mean losses: ``sum(losses * counts) / sum(counts)``.

    losses (K,) float, the mean loss of each batch; counts (K,) integers >= 0, the tokens of
    each batch, with a positive total -> 0-d float64 tensor on losses' device.
    """
    where = "token_weighted_mean"
    losses = torch.as_tensor(losses, dtype=torch.float64)
    counts = torch.as_tensor(counts, device=losses.device)
    check_ndim(where, "losses", losses.shape, [1])
    check_integer_dtype(where, "counts", is_integer_dtype(counts.dtype), counts.dtype)
    check_same_shape(where, "counts", counts.shape, "losses", losses.shape)
    if counts.numel() > 0 and int(counts.min()) < 0:
        fail(where, f"counts must be >= 0 (tokens per batch), got a minimum of {int(counts.min())}")
    total = int(counts.sum())
    if total == 0:
        fail(where, f"counts must include at least one token, got a total of 0 over {counts.numel()} batches")
    return (losses * counts.to(torch.float64)).sum() / total  # (K,) -> ()


class RunningMean:
    """Token-weighted running mean of a per-token loss, fed one batch at a time.

    ``update(loss_sum, n_tokens)`` takes the *sum* of the batch's token losses (mean loss times
    tokens), as a 0-d tensor (detached here) or a number, so ``mean`` is exactly the mean over
    every token seen.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget everything seen so far (e.g. at every log step)."""
        self._total: torch.Tensor | float = 0.0  # becomes a tensor on the first update's device
        self.count = 0

    def update(self, loss_sum: torch.Tensor | float, n_tokens: int) -> None:
        """Add a batch: the sum of its token losses (a scalar) and its number of tokens."""
        where = "RunningMean.update"
        loss_sum = torch.as_tensor(loss_sum, dtype=torch.float64).detach()
        check_ndim(where, "loss_sum", loss_sum.shape, [0])
        n_tokens = check_nonnegative_int(where, "n_tokens", n_tokens)
        self._total = self._total + loss_sum
        self.count += n_tokens

    @property
    def total(self) -> float:
        """Sum of the token losses since the last reset (synchronises with the device)."""
        return float(self._total)

    @property
    def mean(self) -> float:
        """Mean loss per token over every update since the last reset."""
        if self.count == 0:
            fail("RunningMean.mean", "no tokens seen yet; call update() with n_tokens > 0 first")
        return self.total / self.count

    @property
    def perplexity(self) -> float:
        """``exp(mean)``."""
        return math.exp(self.mean)
