"""torch_lm/training/precision.py: the bfloat16 gate read from the CPU's flags (both ways), the
precision a run resolves to and records, and what bfloat16 products change and what they keep."""

from __future__ import annotations

import pytest
import torch
from conftest import synthetic_text

from numpy_ref.config import ModelConfig
from torch_lm.linear import Linear
from torch_lm.neural_lm import NeuralLM
from torch_lm.training import precision as precision_module
from torch_lm.training.checkpoint import load_checkpoint
from torch_lm.training.config import EMA_INITIAL_SHARE, TrainConfig, ema_min_steps
from torch_lm.training.precision import (
    autocast,
    check_precision,
    cpu_flags,
    cpu_has_native_bf16,
    resolve_precision,
)
from torch_lm.training.trainer import train
from torch_lm.training.vocab import CharVocab

CPU = torch.device("cpu")
TEXT = synthetic_text(3000)
MODEL = ModelConfig(vocab_size=len(CharVocab.from_text(TEXT)), context=4, embed_dim=8, hidden_dim=32, fusion=(2, 2))


def test_the_gate_reads_the_cpu_flags_both_ways(tmp_path):
    with_bf16 = tmp_path / "with"
    with_bf16.write_text("processor : 0\nflags : fpu sse2 avx2 avx512f avx512_bf16\n\nprocessor : 1\n")
    without = tmp_path / "without"
    without.write_text("processor : 0\nflags : fpu sse2 avx2 avx512f\n")
    assert cpu_has_native_bf16(cpu_flags(with_bf16)) is True
    assert cpu_has_native_bf16(cpu_flags(without)) is False
    assert cpu_has_native_bf16(frozenset({"avx2", "amx_bf16", "amx_tile"})) is True
    assert cpu_flags(tmp_path / "missing") == frozenset()


@pytest.mark.parametrize("native", [True, False])
def test_auto_takes_bfloat16_only_where_it_is_native(monkeypatch, native):
    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda flags=None: native)
    assert resolve_precision("auto", "float32", CPU) == ("bfloat16" if native else "full")
    assert resolve_precision("auto", "float64", CPU) == "full"  # the exact reference stays exact
    assert resolve_precision("full", "float32", CPU) == "full"
    assert resolve_precision("bfloat16", "float32", CPU) == "bfloat16"  # asked for: slow, not refused
    assert TrainConfig(device="cpu").resolved(CPU).precision == ("bfloat16" if native else "full")


@pytest.mark.parametrize(
    ("precision", "dtype", "message"),
    [("fp16", "float32", "precision must be one of"), ("bfloat16", "float64", "needs float32 parameters")],
)
def test_bad_precisions_are_refused_in_one_line(precision, dtype, message):
    with pytest.raises(ValueError, match=message):
        check_precision("TrainConfig", precision, dtype)
    with pytest.raises(ValueError, match=message):
        TrainConfig(precision=precision, dtype=dtype)


def test_bfloat16_products_come_back_in_float32_close_to_full_precision():
    torch.manual_seed(0)
    layer, x = Linear(64, 48), torch.randn(5, 7, 64)
    with autocast("bfloat16", CPU):
        low = layer(x)
    assert low.dtype == torch.float32
    full = layer(x)
    assert not torch.equal(low, full)  # the product did run in bfloat16
    torch.testing.assert_close(low, full, rtol=2e-2, atol=2e-2)  # 8-bit mantissas, float32 sums


def test_a_bfloat16_forward_and_its_gradients_stay_near_full_precision():
    torch.manual_seed(1)
    model = NeuralLM(MODEL).train(False)
    idx, y = torch.randint(MODEL.vocab_size, (16, 4 + 9)), torch.randint(MODEL.vocab_size, (16, 10))
    grads = []
    for precision in ("full", "bfloat16"):
        model.zero_grad()
        with autocast(precision, CPU):
            logits, loss = model.forward_sequence(idx, y)
        assert logits.dtype == loss.dtype == torch.float32  # softmax and loss in float32
        loss.backward()
        grads.append((loss.item(), [p.grad.clone() for p in model.parameters()]))
    (full_loss, full_grads), (low_loss, low_grads) = grads
    assert abs(low_loss - full_loss) < 1e-2
    for low, full in zip(low_grads, full_grads):
        assert low.dtype == torch.float32
        assert (low - full).norm() <= 0.05 * full.norm() + 1e-6


def _run(tmp_path, name, precision):
    config = TrainConfig(
        batch_size=4, targets_per_row=8, max_steps=12, eval_interval=6, log_interval=3, warmup_steps=1,
        eval_batch_size=512, sample_length=10, seed=0, device="cpu", precision=precision,
        run_dir=str(tmp_path / name),
    )  # fmt: skip
    return train(MODEL, config, TEXT)


def test_a_run_records_the_precision_it_took_and_is_reproducible_in_it(tmp_path):
    first, again = _run(tmp_path, "a", "bfloat16"), _run(tmp_path, "b", "bfloat16")
    assert first["precision"] == "bfloat16"
    assert first["train_history"] == again["train_history"] and first["val_loss"] == again["val_loss"]
    assert load_checkpoint(tmp_path / "a" / "last.pt")["train_config"]["precision"] == "bfloat16"
    full = _run(tmp_path, "c", "full")
    assert full["precision"] == "full"
    assert full["train_history"] != first["train_history"]  # the products did differ
    assert abs(full["val_loss"] - first["val_loss"]) < 0.05


def test_a_checkpoint_from_before_the_setting_trained_in_full_precision():
    assert TrainConfig.from_dict({"run_dir": "r"}).precision == "full"


def test_a_run_too_short_for_its_average_keeps_none():
    assert ema_min_steps(0.9998) == 11512 and 0.9998**11512 <= EMA_INITIAL_SHARE < 0.9998**11511
    assert TrainConfig(device="cpu").resolved(CPU).ema_decay == TrainConfig().ema_decay > 0  # the recipe keeps it
    assert TrainConfig(max_steps=11511, device="cpu").resolved(CPU).ema_decay == 0.0
    assert TrainConfig(max_steps=300, ema_decay=0.9, device="cpu").resolved(CPU).ema_decay == 0.9
