"""The compressor's models are the report's models: each predictor, reading a text one character
at a time, gives the distributions the held-out protocol's batch computations give on the same
stream (the count models bitwise), and none of them looks ahead."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from coding import BLOCK, REPORT, coding_fixture  # noqa: F401  (the fixture)

from numpy_ref.incremental import PAD_ID
from torch_lm.compression.models import build_predictor
from torch_lm.compression.predictors import (
    CountPredictor,
    CountTable,
    DynamicNeuralPredictor,
    GrowingCountPredictor,
    NeuralPredictor,
    Predictor,
)
from torch_lm.ngram import NGramLM
from torch_lm.reports.mixtures import ContextWeights, growing_kn, static_kn
from torch_lm.training.dynamic import DynamicSettings, dynamic_log_probs
from torch_lm.training.heldout import next_log_probs

KINDS = ("neural", "neural-dynamic", "kn", "kn-growing", "mixture", "mixture-context", "mixture-dynamic")


def read(predictor: Predictor, ids: list[int]) -> np.ndarray:
    """The distribution before every id of ``ids`` (N, V), the predictor reading them in order."""
    rows = [predictor.reset()]
    rows += [predictor.step(symbol) for symbol in ids[:-1]]
    return np.stack(rows)


def ids_of(coding, n: int, start: int = 0) -> list[int]:
    return coding.sources().vocab.encode(coding.text[start : start + n]).tolist()


def padded(history: torch.Tensor, width: int) -> torch.Tensor:
    """The history followed by ``width`` pads: the batch protocol's context for the first target
    is then the predictors' start, a stream of pads."""
    return torch.cat([history, torch.full((width,), PAD_ID, dtype=torch.int64)])


def test_the_count_table_is_prob_table_bitwise(coding):
    sources = coding.sources()
    V = len(sources.vocab)
    ngram = NGramLM.fit(sources.train_ids, 4, V, "mkn")
    table = CountTable(ngram)
    generator = torch.Generator().manual_seed(0)
    contexts = torch.cat(
        [sources.train_ids.unfold(0, 3, 7)[:300], torch.randint(0, V, (200, 3), generator=generator)]
    )  # seen contexts and random ones, many unseen
    expected, seen = ngram.prob_table(contexts), ngram.seen_context_length(contexts)
    for row, context in enumerate(contexts.tolist()):
        probs, matched = table.distribution(context)
        assert torch.equal(torch.from_numpy(probs), expected[row]), context
        assert matched == seen[row], context


def test_the_neural_predictor_is_the_window_forward(coding):
    """float64 weights: the incremental form equals the scorer's batch forward to rounding."""
    sources = coding.sources()
    model = sources.model.double()
    ids = ids_of(coding, 400)
    got = read(NeuralPredictor(model), ids)
    C = model.config.context
    expected = next_log_probs(model, torch.full((C,), PAD_ID), torch.tensor(ids)).exp().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-13)


def test_the_dynamic_predictor_is_dynamic_evaluation(coding):
    sources = coding.sources()
    model, C = sources.model.double(), sources.model.config.context
    settings = DynamicSettings(segment=20, lr=3e-3, decay=0.01)
    history = padded(sources.train_ids, C)
    ids = ids_of(coding, 150, start=100)
    got = read(DynamicNeuralPredictor(model, history, settings), ids)
    expected = dynamic_log_probs(model, history, torch.tensor(ids), settings).exp().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
    static = read(NeuralPredictor(model), ids)
    assert np.abs(got[40:] - static[40:]).max() > 1e-4  # the adaptation did move the predictions


def test_the_count_predictors_are_the_reports_bitwise(coding):
    sources = coding.sources()
    V, order = len(sources.vocab), 3
    history = padded(sources.train_ids, order - 1)
    ids = ids_of(coding, 180, start=50)
    targets = torch.tensor(ids)
    static = static_kn(NGramLM.fit(history, order, V, "mkn"), history, targets)
    predictor = CountPredictor(NGramLM.fit(history, order, V, "mkn"))
    assert torch.equal(torch.from_numpy(read(predictor, ids)), static.probs)
    growing = growing_kn(history, targets, order, V, block=BLOCK)
    assert torch.equal(torch.from_numpy(read(GrowingCountPredictor(history, order, V, BLOCK), ids)), growing.probs)


def test_the_context_mixture_is_context_weights_mix(coding):
    sources = coding.sources()
    settings = coding.settings("mixture-context")
    ids = ids_of(coding, 120)
    mixed = read(build_predictor(settings, sources.model, sources.train_ids), ids)
    neural = read(NeuralPredictor(sources.model), ids)
    counts = CountPredictor(NGramLM.fit(sources.train_ids, settings.kn_order, len(sources.vocab), "mkn"))
    count_probs, matched = [counts.reset()], [counts.matched]
    for symbol in ids[:-1]:
        count_probs.append(counts.step(symbol))
        matched.append(counts.matched)
    weights = ContextWeights(torch.tensor(settings.weights, dtype=torch.float64), settings.kn_order)
    expected = weights.mix(torch.from_numpy(neural), torch.from_numpy(np.stack(count_probs)), torch.tensor(matched))
    np.testing.assert_allclose(mixed, expected.numpy(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("kind", KINDS)
def test_every_distribution_is_positive_and_sums_to_one(coding, kind):
    sources = coding.sources()
    probs = read(build_predictor(coding.settings(kind), sources.model, sources.train_ids), ids_of(coding, 130))
    assert (probs > 0).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_changing_a_character_changes_nothing_at_or_before_it(coding, kind):
    """The distribution of character j is a function of the characters before j alone."""
    sources = coding.sources()
    ids = ids_of(coding, 130)
    j = 70
    changed = ids[:j] + [(ids[j] + 1) % len(sources.vocab)] + ids[j + 1 :]
    settings = coding.settings(kind)
    a = read(build_predictor(settings, sources.model, sources.train_ids), ids)
    b = read(build_predictor(settings, sources.model, sources.train_ids), changed)
    assert np.array_equal(a[: j + 1], b[: j + 1])
    assert not np.array_equal(a[j + 1 :], b[j + 1 :])


def test_report_settings_reach_the_predictors(coding):
    """The report's order, lam and weights, rounded to float16 as the header stores them."""
    settings = coding.settings("mixture-dynamic")
    assert settings.kn_order == REPORT["kn_order"]["order"]
    assert settings.dynamic.segment == REPORT["dynamic"]["settings"]["segment"]
    np.testing.assert_allclose(settings.weights, REPORT["dynamic"]["weights"], rtol=1e-3)
    assert settings.weights == tuple(float(np.float16(w)) for w in REPORT["dynamic"]["weights"])
