"""torch_lm/training/checkpoint.py: atomic saves, ``weights_only`` loads, clear refusals."""

from __future__ import annotations

import os
import pickle
from dataclasses import replace

import pytest
import torch

from numpy_ref.config import ModelConfig
from torch_lm.neural_lm import NeuralLM
from torch_lm.training import checkpoint as ckpt
from torch_lm.training.checkpoint import (
    CheckpointError,
    build_checkpoint,
    check_model_config_matches,
    check_vocab_matches,
    checkpoint_model_config,
    checkpoint_vocab,
    load_checkpoint,
    load_model_state,
    save_checkpoint,
)
from torch_lm.training.config import TrainConfig
from torch_lm.training.step import make_ema, parameter_groups
from torch_lm.training.vocab import CharVocab

VOCAB = CharVocab.from_text("abc de\nf")
CONFIG = ModelConfig(vocab_size=len(VOCAB), context=4, embed_dim=3, hidden_dim=7, fusion=(2, 2), norm=True)


@pytest.fixture
def trained():
    """A model and AdamW after one step (so the optimizer has state), and its checkpoint dict."""
    torch.manual_seed(0)
    model = NeuralLM(CONFIG)
    optimizer = torch.optim.AdamW(parameter_groups(model, 0.1), lr=1e-2)
    idx = torch.randint(len(VOCAB), (5, 4))
    _, loss = model(idx, torch.randint(len(VOCAB), (5,)))
    loss.backward()
    optimizer.step()
    generator = torch.Generator().manual_seed(3)
    checkpoint = build_checkpoint(
        model,
        optimizer,
        CONFIG,
        TrainConfig().to_dict(),
        VOCAB,
        step=1,
        best_val_loss=float("inf"),
        rng={"dropout": generator.get_state()},
        running_loss_sum=2.5,
        running_tokens=5,
    )
    return model, optimizer, checkpoint


def test_round_trip_loads_with_weights_only(tmp_path, trained):
    model, optimizer, checkpoint = trained
    path = save_checkpoint(tmp_path / "last.pt", checkpoint)
    raw = torch.load(path, weights_only=True)  # the plain torch call must accept it too
    assert raw["vocab"] == VOCAB.to_list() and raw["step"] == 1
    loaded = load_checkpoint(path)
    assert checkpoint_vocab(loaded) == VOCAB and checkpoint_model_config(loaded) == CONFIG
    restored = NeuralLM(CONFIG)
    load_model_state(path, restored, loaded)
    for name, value in model.state_dict().items():
        assert torch.equal(restored.state_dict()[name], value)
    fresh = torch.optim.AdamW(parameter_groups(restored, 0.1), lr=1e-2)
    fresh.load_state_dict(loaded["optimizer"])
    for (_, state), (_, saved) in zip(fresh.state.items(), optimizer.state.items()):
        assert torch.equal(state["exp_avg"], saved["exp_avg"])
    assert torch.equal(loaded["rng"]["dropout"], torch.Generator().manual_seed(3).get_state())
    assert loaded["running"] == {"loss_sum": 2.5, "tokens": 5}
    assert loaded["best_val_loss"] == float("inf")


def test_a_checkpoint_with_an_ema_holds_the_average_as_its_model(tmp_path, trained):
    """``model`` is the average (what evaluate and generate load), the trained weights and the
    update count are beside it; without an EMA neither key is written."""
    model, optimizer, plain = trained
    ema = make_ema(model, 0.9)
    ema.update_parameters(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update_parameters(model)  # the average is now 0.1 of the way to the shifted weights
    checkpoint = build_checkpoint(
        model, optimizer, CONFIG, TrainConfig(ema_decay=0.9).to_dict(), VOCAB, 2, 1.5, {}, 0.0, 0, ema=ema
    )
    loaded = load_checkpoint(save_checkpoint(tmp_path / "last.pt", checkpoint))
    assert loaded["ema_updates"] == 2
    for name, value in model.state_dict().items():
        assert torch.equal(loaded["training_weights"][name], value)
        assert torch.equal(loaded["model"][name], ema.module.state_dict()[name])
        torch.testing.assert_close(loaded["model"][name], value - 0.9)
    restored = NeuralLM(CONFIG)
    load_model_state(tmp_path / "last.pt", restored, loaded)  # the average, as model_from_checkpoint reads it
    assert torch.equal(restored.state_dict()["output.weight"], ema.module.state_dict()["output.weight"])
    assert make_ema(model, 0.0) is None
    assert not {"training_weights", "ema_updates"} & set(plain)


def test_save_leaves_no_temporary_files_and_replaces(tmp_path, trained):
    _, _, checkpoint = trained
    save_checkpoint(tmp_path / "last.pt", checkpoint)
    save_checkpoint(tmp_path / "last.pt", {**checkpoint, "step": 2})
    assert os.listdir(tmp_path) == ["last.pt"]
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 2


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path, trained, monkeypatch):
    _, _, checkpoint = trained
    save_checkpoint(tmp_path / "last.pt", checkpoint)

    def save_half_then_crash(obj, f):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.torch, "save", save_half_then_crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "last.pt", {**checkpoint, "step": 99})
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["last.pt"]
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 1


class CodePayload:
    """Unpickling this runs ``os.system`` — what a malicious checkpoint would carry."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_pickled_code_payload_is_refused_unexecuted(tmp_path, trained):
    _, _, checkpoint = trained
    marker = tmp_path / "payload_ran"
    path = tmp_path / "evil.pt"
    torch.save({**checkpoint, "model": CodePayload(marker)}, path)
    with pytest.raises(
        CheckpointError, match=r"refusing checkpoint .*evil.pt: it references (posix|nt)\.system"
    ) as error:
        load_checkpoint(path)
    assert "\n" not in str(error.value)
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_plain_pickle_with_code_is_refused(tmp_path):
    marker = tmp_path / "payload_ran"
    path = tmp_path / "legacy.pt"
    path.write_bytes(pickle.dumps(CodePayload(marker)))
    with pytest.raises(CheckpointError, match="legacy.pt"):
        load_checkpoint(path)
    assert not marker.exists()


def test_a_truncated_checkpoint_gives_a_clear_error(tmp_path, trained):
    _, _, checkpoint = trained
    path = save_checkpoint(tmp_path / "last.pt", checkpoint)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot read checkpoint .*last.pt: truncated") as error:
        load_checkpoint(path)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("content", [b"", b"garbage, not a checkpoint at all" * 10])
def test_garbage_files_give_a_clear_error(tmp_path, content):
    path = tmp_path / "garbage.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="cannot read checkpoint .*garbage.pt"):
        load_checkpoint(path)


def test_a_missing_checkpoint_is_reported(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda c: [1, 2, 3], "holds a list"),
        (lambda c: {k: v for k, v in c.items() if k != "optimizer"}, r"missing \['optimizer'\]"),
        (lambda c: {**c, "step": "7"}, "'step' should be a int"),
        (lambda c: {**c, "format_version": 99}, "format version 99"),
        (lambda c: {**c, "vocab": ["a", "a"]}, "unique"),
        (lambda c: {**c, "model_config": {"context": 0}}, "context must be a positive integer"),
        (lambda c: {**c, "model_config": {"colour": "red"}}, "unknown keys"),
        (lambda c: {**c, "ema_updates": 3}, r"\['ema_updates'\] without the other"),
        (lambda c: {**c, "ema_updates": 3.0, "training_weights": {}}, "'ema_updates' should be a int"),
    ],
)
def test_malformed_checkpoints_are_refused(tmp_path, trained, mutate, message):
    _, _, checkpoint = trained
    path = tmp_path / "bad.pt"
    torch.save(mutate(checkpoint), path)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_vocabulary_mismatch_names_the_characters(trained):
    _, _, checkpoint = trained
    check_vocab_matches("x.pt", checkpoint, VOCAB)
    with pytest.raises(CheckpointError, match=r"adds \['z'\].*lacks \['<newline>'\]"):
        check_vocab_matches("x.pt", checkpoint, CharVocab.from_text("abc dez f"))
    with pytest.raises(CheckpointError, match="different order"):
        check_vocab_matches("x.pt", checkpoint, CharVocab.from_list(VOCAB.to_list()[::-1]))


def test_model_config_mismatch_names_the_fields(trained):
    _, _, checkpoint = trained
    check_model_config_matches("x.pt", checkpoint, CONFIG)
    with pytest.raises(CheckpointError, match="hidden_dim 7 vs 9"):
        check_model_config_matches("x.pt", checkpoint, replace(CONFIG, hidden_dim=9))


def test_weights_that_do_not_fit_the_model_are_refused(tmp_path, trained):
    _, _, checkpoint = trained
    other = NeuralLM(replace(CONFIG, hidden_dim=9))
    with pytest.raises(CheckpointError, match="do not fit its config .*size mismatch") as error:
        load_model_state("x.pt", other, checkpoint)
    assert "\n" not in str(error.value)


def test_checkpoint_error_is_a_value_error():
    assert issubclass(CheckpointError, ValueError)
