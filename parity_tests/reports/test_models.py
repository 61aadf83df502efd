"""torch_lm/reports (models, tuning, quality): one held-out protocol for every model (agreeing
with ``heldout_loss`` and ``NGramLM.score``), mixtures, tuning on a train slice, seeded sampling
through the one sampling loop, and the generation-quality figures."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from numpy_ref.config import ModelConfig
from torch_lm.neural_lm import NeuralLM
from torch_lm.ngram import NGramLM
from torch_lm.reports.models import MixtureModel, NeuralModel, NGramModel, UniformModel, heldout, sample
from torch_lm.reports.quality import generation_quality, words
from torch_lm.reports.tuning import mixture_weight, slice_split, tune_on_slice
from torch_lm.training.checkpoint import CheckpointError, require_checkpoint
from torch_lm.training.heldout import heldout_loss

V = 5


@pytest.fixture(scope="module")
def split():
    """(train (900,), val (100,)) ids of a random order-1 Markov chain over V tokens."""
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(V), size=V)
    ids = [0]
    for _ in range(999):
        ids.append(int(rng.choice(V, p=probs[ids[-1]])))
    ids = torch.tensor(ids)
    return ids[:900], ids[900:]


def ngram(ids, order=3, smoothing="kn", k=1.0) -> NGramModel:
    return NGramModel(NGramLM.fit(ids, order, V, smoothing, k=k))


def test_neural_models_follow_heldout_loss(split):
    train, val = split
    model = NeuralLM(ModelConfig(vocab_size=V, context=4, embed_dim=3, hidden_dim=8)).double()
    model.reset_parameters(torch.Generator().manual_seed(0))
    expected = heldout_loss(model, train, val, 4).loss
    assert heldout(NeuralModel(model, 4, V), train, val).loss == pytest.approx(expected, abs=1e-12)


def test_ngram_models_follow_ngram_score(split):
    train, val = split
    model = ngram(train)
    result = heldout(model, train, val)
    assert result.loss == pytest.approx(model.ngram.score(torch.cat([train, val]), len(train)), abs=1e-12)
    assert result.positions == len(val)
    assert result.perplexity == pytest.approx(math.exp(result.loss))
    assert result.bpc == pytest.approx(result.loss / math.log(2))
    assert heldout(UniformModel(V), train, val).loss == pytest.approx(math.log(V))


def test_mixture_interpolates_target_and_next_probabilities(split):
    train, val = split
    a, b = ngram(train, 3, "kn"), ngram(train, 2, "addk", k=0.5)
    stream = torch.cat([train[-2:], val])
    pa, pb = a.target_probs(stream, 2), b.target_probs(stream[1:], 1)
    for lam in (0.0, 0.3, 1.0):
        mixture = MixtureModel(a, b, lam)
        assert mixture.context == 2
        torch.testing.assert_close(mixture.target_probs(stream, 2), lam * pa + (1 - lam) * pb)
        table = mixture.next_probs(torch.tensor([[1, 2], [3, 4]]))
        torch.testing.assert_close(table.sum(dim=1), torch.ones(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="lam in"):
        MixtureModel(a, b, 1.5)


def test_mixture_weight_finds_the_optimum():
    """Half the positions favour a (0.8 vs 0.2), half favour b: by symmetry the best lam is 0.5;
    a model better everywhere takes all the weight."""
    pa = torch.tensor([0.8, 0.2] * 50, dtype=torch.float64)
    pb = torch.tensor([0.2, 0.8] * 50, dtype=torch.float64)
    lam, loss = mixture_weight(pa, pb)
    assert lam == pytest.approx(0.5) and loss == pytest.approx(-math.log(0.5))
    assert mixture_weight(pa, pa / 2)[0] == 1.0
    assert mixture_weight(pb / 2, pb)[0] == 0.0


def test_tuning_uses_only_the_train_slice(split):
    train, _ = split
    fit_ids, slice_ids = slice_split(train)
    assert len(slice_ids) == 45 and torch.equal(torch.cat([fit_ids, slice_ids]), train)
    fitted_on = []

    def fit(k, ids):
        fitted_on.append(len(ids))
        return ngram(ids, 2, "addk", k)

    best, losses = tune_on_slice((0.01, 1.0, 100.0), fit, train)
    assert fitted_on == [len(fit_ids)] * 3  # never the slice itself
    expected = {k: heldout(ngram(fit_ids, 2, "addk", k), fit_ids, slice_ids).loss for k in losses}
    assert losses == pytest.approx(expected) and best == min(expected, key=expected.get)
    with pytest.raises(ValueError, match="too short"):
        slice_split(torch.tensor([1]))


def test_sampling_is_seeded_and_shares_one_random_stream(split):
    train, _ = split
    model = ngram(train)
    first = sample(model, [0], 50, seed=3)
    assert first == sample(model, [0], 50, seed=3) != sample(model, [0], 50, seed=4)
    assert len(first) == 50 and all(0 <= t < V for t in first)
    assert sample(ngram(train), [0], 50, seed=3) == first  # same model, same draws
    cold = sample(model, [0], 20, temperature=1e-3, seed=3)
    history = [0]
    for token in cold:  # a very low temperature is argmax
        assert token == int(model.next_probs(torch.tensor([history[-2:]])).argmax())
        history.append(token)
    assert len(sample(UniformModel(V), [], 10)) == 10  # context 0, empty prompt


def test_generation_quality_counts_words_and_distinct_ngrams():
    assert words("The King's men, THE king!") == ["the", "king's", "men", "the", "king"]
    quality = generation_quality("the king the queen xyzzy", {"the", "king", "queen"})
    assert quality == {"in_train_words": 4 / 5, "distinct_1": 4 / 5, "distinct_2": 1.0, "words": 5}
    empty = generation_quality("... !!", {"the"})
    assert math.isnan(empty["in_train_words"]) and empty["distinct_1"] == 0.0 and empty["words"] == 0


def test_a_missing_checkpoint_names_the_command_that_writes_it(tmp_path):
    with pytest.raises(CheckpointError, match=f"python scripts/train.py --run-dir {tmp_path / 'run'}"):
        require_checkpoint(tmp_path / "run" / "best.pt")
