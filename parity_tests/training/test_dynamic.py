"""Dynamic evaluation (torch_lm/training/dynamic.py): no step is the static protocol, every
prediction uses only the characters before it, adapting helps on text that repeats itself, and
the trained model is left alone."""

from __future__ import annotations

import pytest
import torch

from numpy_ref.config import ModelConfig
from torch_lm.neural_lm import NeuralLM
from torch_lm.training.dynamic import DynamicSettings, dynamic_heldout, dynamic_log_probs
from torch_lm.training.heldout import heldout_loss
from torch_lm.training.heldout import rows as heldout_rows

CONFIG = ModelConfig(vocab_size=7, context=4, embed_dim=6, hidden_dim=16, fusion=(2, 2), n_blocks=1, dropout=0.2)


def model_and_text(seed: int = 0, n: int = 900) -> tuple[NeuralLM, torch.Tensor]:
    torch.manual_seed(seed)
    model = NeuralLM(CONFIG).double()
    return model, torch.randint(CONFIG.vocab_size, (n,))


@pytest.mark.parametrize("rule", ["rms", "sgd"])
def test_no_step_gives_the_static_figure(rule):
    model, ids = model_and_text()
    static = heldout_loss(model, ids[:600], ids[600:], CONFIG.context)
    dynamic = dynamic_heldout(model, ids[:600], ids[600:], DynamicSettings(segment=13, lr=0.0, decay=0.0, rule=rule))
    assert dynamic.positions == 300 and dynamic.loss == pytest.approx(static.loss, rel=1e-12)


@pytest.mark.parametrize("rule", ["rms", "sgd"])
def test_every_prediction_uses_only_the_characters_before_it(rule):
    """Changing target j changes no prediction at or before j: a model that stepped on a segment
    before scoring it, or a forward that looked ahead, would fail."""
    model, ids = model_and_text()
    settings = DynamicSettings(segment=10, lr=0.05 if rule == "sgd" else 1e-3, decay=0.1, rule=rule)
    before = dynamic_log_probs(model, ids[:600], ids[600:], settings)
    # With segments of 10: a segment's first (0, 10, 40) and last (9, 39) targets, one inside (37),
    # and the text's last (299). A step taken before its segment is scored fails at the starts; a
    # segment scored with a step that saw its own last target fails at the ends.
    for j in (0, 9, 10, 37, 39, 40, 299):
        changed = ids.clone()
        changed[600 + j] = (changed[600 + j] + 1) % CONFIG.vocab_size
        after = dynamic_log_probs(model, changed[:600], changed[600:], settings)
        torch.testing.assert_close(after[: j + 1], before[: j + 1], rtol=1e-12, atol=1e-12)
        if j < 299:
            assert not torch.allclose(after[j + 1 :], before[j + 1 :])  # the change is seen later on


def test_rows_are_distributions():
    model, ids = model_and_text()
    log_probs = dynamic_log_probs(model, ids[:600], ids[600:], DynamicSettings(segment=16))
    assert log_probs.shape == (300, CONFIG.vocab_size)
    torch.testing.assert_close(log_probs.exp().sum(1), torch.ones(300, dtype=torch.float64))


@pytest.mark.parametrize("rule, lr", [("rms", 1e-2), ("sgd", 0.5)])
def test_adapting_learns_text_that_repeats_itself(rule, lr):
    """An untrained model on a 9-character phrase said over and over: static it stays near ln V,
    adapting it learns the phrase as it goes."""
    model, ids = model_and_text()
    phrase = torch.tensor([1, 4, 2, 2, 6, 0, 3, 5, 1])
    held_out = phrase.repeat(40)
    static = heldout_loss(model, ids, held_out, CONFIG.context).loss
    dynamic = dynamic_heldout(model, ids, held_out, DynamicSettings(segment=9, lr=lr, decay=0.0, rule=rule)).loss
    assert dynamic < 0.3 * static


def test_the_trained_model_is_left_as_it_was():
    model, ids = model_and_text()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dynamic_heldout(model, ids[:600], ids[600:], DynamicSettings(segment=8, lr=1e-2, decay=0.0))
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_segments_cover_every_target_once_with_its_context():
    stream = torch.arange(4 + 23)
    rows = list(heldout_rows(stream, context=4, per_row=10))  # dynamic evaluation's segments
    assert [y.shape[1] for _, y in rows] == [10, 10, 3]
    assert torch.equal(torch.cat([y[0] for _, y in rows]), stream[4:])
    for idx, y in rows:
        assert idx.shape[1] == y.shape[1] + 3 and torch.equal(idx[0, 3:], y[0] - 1)  # ids = positions


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(segment=0), "segment"),
        (dict(lr=-1.0), "lr"),
        (dict(decay=1.5), "decay must lie in"),
        (dict(rule="adam"), "rule must be one of"),
    ],
)
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DynamicSettings(**kwargs)


def test_too_short_a_history_is_refused():
    model, ids = model_and_text()
    with pytest.raises(ValueError, match="history"):
        dynamic_heldout(model, ids[:30], ids[30:60], DynamicSettings(segment=50))
