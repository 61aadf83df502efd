"""torch_lm/training/heldout.py: the held-out protocol of docs/DESIGN.md §3 — every val position
once, its context reaching into the end of train, token-weighted, in eval mode — and the count
models' fit-and-score on the same protocol."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from numpy_ref.config import ModelConfig
from numpy_ref.ngram import NGramLM
from torch_lm.neural_lm import NeuralLM
from torch_lm.training.batches import split_ids
from torch_lm.training.heldout import HeldoutResult, heldout_loss, ngram_heldout, rows
from torch_lm.training.vocab import CharVocab


def tiny_model(vocab_size: int, context: int) -> NeuralLM:
    config = ModelConfig(vocab_size=vocab_size, context=context, embed_dim=5, hidden_dim=11, dropout=0.3)
    model = NeuralLM(config).double()
    model.reset_parameters(torch.Generator().manual_seed(0))
    return model


def brute_force_heldout(model: NeuralLM, ids: torch.Tensor, n_train: int, context: int) -> float:
    """−ln p(ids[p] | ids[p-T:p]) for every val position p, one forward each, plain mean."""
    losses = []
    for p in range(n_train, len(ids)):
        logits, _ = model(ids[p - context : p][None])  # (1, V)
        losses.append(-torch.log_softmax(logits[0], -1)[ids[p]].item())
    return sum(losses) / len(losses)


@pytest.mark.parametrize("batch_size", [1, 7, 4096])
def test_heldout_loss_covers_every_val_position_with_train_context(batch_size):
    text = "the quick brown fox jumps over the lazy dog\n" * 5
    vocab, context = CharVocab.from_text(text), 6
    ids = vocab.encode(text)
    train, val = split_ids(ids)
    model = tiny_model(len(vocab), context).train()
    with torch.no_grad():
        expected = brute_force_heldout(model.eval(), ids, len(train), context)
    model.train()
    result = heldout_loss(model, train, val, context, batch_size=batch_size)
    assert isinstance(result, HeldoutResult) and result.positions == len(val) == 22
    assert result.loss == pytest.approx(expected, rel=1e-12)
    assert result.perplexity == pytest.approx(math.exp(result.loss), rel=1e-12)
    assert result.bpc == pytest.approx(result.loss / math.log(2), rel=1e-12)
    assert model.training  # mode restored
    assert result.to_dict() == {
        "val_loss": result.loss,
        "val_ppl": result.perplexity,
        "bpc": result.bpc,
        "positions": 22,
    }


def test_heldout_loss_first_positions_really_use_the_train_text():
    # Changing only the last train character changes the loss of the first val position.
    vocab = CharVocab.from_text("abcd")
    ids = vocab.encode("abcdabcdabcdabcdabcd")
    train, val = split_ids(ids)
    model = tiny_model(len(vocab), context=3)
    first = heldout_loss(model, train, val[:1], 3).loss
    changed = train.clone()
    changed[-1] = (changed[-1] + 1) % len(vocab)
    assert heldout_loss(model, changed, val[:1], 3).loss != first


def test_heldout_loss_needs_enough_train_context():
    model = tiny_model(4, context=5)
    with pytest.raises(ValueError, match="at least 5 history ids"):
        heldout_loss(model, torch.arange(4), torch.arange(3), 5)


def test_ngram_heldout_fits_on_train_and_scores_the_rest():
    ids = np.random.default_rng(0).integers(0, 5, 300)
    score = ngram_heldout(NGramLM, ids, 250, 3, 5, "kn")
    expected = NGramLM.fit(ids[:250], 3, 5, "kn").score(ids, 250)
    assert score.result.loss == expected and score.result.positions == 50
    assert score.fit_s >= 0 and score.score_s >= 0
    assert score.result.loss != NGramLM.fit(ids[:200], 3, 5, "kn").score(ids, 250)  # the fit saw only train


def test_heldout_result_from_a_mean():
    result = HeldoutResult.from_mean(math.log(4.0), 10)
    assert result.perplexity == pytest.approx(4.0) and result.bpc == pytest.approx(2.0)
    assert result.positions == 10


@pytest.mark.parametrize("per_row, rows_per_batch", [(1, 1), (1, 7), (5, 1), (256, 1), (256, 3), (700, 2)])
def test_rows_give_every_target_once_with_its_context(per_row, rows_per_batch):
    """Rows of P targets, each target after the context ids before it, in order, none twice."""
    context, stream = 4, torch.arange(4 + 1000)  # ids = positions, so contents show where they came from
    seen = []
    for idx, targets in rows(stream, context, per_row, rows_per_batch):
        assert idx.shape == (targets.shape[0], targets.shape[1] + context - 1)
        assert targets.shape[0] <= rows_per_batch and targets.shape[1] <= per_row
        # target j of a row follows the window idx[:, j:j + context], which ends right before it
        assert torch.equal(idx[:, context - 1 :], targets - 1)
        seen += targets.flatten().tolist()
    assert seen == list(range(context, context + 1000))


def test_modules_without_a_sequence_forward_are_scored_window_by_window():
    class Windows(torch.nn.Module):  # the NeuralLM's window forward alone
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x, y=None):
            return self.model(x, y)

    vocab = CharVocab.from_text("abcd")
    train, val = split_ids(vocab.encode("abcdabcdab" * 30))
    model = tiny_model(len(vocab), context=6)
    rows, windows = heldout_loss(model, train, val, 6, 16), heldout_loss(Windows(model), train, val, 6, 16)
    assert rows.positions == windows.positions == len(val)
    assert rows.loss == pytest.approx(windows.loss, rel=1e-12)
