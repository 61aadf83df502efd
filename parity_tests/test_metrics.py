"""Metrics: perplexity, bits per character, the token-weighted mean and RunningMean, numpy_ref
against torch_lm, with golden values (a uniform model over V classes has perplexity V) and the
errors for bad input.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from numpy_ref import metrics as ref
from numpy_ref.cross_entropy import cross_entropy as ref_cross_entropy
from parity_tests.conftest import assert_close, to_torch
from torch_lm import metrics as tlm
from torch_lm.cross_entropy import cross_entropy as torch_cross_entropy

# `dtypes` is an immutable (numpy dtype, torch dtype) pair, safe to share across examples.
SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

batch_sizes = st.lists(st.integers(1, 20), min_size=1, max_size=8)
seeds = st.integers(0, 2**32 - 1)


def split_into_batches(token_losses: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    """Consecutive batches of the given sizes (which sum to len(token_losses))."""
    return np.split(token_losses, np.cumsum(sizes)[:-1])


# ---------------------------------------------------------------- perplexity and bits per character


@pytest.mark.parametrize("vocab", [2, 65, 10_000])
def test_uniform_model_over_v_classes_has_perplexity_v(vocab, rng):
    logits, targets = np.zeros((5, vocab)), rng.integers(0, vocab, 5)
    loss, _ = ref_cross_entropy(logits, targets)
    torch_loss = torch_cross_entropy(to_torch(logits), to_torch(targets))
    assert float(ref.perplexity(loss)) == pytest.approx(vocab, rel=1e-12)
    assert float(tlm.perplexity(torch_loss)) == pytest.approx(vocab, rel=1e-12)
    assert float(ref.bits_per_char(loss)) == pytest.approx(math.log2(vocab), rel=1e-12)
    assert float(tlm.bits_per_char(torch_loss)) == pytest.approx(math.log2(vocab), rel=1e-12)


def test_golden_perplexity_and_bits():
    assert float(ref.perplexity(0.0)) == 1.0  # certain of every token
    assert float(ref.perplexity(1.539)) == pytest.approx(4.66, abs=5e-3)  # docs/DESIGN.md §5, Kneser-Ney
    assert float(ref.bits_per_char(math.log(2))) == pytest.approx(1.0, rel=1e-15)
    assert float(tlm.perplexity(0.0)) == 1.0
    assert float(tlm.bits_per_char(math.log(2))) == pytest.approx(1.0, rel=1e-15)


def test_perplexity_and_bits_match_elementwise(dtypes, rng):
    np_dtype, torch_dtype = dtypes
    losses = rng.uniform(0.0, 5.0, (3, 4)).astype(np_dtype)
    for ref_fn, torch_fn, exact in [
        (ref.perplexity, tlm.perplexity, np.exp(losses.astype(np.float64))),
        (ref.bits_per_char, tlm.bits_per_char, losses.astype(np.float64) / math.log(2)),
    ]:
        out, torch_out = ref_fn(losses), torch_fn(to_torch(losses, torch_dtype))
        assert out.dtype == np.float64 and torch_out.dtype == torch.float64  # metrics are float64
        assert_close(out, exact)
        assert_close(torch_out, exact)


# ---------------------------------------------------------------- token-weighted mean, RunningMean


@SETTINGS
@given(sizes=batch_sizes, seed=seeds)
def test_token_weighted_mean_over_batches_equals_mean_over_all_tokens(dtypes, sizes, seed):
    np_dtype, torch_dtype = dtypes
    token_losses = np.random.default_rng(seed).uniform(0.0, 6.0, sum(sizes)).astype(np_dtype)
    batches = split_into_batches(token_losses, sizes)
    batch_means = np.array([b.astype(np.float64).mean() for b in batches])
    expected = token_losses.astype(np.float64).mean()

    assert_close(ref.token_weighted_mean(batch_means, sizes), expected)
    assert_close(tlm.token_weighted_mean(to_torch(batch_means), torch.tensor(sizes)), expected)
    running, torch_running = ref.RunningMean(), tlm.RunningMean()
    for batch in batches:
        running.update(batch.astype(np.float64).sum(), batch.size)
        torch_running.update(to_torch(batch, torch_dtype).sum(), batch.size)
    assert running.mean == pytest.approx(expected, rel=1e-12)
    assert running.perplexity == pytest.approx(math.exp(expected), rel=1e-12)
    # Compared at the input dtype's tolerance: torch sums each batch in that dtype.
    assert_close(
        torch.tensor([torch_running.mean, torch_running.perplexity], dtype=torch_dtype),
        torch.tensor([running.mean, running.perplexity], dtype=torch_dtype),
    )


def test_batches_weigh_by_their_tokens_not_equally():
    # One token of loss 5 and a batch of nine tokens of loss 1: the token mean is 14 / 10,
    # where an unweighted mean of the two batch means would report 3.
    batch_means, sizes = [5.0, 1.0], [1, 9]
    assert float(ref.token_weighted_mean(batch_means, sizes)) == pytest.approx(1.4, rel=1e-15)
    assert float(tlm.token_weighted_mean(batch_means, sizes)) == pytest.approx(1.4, rel=1e-15)


def test_batches_of_zero_tokens_contribute_nothing():
    assert float(ref.token_weighted_mean([2.0, 99.0], [3, 0])) == 2.0
    assert float(tlm.token_weighted_mean([2.0, 99.0], [3, 0])) == 2.0


@pytest.mark.parametrize("running_mean", [ref.RunningMean, tlm.RunningMean], ids=["numpy", "torch"])
def test_running_mean_reset_forgets(running_mean):
    running = running_mean()
    running.update(100.0, 10)
    running.reset()
    running.update(6.0, 3)
    assert (running.total, running.count, running.mean) == (6.0, 3, 2.0)
    assert running.perplexity == pytest.approx(math.exp(2.0), rel=1e-15)


def test_torch_running_mean_does_not_keep_the_graph():
    weight = torch.ones(3, requires_grad=True)
    running = tlm.RunningMean()
    running.update((weight * 2.0).sum(), 3)
    assert running.mean == 2.0
    assert weight.grad is None and not torch.as_tensor(running.total).requires_grad


# ---------------------------------------------------------------- bad input -> ValueError on both sides

BAD_WEIGHTED_MEAN_INPUT = [
    ([1.0, 2.0], [3, -1], r"counts must be >= 0 \(tokens per batch\), got a minimum of -1"),
    ([1.0, 2.0], [3.0, 1.0], r"counts must hold integers, got dtype .*float64"),
    ([1.0, 2.0], [3, 1, 2], r"counts has shape \(3,\) but losses has shape \(2,\)"),
    ([[1.0, 2.0]], [[3, 1]], r"losses must be 1-D, got shape \(1, 2\)"),
    ([1.0, 2.0], [0, 0], r"counts must include at least one token, got a total of 0 over 2 batches"),
    ([], np.array([], dtype=np.int64), r"counts must include at least one token, got a total of 0 over 0 batches"),
]


@pytest.mark.parametrize("losses, counts, message", BAD_WEIGHTED_MEAN_INPUT)
def test_bad_weighted_mean_input_raises_on_both_sides(losses, counts, message):
    with pytest.raises(ValueError, match=message):
        ref.token_weighted_mean(losses, counts)
    with pytest.raises(ValueError, match=message):
        tlm.token_weighted_mean(torch.tensor(losses, dtype=torch.float64), torch.from_numpy(np.asarray(counts)))


@pytest.mark.parametrize("running_mean", [ref.RunningMean, tlm.RunningMean], ids=["numpy", "torch"])
@pytest.mark.parametrize(
    "loss_sum, n_tokens, message",
    [
        (1.0, -2, r"RunningMean.update: n_tokens must be an integer >= 0, got -2"),
        (1.0, 2.0, r"RunningMean.update: n_tokens must be an integer >= 0, got 2.0"),
        (1.0, True, r"RunningMean.update: n_tokens must be an integer >= 0, got True"),
        ([1.0, 2.0], 2, r"RunningMean.update: loss_sum must be 0-D, got shape \(2,\)"),
    ],
)
def test_running_mean_rejects_bad_updates(running_mean, loss_sum, n_tokens, message):
    with pytest.raises(ValueError, match=message):
        running_mean().update(loss_sum, n_tokens)


@pytest.mark.parametrize("running_mean", [ref.RunningMean, tlm.RunningMean], ids=["numpy", "torch"])
def test_running_mean_of_nothing_raises(running_mean):
    running = running_mean()
    running.update(0.0, 0)
    with pytest.raises(ValueError, match=r"RunningMean.mean: no tokens seen yet"):
        _ = running.mean
