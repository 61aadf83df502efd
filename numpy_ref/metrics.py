"""Language-model metrics from a mean cross-entropy in nats per token (NumPy reference).

* perplexity = exp(mean loss): the size of a uniform choice that would be as surprised; a
  uniform model over V classes has loss ln V and perplexity V.
* bits per character = mean loss / ln 2 (nats -> bits).
* The mean must be **token-weighted**: batches of different sizes contribute in proportion to
  their tokens, so the result equals the mean over all tokens. A plain mean of batch means
  over-weights small batches (such as the last, partial one).

Metrics are computed in float64 whatever the loss dtype: they are summaries reported over
many batches, not part of the computation graph.

Twin: ``torch_lm/metrics.py``; proof: ``parity_tests/test_metrics.py``.
"""

from __future__ import annotations

import math

import numpy as np

from numpy_ref.validation import check_integer_dtype, check_ndim, check_nonnegative_int, check_same_shape, fail


def perplexity(mean_loss):
    """``exp(mean_loss)``; mean_loss a number or array (nats per token) -> float64 of the same shape."""
    return np.exp(np.asarray(mean_loss, dtype=np.float64))


def bits_per_char(mean_loss):
    """``mean_loss / ln 2``; mean_loss a number or array (nats per char) -> float64 of the same shape."""
    return np.asarray(mean_loss, dtype=np.float64) / math.log(2)


def token_weighted_mean(losses, counts) -> np.float64:
    """Mean over all tokens from per-batch mean losses: ``sum(losses * counts) / sum(counts)``.

    losses (K,) float, the mean loss of each batch; counts (K,) integers >= 0, the tokens of
    each batch, with a positive total -> float64 scalar.
    """
    where = "token_weighted_mean"
    losses, counts = np.asarray(losses, dtype=np.float64), np.asarray(counts)
    check_ndim(where, "losses", losses.shape, [1])
    check_integer_dtype(where, "counts", np.issubdtype(counts.dtype, np.integer), counts.dtype)
    check_same_shape(where, "counts", counts.shape, "losses", losses.shape)
    if counts.size > 0 and counts.min() < 0:
        fail(where, f"counts must be >= 0 (tokens per batch), got a minimum of {counts.min()}")
    total = int(counts.sum())
    if total == 0:
        fail(where, f"counts must include at least one token, got a total of 0 over {counts.size} batches")
    return np.dot(losses, counts) / total


class RunningMean:
    """Token-weighted running mean of a per-token loss, fed one batch at a time.

    ``update(loss_sum, n_tokens)`` takes the *sum* of the batch's token losses (mean loss times
    tokens), so the running ``mean`` is exactly the mean over every token seen.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget everything seen so far (e.g. at every log step)."""
        self.total = 0.0
        self.count = 0

    def update(self, loss_sum: float, n_tokens: int) -> None:
        """Add a batch: the sum of its token losses (a scalar) and its number of tokens."""
        where = "RunningMean.update"
        check_ndim(where, "loss_sum", np.shape(loss_sum), [0])
        n_tokens = check_nonnegative_int(where, "n_tokens", n_tokens)
        self.total += float(loss_sum)
        self.count += n_tokens

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
