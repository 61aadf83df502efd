"""Metrics: perplexity, bits per character, the token-weighted mean and RunningMean, numpy_ref
against torch_lm, with golden values (a uniform model over V classes has perplexity V) and the
errors for bad input.

Metrics have no gradients, so each is a Component compared on its outputs alone.
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
from torch_lm import metrics as tlm
from torch_lm.cross_entropy import cross_entropy as torch_cross_entropy
from torch_lm.parity import (
    DTYPE_PAIRS,
    Case,
    Component,
    Run,
    assert_parity,
    assert_refused_alike,
    assert_same,
    run_numpy,
    run_torch,
    tolerance,
)

# `dtypes` is an immutable (numpy dtype, torch dtype) pair, safe to share across examples.
SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

batch_sizes = st.lists(st.integers(1, 20), min_size=1, max_size=8)
seeds = st.integers(0, 2**32 - 1)


def split_into_batches(token_losses: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    """Consecutive batches of the given sizes (which sum to len(token_losses))."""
    return np.split(token_losses, np.cumsum(sizes)[:-1])


def engines(component: Component, case: Case, dtypes=DTYPE_PAIRS[0]) -> dict[str, Run]:
    """The NumPy and the torch run of one case, by engine: a golden value must hold for each."""
    np_dtype, torch_dtype = dtypes
    return {"numpy": run_numpy(component, case, np_dtype), "torch": run_torch(component, case, torch_dtype)}


# ---------------------------------------------------------------- the metrics as Components


def _metrics(metrics, loss) -> dict:
    """Both metrics of one loss, by ``metrics`` = numpy_ref.metrics or torch_lm.metrics."""
    return {"perplexity": metrics.perplexity(loss), "bits_per_char": metrics.bits_per_char(loss)}


def _loss(inputs, fixed):
    """The mean loss: an array in ``inputs``, or a Python number in ``fixed`` (passed as it is)."""
    return inputs["loss"] if "loss" in inputs else fixed["loss"]


# loss (any shape) -> perplexity and bits per character, float64 whatever the loss dtype.
LOSS_METRICS = Component(
    "perplexity and bits per char",
    lambda inputs, fixed: (_metrics(ref, _loss(inputs, fixed)), None),
    lambda inputs, fixed: _metrics(tlm, _loss(inputs, fixed)),
)

# The same metrics of a model's mean cross-entropy: logits (N, V), fixed targets (N,).
MODEL_METRICS = Component(
    "metrics of the cross-entropy",
    lambda inputs, fixed: (_metrics(ref, ref_cross_entropy(inputs["logits"], fixed["targets"])[0]), None),
    lambda inputs, fixed: _metrics(tlm, torch_cross_entropy(inputs["logits"], fixed["targets"])),
)

# losses (K,) batch means, fixed counts (K,) tokens per batch -> the mean over every token.
TOKEN_WEIGHTED_MEAN = Component(
    "token_weighted_mean",
    lambda inputs, fixed: ({"mean": ref.token_weighted_mean(inputs["losses"], fixed["counts"])}, None),
    lambda inputs, fixed: {"mean": tlm.token_weighted_mean(inputs["losses"], fixed["counts"])},
)


def _running_numpy(inputs, fixed):
    running = ref.RunningMean()
    for batch in split_into_batches(inputs["token_losses"], fixed["sizes"]):
        running.update(batch.astype(np.float64).sum(), batch.size)  # the reference sums in float64
    return {"mean": running.mean, "perplexity": running.perplexity}, None


def _running_torch(inputs, fixed):
    running = tlm.RunningMean()
    for batch in inputs["token_losses"].split(fixed["sizes"]):
        running.update(batch.sum(), batch.numel())  # summed in the run's dtype
    return {"mean": running.mean, "perplexity": running.perplexity}


# token_losses (T,), fixed sizes (batch lengths summing to T) -> RunningMean fed batch by batch.
RUNNING_MEAN = Component("RunningMean", _running_numpy, _running_torch)


# ---------------------------------------------------------------- perplexity and bits per character


@pytest.mark.parametrize("vocab", [2, 65, 10_000])
def test_uniform_model_over_v_classes_has_perplexity_v(vocab, rng):
    case = Case({"logits": np.zeros((5, vocab))}, {"targets": rng.integers(0, vocab, 5)})
    for engine, run in engines(MODEL_METRICS, case).items():
        assert float(run.outputs["perplexity"]) == pytest.approx(vocab, rel=1e-12), engine
        assert float(run.outputs["bits_per_char"]) == pytest.approx(math.log2(vocab), rel=1e-12), engine


def test_golden_perplexity_and_bits():
    # The losses as Python numbers, which both engines take as well as arrays.
    runs = {loss: engines(LOSS_METRICS, Case({}, {"loss": loss})) for loss in (0.0, 1.539, math.log(2))}
    for engine in ("numpy", "torch"):
        assert float(runs[0.0][engine].outputs["perplexity"]) == 1.0, engine  # certain of every token
        kneser_ney = float(runs[1.539][engine].outputs["perplexity"])
        assert kneser_ney == pytest.approx(4.66, abs=5e-3), engine  # docs/DESIGN.md §5
        assert float(runs[math.log(2)][engine].outputs["bits_per_char"]) == pytest.approx(1.0, rel=1e-15), engine


def test_perplexity_and_bits_match_elementwise(dtypes, rng):
    losses = rng.uniform(0.0, 5.0, (3, 4)).astype(dtypes[0])
    exact = losses.astype(np.float64)
    expected = {"perplexity": np.exp(exact), "bits_per_char": exact / math.log(2)}  # float64 from any dtype
    case = Case({"loss": losses})
    assert_parity(LOSS_METRICS, case, dtypes)
    for engine, run in engines(LOSS_METRICS, case, dtypes).items():
        assert_same(run.outputs, expected, f"{engine} output")


# ---------------------------------------------------------------- token-weighted mean, RunningMean


@SETTINGS
@given(sizes=batch_sizes, seed=seeds)
def test_token_weighted_mean_over_batches_equals_mean_over_all_tokens(dtypes, sizes, seed):
    token_losses = np.random.default_rng(seed).uniform(0.0, 6.0, sum(sizes)).astype(dtypes[0])
    batch_means = np.array([b.astype(np.float64).mean() for b in split_into_batches(token_losses, sizes)])
    expected = token_losses.astype(np.float64).mean()

    # The batch means are float64 summaries, so the weighted mean runs in float64 whatever the dtype.
    weighted = Case({"losses": batch_means}, {"counts": np.array(sizes)})
    assert_parity(TOKEN_WEIGHTED_MEAN, weighted)
    for engine, run in engines(TOKEN_WEIGHTED_MEAN, weighted).items():
        assert_same(run.outputs["mean"], expected, f"{engine} mean")

    running = Case({"token_losses": token_losses}, {"sizes": sizes})
    numpy_run = run_numpy(RUNNING_MEAN, running, dtypes[0])
    assert numpy_run.outputs["mean"] == pytest.approx(expected, rel=1e-12)
    assert numpy_run.outputs["perplexity"] == pytest.approx(math.exp(expected), rel=1e-12)
    # Compared at the input dtype's tolerance: torch sums each batch in that dtype.
    rtol, atol = tolerance(dtypes[1])
    assert_parity(RUNNING_MEAN, running, dtypes, rtol, atol)


def test_batches_weigh_by_their_tokens_not_equally():
    # One token of loss 5 and a batch of nine tokens of loss 1: the token mean is 14 / 10,
    # where an unweighted mean of the two batch means would report 3.
    case = Case({"losses": np.array([5.0, 1.0])}, {"counts": np.array([1, 9])})
    for engine, run in engines(TOKEN_WEIGHTED_MEAN, case).items():
        assert float(run.outputs["mean"]) == pytest.approx(1.4, rel=1e-15), engine


def test_batches_of_zero_tokens_contribute_nothing():
    case = Case({"losses": np.array([2.0, 99.0])}, {"counts": np.array([3, 0])})
    for engine, run in engines(TOKEN_WEIGHTED_MEAN, case).items():
        assert float(run.outputs["mean"]) == 2.0, engine


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
    case = Case({"losses": np.asarray(losses, dtype=np.float64)}, {"counts": np.asarray(counts)})
    assert_refused_alike(TOKEN_WEIGHTED_MEAN, case, message)


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
