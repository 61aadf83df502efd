"""NeuralLM parity: ``numpy_ref.neural_lm`` (hand-chained backward) vs ``torch_lm.neural_lm`` (autograd).

Logits, loss and every parameter gradient agree over the architecture family (flat, fusion,
residual blocks, LayerNorm, tanh/ReLU/gated units, pair embeddings, dropout with shared masks), in
float64 and float32; the
NumPy backward matches central differences and the torch module passes ``gradcheck``; the
sequence forward's row j is the window forward at position j; the initialisation gives a loss of
~ln V; both engines reject the same bad inputs.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from numpy_ref.config import ModelConfig
from numpy_ref.dropout import make_keep_mask
from numpy_ref.init import he_std, xavier_std
from numpy_ref.neural_lm import (
    OUTPUT_INIT_SCALE,
    hidden_layer_names,
    hidden_preactivations,
    init_params,
    layer_shapes,
    neural_lm_backward,
    neural_lm_forward,
)
from torch_lm.neural_lm import NeuralLM
from torch_lm.parity import (
    Case,
    assert_central_differences,
    assert_gradcheck,
    assert_parity,
    assert_refused_alike,
    assert_same,
    mismatches,
    run_numpy,
    run_torch,
    state_of,
    to_torch,
)
from torch_lm.parity.components import NEURAL_LM, NEURAL_LM_SEQUENCE

# The same models, forward only (logits, and the loss when there are targets): nothing is
# differentiated, so a case needs no targets.
WINDOW_FORWARD = dataclasses.replace(NEURAL_LM, numpy_backward=None)
SEQUENCE_FORWARD = dataclasses.replace(NEURAL_LM_SEQUENCE, numpy_backward=None)


def tiny(**overrides) -> ModelConfig:
    """A small config (V 7, context 4, E 3, H 6, tanh units) with overrides."""
    return ModelConfig(
        **{"vocab_size": 7, "context": 4, "embed_dim": 3, "hidden_dim": 6, "activation": "tanh"} | overrides
    )


CONFIGS = {
    "flat-tanh": tiny(),
    "flat-relu-norm-2blocks": tiny(activation="relu", norm=True, n_blocks=2),
    "fusion22-relu-1block": tiny(fusion=(2, 2), activation="relu", n_blocks=1),
    "fusion22-tanh-norm": tiny(fusion=(2, 2), norm=True),
    "fusion222-tanh-norm-2blocks": tiny(context=8, fusion=(2, 2, 2), norm=True, n_blocks=2),
    "fusion42-relu-norm-1block": tiny(context=8, fusion=(4, 2), activation="relu", norm=True, n_blocks=1),
    "fusion22-gated-norm-1block": tiny(fusion=(2, 2), activation="gated", norm=True, n_blocks=1),
    "flat-gated-nonorm": tiny(activation="gated", norm=False),
    "flat-tanh-pairs": tiny(pair_embed=True),
    "fusion42-relu-norm-pairs-1block": tiny(context=8, fusion=(4, 2), activation="relu", pair_embed=True, n_blocks=1),
    "fusion22-gated-norm-pairs-1block": tiny(fusion=(2, 2), activation="gated", pair_embed=True, n_blocks=1),
}


def random_params(config: ModelConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``init_params`` plus noise, so biases and LayerNorm gains are not at their special 0 / 1."""
    return {name: p + 0.3 * rng.standard_normal(p.shape) for name, p in init_params(config, rng).items()}


def random_batch(config: ModelConfig, rng: np.random.Generator, batch: int):
    """idx (B, T), targets (B,): random ids, so with V = 7 most ids repeat."""
    idx = rng.integers(0, config.vocab_size, (batch, config.context))
    return idx, rng.integers(0, config.vocab_size, batch)


def random_sequence(config: ModelConfig, rng: np.random.Generator, batch: int = 3, extra: int = 6):
    """idx (B, context + extra), targets (B, extra + 1): one target per position with a full context."""
    idx = rng.integers(0, config.vocab_size, (batch, config.context + extra))
    return idx, rng.integers(0, config.vocab_size, (batch, extra + 1))


def keep_masks(component, config: ModelConfig, params, idx, rng) -> dict[str, np.ndarray]:
    """A dropout keep-mask for every hidden layer, shaped like that layer's output in the
    component's forward (window or sequence)."""
    _, cache = component.numpy_forward(params, {"config": config, "idx": idx})
    return {
        name: make_keep_mask(shape, config.dropout, rng)
        for name, shape in layer_shapes(cache)
        if name in hidden_layer_names(config)
    }


def case(config: ModelConfig, params, idx, targets=None, masks=None, label: str = "") -> Case:
    """params differentiated; config, ids and masks fixed (masks given: training mode)."""
    fixed = {"config": config, "idx": idx, "targets": targets, "masks": masks}
    return Case(params, {k: v for k, v in fixed.items() if v is not None}, label=label)


def assert_gradcheck_of_logits_and_loss(component, checked: Case) -> None:
    """``gradcheck`` of the logits as well as the loss (the component differentiates the loss)."""
    assert_gradcheck(dataclasses.replace(component, differentiated=None), checked)


# ----------------------------------------------------------------------------- parity
@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("name", CONFIGS)
def test_forward_and_every_gradient_match(name, batch, dtypes, rng):
    config = CONFIGS[name]
    params = random_params(config, rng)
    assert_parity(NEURAL_LM, case(config, params, *random_batch(config, rng, batch), label=name), dtypes)


@pytest.mark.parametrize("name", ["fusion22-relu-1block", "fusion42-relu-norm-pairs-1block"])
def test_one_repeated_id_accumulates_every_gradient(name, dtypes, rng):
    """All B*T positions hold the same id: its embedding row (and its pair's row) gets the sum of all of them."""
    config = CONFIGS[name]
    params = random_params(config, rng)
    run = assert_parity(NEURAL_LM, case(config, params, np.full((3, config.context), 4), np.full(3, 4)), dtypes)
    assert np.count_nonzero(run.grads["embedding.weight"].any(axis=1)) == 1
    if config.pair_embed:
        assert np.flatnonzero(run.grads["pair_embedding.weight"].any(axis=1)).tolist() == [4 * 7 + 4]


@pytest.mark.parametrize(
    "name", ["flat-relu-norm-2blocks", "fusion222-tanh-norm-2blocks", "fusion22-gated-norm-pairs-1block"]
)
def test_dropout_with_shared_masks_matches_in_train_mode(name, dtypes, rng):
    config = dataclasses.replace(CONFIGS[name], dropout=0.4)
    params = random_params(config, rng)
    idx, targets = random_batch(config, rng, 3)
    masks = keep_masks(NEURAL_LM, config, params, idx, rng)
    run = assert_parity(NEURAL_LM, case(config, params, idx, targets, masks, label=name), dtypes)
    eval_logits = run_numpy(WINDOW_FORWARD, case(config, params, idx), dtypes[0]).outputs["logits"]
    assert mismatches(run.outputs["logits"], eval_logits, rtol=1e-5, atol=1e-8)  # the masks were applied


def test_torch_dropout_draws_from_the_generator(rng):
    config = dataclasses.replace(CONFIGS["fusion22-tanh-norm"], dropout=0.5)
    model = NeuralLM(config).double().train()
    idx = to_torch(random_batch(config, rng, 4)[0])
    first, second = (model(idx, generator=torch.Generator().manual_seed(7))[0] for _ in range(2))
    assert_same(first, second)
    assert mismatches(first, model.eval()(idx)[0], rtol=1e-5, atol=1e-8)


# ----------------------------------------------------------------------------- gradient checks
GRADCHECK_CONFIGS = {
    "fusion22-tanh-norm-1block-dropout": tiny(
        vocab_size=5, hidden_dim=4, fusion=(2, 2), norm=True, n_blocks=1, dropout=0.25
    ),
    "flat-relu-2blocks": tiny(vocab_size=5, hidden_dim=4, activation="relu", n_blocks=2),
    "fusion22-gated-norm-pairs-1block-dropout": tiny(
        vocab_size=5,
        hidden_dim=4,
        fusion=(2, 2),
        activation="gated",
        norm=True,
        n_blocks=1,
        dropout=0.25,
        pair_embed=True,
    ),
    "flat-gated-pairs": tiny(vocab_size=5, hidden_dim=4, activation="gated", pair_embed=True),
}
# Smooth configurations (no ReLU kink): central differences hold at every position of a sequence.
SMOOTH = ["fusion22-tanh-norm-1block-dropout", "fusion22-gated-norm-pairs-1block-dropout", "flat-gated-pairs"]

# Richardson's (4 D(h) - D(2h)) / 3 from two central differences: error O(h^4) instead of O(h^2).
# With plain central differences the rounding noise eps*|f|/h and the truncation h^2 cannot both
# be pushed below ~1e-10, too much for rel_error <= 1e-7 on gradient entries ~1e-3; h = 1e-3
# keeps the rounding at ~1e-13 and the truncation below it.
CENTRAL_DIFFERENCES = {"bound": 1e-7, "h": 1e-3, "richardson": True}


@pytest.mark.parametrize("name", GRADCHECK_CONFIGS)
def test_numpy_backward_matches_central_differences(name):
    config = GRADCHECK_CONFIGS[name]
    rng = np.random.default_rng(0)
    params = random_params(config, rng)
    idx, targets = random_batch(config, rng, 3)
    masks = keep_masks(NEURAL_LM, config, params, idx, rng) if config.dropout else None
    checked = case(config, params, idx, targets, masks, label=name)
    _, cache = NEURAL_LM.numpy_forward(checked.inputs, checked.fixed)
    # A step of 2h = 2e-3 on a weight moves a pre-activation by < 1e-2 here: stay off ReLU's kink.
    if config.activation == "relu":
        assert min(np.abs(z).min() for z in hidden_preactivations(cache).values()) > 1e-2
    assert_central_differences(NEURAL_LM, checked, **CENTRAL_DIFFERENCES)


@pytest.mark.parametrize("name", SMOOTH)
def test_torch_gradcheck_with_parameters_as_inputs(name, rng):
    config = GRADCHECK_CONFIGS[name]
    params = random_params(config, rng)
    idx, targets = random_batch(config, rng, 3)
    masks = keep_masks(NEURAL_LM, config, params, idx, rng) if config.dropout else None
    assert_gradcheck_of_logits_and_loss(NEURAL_LM, case(config, params, idx, targets, masks))


# ----------------------------------------------------------------------------- every position at once
@pytest.mark.parametrize("name", CONFIGS)
def test_sequence_logits_are_the_window_logits_at_every_position(name, rng):
    """Row j of the sequence forward is the window forward of idx[:, j:j + C], in both engines:
    a fusion level with the wrong dilation (or taps in the wrong order) breaks it."""
    config = CONFIGS[name]
    params = random_params(config, rng)
    idx, _ = random_sequence(config, rng)
    for run in (run_numpy, run_torch):
        logits = run(SEQUENCE_FORWARD, case(config, params, idx)).outputs["logits"]
        assert logits.shape == (3, 7, config.vocab_size), run.__name__
        for j in range(logits.shape[1]):
            window = run(WINDOW_FORWARD, case(config, params, idx[:, j : j + config.context])).outputs["logits"]
            assert_same(logits[:, j], window, f"{run.__name__} logits at position {j}", rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", CONFIGS)
def test_sequence_forward_and_every_gradient_match_with_shared_masks(name, dtypes, rng):
    config = dataclasses.replace(CONFIGS[name], dropout=0.3)
    params = random_params(config, rng)
    idx, targets = random_sequence(config, rng)
    masks = keep_masks(NEURAL_LM_SEQUENCE, config, params, idx, rng)
    assert_parity(NEURAL_LM_SEQUENCE, case(config, params, idx, targets, masks, label=name), dtypes)


@pytest.mark.parametrize("name", SMOOTH)
def test_sequence_backward_matches_central_differences(name):
    """Every input position feeds several outputs of a level: its gradient is their sum (a
    scatter-add; an assignment keeps only the last tap's share and fails here). tanh or gated
    units, LayerNorm, a block, pair embeddings and dropout masks: smooth, so central differences
    hold to 1e-7 at every position (with ReLU some of the many positions sit within a step of the
    kink; the parity test covers ReLU)."""
    config = GRADCHECK_CONFIGS[name]
    rng = np.random.default_rng(0)
    params = random_params(config, rng)
    idx, targets = random_sequence(config, rng, batch=2)
    masks = keep_masks(NEURAL_LM_SEQUENCE, config, params, idx, rng) if config.dropout else None
    checked = case(config, params, idx, targets, masks, label=name)
    assert_central_differences(NEURAL_LM_SEQUENCE, checked, **CENTRAL_DIFFERENCES)


@pytest.mark.parametrize("name", SMOOTH)
def test_sequence_torch_gradcheck_with_parameters_as_inputs(name, rng):
    config = GRADCHECK_CONFIGS[name]
    params = random_params(config, rng)
    idx, targets = random_sequence(config, rng, batch=2)
    masks = keep_masks(NEURAL_LM_SEQUENCE, config, params, idx, rng) if config.dropout else None
    assert_gradcheck_of_logits_and_loss(NEURAL_LM_SEQUENCE, case(config, params, idx, targets, masks))


@pytest.mark.parametrize(
    "idx, targets, message",
    [
        (np.zeros((2, 3), np.int64), None, r"idx must have shape \(B, L\) with B >= 1 and L >= context 4"),
        (np.zeros((0, 6), np.int64), None, r"idx must have shape \(B, L\)"),
        (np.zeros((2, 6)), None, "idx must hold integers"),
        (np.zeros((2, 6), np.int64), np.zeros((2, 6), np.int64), r"targets must have shape .* = \(2, 3\)"),
        (np.zeros((2, 6), np.int64), np.zeros((2, 3)), "targets must hold integers"),
    ],
    ids=["shorter than the context", "empty batch", "float ids", "targets shape", "float targets"],
)
def test_sequence_bad_inputs_are_refused_alike(idx, targets, message, rng):
    config = CONFIGS["fusion22-tanh-norm"]
    assert_refused_alike(NEURAL_LM_SEQUENCE, case(config, random_params(config, rng), idx, targets), message)


# ----------------------------------------------------------------------------- structure and init
def test_state_dict_keys_are_the_numpy_parameter_names():
    config = CONFIGS["fusion22-relu-1block"]
    model = NeuralLM(dataclasses.replace(config, norm=True))
    expected = [
        "embedding.weight",
        *[
            f"{layer}.{part}.{p}"
            for layer in ("hidden.0", "hidden.1", "blocks.0")
            for part in ("linear", "norm")
            for p in ("weight", "bias")
        ],
        "output.weight",
        "output.bias",
    ]
    assert list(model.state_dict()) == expected
    assert list(init_params(model.config, np.random.default_rng(0))) == expected
    assert model.layer_names() == ["embedding", "hidden.0", "hidden.1", "blocks.0", "output"]
    # E*V + (2E*H + H) + (2H*H + H) + (H*H + H) + 3 LayerNorms of 2H + (H*V + V), E 3, H 6, V 7
    assert model.num_parameters() == 21 + 42 + 78 + 42 + 36 + 49 == 268


def test_gated_layers_are_twice_as_wide_and_the_pair_table_follows_the_embedding():
    config = CONFIGS["fusion22-gated-norm-pairs-1block"]  # V 7, E 3, H 6: every Linear and LayerNorm 2H = 12 wide
    model = NeuralLM(dataclasses.replace(config, norm=True))
    expected = {
        "embedding.weight": (7, 3),
        "pair_embedding.weight": (49, 3),
        **{
            f"{layer}.{part}": shape
            for layer, fan_in in (("hidden.0", 6), ("hidden.1", 12), ("blocks.0", 6))
            for part, shape in (
                ("linear.weight", (12, fan_in)),
                ("linear.bias", (12,)),
                ("norm.weight", (12,)),
                ("norm.bias", (12,)),
            )
        },
        "output.weight": (7, 6),
        "output.bias": (7,),
    }
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == expected
    assert list(model.state_dict()) == list(expected)
    params = init_params(model.config, np.random.default_rng(0))
    assert {k: v.shape for k, v in params.items()} == expected and list(params) == list(expected)
    assert model.layer_names() == ["embedding", "pair_embedding", "hidden.0", "hidden.1", "blocks.0", "output"]


def test_pair_table_starts_at_zero_so_the_model_starts_as_the_one_without_pairs(rng):
    """The pair table draws nothing: the other parameters and the logits are those of the same
    config without pairs, in both engines."""
    config = CONFIGS["fusion22-gated-norm-pairs-1block"]
    without = dataclasses.replace(config, pair_embed=False)
    idx = random_sequence(config, rng)[0]
    with_pairs, plain = (init_params(c, np.random.default_rng(1)) for c in (config, without))
    assert_same(with_pairs.pop("pair_embedding.weight"), np.zeros((49, 3)), rtol=0, atol=0)
    assert_same(with_pairs, plain, rtol=0, atol=0)
    models = [NeuralLM(c).double().eval() for c in (config, without)]
    for model in models:
        model.reset_parameters(torch.Generator().manual_seed(2))
    assert_same(models[0].pair_embedding.weight, torch.zeros(49, 3, dtype=torch.float64), rtol=0, atol=0)
    logits = [m.forward_sequence(to_torch(idx))[0] for m in models]
    assert_same(logits[0], logits[1], rtol=0, atol=0)


def test_config_loads_dicts_without_pair_embed_and_checks_it():
    old = ModelConfig().to_dict()
    del old["pair_embed"]  # a checkpoint written before the option existed
    assert ModelConfig.from_dict(old) == ModelConfig() and not ModelConfig.from_dict(old).pair_embed
    new = tiny(activation="gated", pair_embed=True)
    assert ModelConfig.from_dict(new.to_dict()) == new
    with pytest.raises(ValueError, match="ModelConfig: pair_embed must be True or False, got 1"):
        tiny(pair_embed=1)
    with pytest.raises(ValueError, match=r"ModelConfig: activation must be one of \('tanh', 'relu', 'gated'\)"):
        tiny(activation="glu")


def expected_std(key: str, config: ModelConfig, fan_in: int) -> float:
    """Std the initialisation promises for a weight key (fan_in of its Linear)."""
    if key == "embedding.weight":
        return 1.0
    if key == "output.weight":
        return OUTPUT_INIT_SCALE * xavier_std(config.hidden_dim, config.vocab_size)
    fan_out = 2 * config.hidden_dim if config.activation == "gated" else config.hidden_dim
    return he_std(fan_in) if config.activation == "relu" else xavier_std(fan_in, fan_out)


@pytest.mark.parametrize(
    "config",
    [
        ModelConfig(),
        ModelConfig(context=8, fusion=(2, 4), activation="relu", norm=True, n_blocks=2, hidden_dim=256),
        ModelConfig(context=8, fusion=(2, 4), activation="gated", pair_embed=True, n_blocks=1, hidden_dim=128),
    ],
    ids=["default", "fusion24-relu-norm-2blocks", "fusion24-gated-norm-pairs-1block"],
)
def test_initialisation_statistics_and_initial_loss_near_ln_v(config):
    rng = np.random.default_rng(0)
    idx, targets = random_batch(config, rng, 512)
    model = NeuralLM(config).double()
    model.reset_parameters(torch.Generator().manual_seed(0))
    for engine, params in {"numpy": init_params(config, rng), "torch": state_of(model)}.items():
        for key, p in params.items():
            if key == "pair_embedding.weight":  # zeros: see torch_lm.pair_embedding.PairEmbedding
                assert np.all(p == 0), engine
            elif key.endswith("weight") and p.ndim == 2:
                fan_in = p.shape[1]
                assert abs(p.std() / expected_std(key, config, fan_in) - 1) < 0.08, (engine, key)
                assert abs(p.mean()) < 0.1 * expected_std(key, config, fan_in), (engine, key)
            else:  # biases 0, LayerNorm gains 1
                assert np.all(p == (1.0 if key.endswith("norm.weight") else 0.0)), (engine, key)
        loss = run_numpy(WINDOW_FORWARD, case(config, params, idx, targets)).outputs["loss"]
        assert abs(float(loss) - math.log(config.vocab_size)) < 0.05, engine


# ----------------------------------------------------------------------------- bad input
# Config V 7, context 4, dropout 0.5, hidden layers hidden.0 (B, 2, 6) and hidden.1 (B, 1, 6).
# Both engines run in training mode, as in a training step: every hidden layer without a mask of
# the case's own keeps every unit (B = 2), so the checks after dropout (mask shape, the targets'
# range) are reached.
KEEP_ALL = {"hidden.0": np.ones((2, 2, 6), bool), "hidden.1": np.ones((2, 1, 6), bool)}
BAD_INPUTS = {  # label: (idx, targets, masks, message)
    "T != context": (np.zeros((2, 5), np.int64), None, None, r"idx must have shape \(B, 4\)"),
    "1-D idx": (np.zeros(4, np.int64), None, None, "idx must be 2-D"),
    "empty batch": (np.zeros((0, 4), np.int64), None, None, r"idx must have shape \(B, 4\) with B >= 1"),
    "float ids": (np.zeros((2, 4)), None, None, "idx must hold integers"),
    "id -1": (np.array([[0, 1, -1, 2]]), None, None, r"idx must lie in \[0, 7\)"),
    "id V": (np.array([[0, 1, 7, 2]]), None, None, r"idx must lie in \[0, 7\)"),
    "targets (B+1,)": (np.zeros((2, 4), np.int64), np.zeros(3, np.int64), None, "targets has shape"),
    "targets (B, 1)": (np.zeros((2, 4), np.int64), np.zeros((2, 1), np.int64), None, "targets has shape"),
    "float targets": (np.zeros((2, 4), np.int64), np.zeros(2), None, "targets must hold integers"),
    "target V": (np.zeros((2, 4), np.int64), np.array([0, 7]), None, r"targets must lie in \[0, 7\)"),
    "mask name": (np.zeros((2, 4), np.int64), None, {"hidden0": np.ones((2, 2, 6), bool)}, "unknown layer names"),
    "mask shape": (np.zeros((2, 4), np.int64), None, {"hidden.1": np.ones((2, 2, 6), bool)}, "mask has shape"),
}


@pytest.mark.parametrize("label", BAD_INPUTS)
def test_both_engines_reject_bad_input(label):
    config = tiny(fusion=(2, 2), dropout=0.5)
    idx, targets, masks, message = BAD_INPUTS[label]
    params = init_params(config, np.random.default_rng(0))
    refused = case(config, params, idx, targets, KEEP_ALL | (masks or {}), label=label)
    assert_refused_alike(NEURAL_LM, refused, message)


def test_numpy_backward_needs_a_loss():
    config = tiny()
    params = init_params(config, np.random.default_rng(0))
    _, loss, cache = neural_lm_forward(params, np.zeros((2, 4), np.int64), config)
    assert loss is None
    with pytest.raises(ValueError, match="without targets"):
        neural_lm_backward(cache)
