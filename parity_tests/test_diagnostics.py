"""Diagnostics parity: ``numpy_ref.diagnostics`` and ``torch_lm.diagnostics`` give the same dicts
for the same model and batch, and each statistic means what it says (norms, dead/saturated
fractions, a loss curve that reaches ~0 on one tiny batch)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import numpy_ref.diagnostics as nd
import torch_lm.diagnostics as td
from numpy_ref.config import ModelConfig
from numpy_ref.dropout import make_keep_mask
from numpy_ref.neural_lm import hidden_activations, init_params, neural_lm_backward, neural_lm_forward
from torch_lm.neural_lm import NeuralLM
from torch_lm.parity import assert_same, to_torch

CONFIGS = {
    "fusion222-tanh-norm-1block": ModelConfig(
        vocab_size=9, context=8, embed_dim=3, hidden_dim=12, fusion=(2, 2, 2), activation="tanh", norm=True, n_blocks=1
    ),
    "flat-relu-2blocks-dropout": ModelConfig(
        vocab_size=9, context=4, embed_dim=3, hidden_dim=12, activation="relu", n_blocks=2, dropout=0.5
    ),
    "fusion22-gated-norm-pairs-1block": ModelConfig(
        vocab_size=9,
        context=4,
        embed_dim=3,
        hidden_dim=12,
        fusion=(2, 2),
        activation="gated",
        pair_embed=True,
        n_blocks=1,
    ),
}
# How far each config's parameters are moved off their init: a gated unit saturates only when both
# its tanh and its gate do, which takes larger weights than a tanh needs for the counts to be exercised.
NOISE = {"fusion22-gated-norm-pairs-1block": 3.0}
# The stats are Python floats, which carry no dtype: each comparison says which dtype computed
# them and takes that dtype's tolerance (torch.testing.assert_close's defaults).
TOLERANCES = {np.float64: {"rtol": 1e-7, "atol": 1e-7}, np.float32: {"rtol": 1.3e-6, "atol": 1e-5}}


def engines(config, np_dtype=np.float64, torch_dtype=torch.float64, batch=16, noise=0.3):
    """(numpy params, torch twin, idx, targets), the parameters ``noise`` x N(0, 1) off their init."""
    rng = np.random.default_rng(0)
    params = {
        k: (p + noise * rng.standard_normal(p.shape)).astype(np_dtype)
        for k, p in init_params(config, rng, np_dtype).items()
    }
    model = NeuralLM(config).to(torch_dtype)
    model.load_state_dict({k: to_torch(p) for k, p in params.items()})
    idx = rng.integers(0, config.vocab_size, (batch, config.context))
    return params, model, idx, rng.integers(0, config.vocab_size, batch)


def test_shape_report_matches_and_follows_the_fusion():
    config = CONFIGS["fusion222-tanh-norm-1block"]
    params, model, idx, _ = engines(config)
    expected = [
        ("embedding", (16, 8, 3)),
        ("hidden.0", (16, 4, 12)),
        ("hidden.1", (16, 2, 12)),
        ("hidden.2", (16, 1, 12)),
        ("blocks.0", (16, 12)),
        ("output", (16, 9)),
    ]
    assert nd.shape_report(params, idx, config) == expected
    assert td.shape_report(model, to_torch(idx)) == expected
    assert not any(m._forward_hooks for m in model.modules())  # hooks removed


def test_shape_report_lists_the_pair_embedding_and_the_gated_outputs():
    config = CONFIGS["fusion22-gated-norm-pairs-1block"]
    params, model, idx, _ = engines(config)
    expected = [
        ("embedding", (16, 4, 3)),
        ("pair_embedding", (16, 4, 3)),
        ("hidden.0", (16, 2, 12)),
        ("hidden.1", (16, 1, 12)),
        ("blocks.0", (16, 12)),
        ("output", (16, 9)),
    ]
    assert nd.shape_report(params, idx, config) == expected
    assert td.shape_report(model, to_torch(idx)) == expected


@pytest.mark.parametrize("name", CONFIGS)
def test_activation_stats_match(name, dtypes):
    np_dtype, torch_dtype = dtypes
    config = CONFIGS[name]
    params, model, idx, _ = engines(config, np_dtype, torch_dtype, noise=NOISE.get(name, 0.3))
    stats = nd.activation_stats(params, idx, config)
    assert list(stats) == [n for n, _ in model.hidden_layers()]
    assert model.training  # evaluated without dropout all the same
    assert_same(td.activation_stats(model, to_torch(idx)), stats, "activation_stats", **TOLERANCES[np_dtype])
    assert model.training
    assert all(0 < s["frac_saturated_or_dead"] < 1 for s in stats.values())  # the counts are exercised


def test_captured_activations_are_pre_dropout_and_hooks_are_removed():
    config = CONFIGS["flat-relu-2blocks-dropout"]
    params, model, idx, _ = engines(config)
    rng = np.random.default_rng(1)
    masks = {
        name: make_keep_mask(shape, config.dropout, rng) for name, shape in nd.shape_report(params, idx, config)[1:-1]
    }
    *_, cache = neural_lm_forward(params, idx, config, train=True, masks=masks)
    with model.train().capture_activations() as acts:
        model(to_torch(idx), masks={name: to_torch(m) for name, m in masks.items()})
    assert_same(acts, hidden_activations(cache), "activations")
    assert all(np.any(a[~masks[name]] != 0) for name, a in hidden_activations(cache).items())  # not dropped
    assert not any(m._forward_hooks for m in model.modules())


@pytest.mark.parametrize("name", CONFIGS)
def test_grad_norms_match_and_total_is_the_global_norm(name, dtypes):
    np_dtype, torch_dtype = dtypes
    config = CONFIGS[name]
    params, model, idx, targets = engines(config, np_dtype, torch_dtype)
    *_, cache = neural_lm_forward(params, idx, config, targets)
    grads = neural_lm_backward(cache)
    norms = nd.grad_norms(grads, config)
    model.eval()(to_torch(idx), to_torch(targets))[1].backward()
    before = {n: p.grad.clone() for n, p in model.named_parameters()}
    assert_same(td.grad_norms(model), norms, "grad_norms", **TOLERANCES[np_dtype])
    assert_same({n: p.grad for n, p in model.named_parameters()}, before, "grad", rtol=0, atol=0)  # no side effects
    assert list(norms) == [*model.layer_names(), "total"]
    flat = np.concatenate([g.ravel() for g in grads.values()]).astype(np.float64)
    assert norms["total"] == pytest.approx(math.sqrt(np.sum(flat**2)), rel=1e-6)
    hidden0 = np.concatenate([g.ravel() for k, g in grads.items() if k.startswith("hidden.0.")])
    assert norms["hidden.0"] == pytest.approx(float(np.linalg.norm(hidden0)), rel=1e-6)


def test_grad_norms_need_gradients():
    model = NeuralLM(CONFIGS["flat-relu-2blocks-dropout"])
    with pytest.raises(ValueError, match="has no gradient"):
        td.grad_norms(model)
    with pytest.raises(ValueError, match="belongs to none of the layers"):
        nd.grad_norms({"decoder.weight": np.ones(3)}, CONFIGS["flat-relu-2blocks-dropout"])


@pytest.mark.parametrize(
    "activation, values, flagged",
    [
        ("relu", [0.0, 0.0, 0.5, 0.0, 2.0, 1e-30, 0.0, 3.0], 4),  # 1e-30 is alive
        ("tanh", [0.97, -0.97, 0.9701, -0.99, 0.5, 0.0, 0.96, 1.0], 3),  # > 0.97 strictly
        ("gated", [0.97, -0.97, 0.9701, -0.99, 0.5, 0.0, 0.96, 1.0], 3),  # tanh's bound on tanh(a) * sigmoid(b)
    ],
)
def test_frac_saturated_or_dead_counts_exactly(activation, values, flagged):
    a = np.array(values).reshape(2, 4)
    expected = {
        "layer": {"mean": float(np.mean(a)), "std": float(np.std(a)), "frac_saturated_or_dead": flagged / a.size}
    }
    assert nd.summarize_activations({"layer": a}, activation) == expected
    assert_same(td.summarize_activations({"layer": to_torch(a)}, activation), expected, **TOLERANCES[np.float64])
    assert (
        td.summarize_activations({"layer": to_torch(a)}, activation)["layer"]["frac_saturated_or_dead"]
        == flagged / a.size
    )


def test_overfit_tiny_batch_drives_the_loss_to_zero():
    config = ModelConfig(
        vocab_size=10,
        context=4,
        embed_dim=8,
        hidden_dim=32,
        fusion=(2, 2),
        activation="relu",
        norm=True,
        n_blocks=1,
        dropout=0.3,
    )
    rng = np.random.default_rng(0)
    idx, targets = rng.integers(0, 10, (8, 4)), rng.integers(0, 10, 8)
    assert len({tuple(row) for row in idx}) == 8  # distinct contexts: loss 0 is reachable
    curve = nd.overfit_tiny_batch(init_params(config, rng), idx, targets, config, steps=100, lr=1.0)
    assert len(curve) == 100 and curve[0] > 2.0 and curve[-1] < 0.01

    model = NeuralLM(config).double()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for optimizer, lr, steps in (("adam", 3e-2, 50), ("sgd", 1.0, 75)):
        curve = td.overfit_tiny_batch(model, to_torch(idx), to_torch(targets), steps, lr, optimizer)
        assert len(curve) == steps and curve[0] > 2.0 and curve[-1] < 0.01, optimizer
    assert_same(model.state_dict(), state, "state", rtol=0, atol=0)  # trained a copy
    assert model.training
