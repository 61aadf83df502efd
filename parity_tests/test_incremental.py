"""Incremental prediction: ``numpy_ref.incremental`` vs ``torch_lm.incremental``, with the window
forward as the witness.

At every position of random id streams, from the first steps after ``reset`` (windows PAD-padded
on the left) to streams several contexts long, both engines' ``step`` logits equal the window
forward of the last C stream ids (``neural_lm_forward``, ``NeuralLM.forward`` in eval mode), in
float64 and float32, over the architecture family (gated, tanh and ReLU units, LayerNorm on and
off, pair embeddings, residual blocks, fusion (2, 2, 2, 2), (4, 2, 2), (2, 8), (2, 2), a level of
one, the flat MLP); the two engines agree; ``feed`` is stepping; ``reset`` restores the start;
the rows of a batch are independent; parameters changed in place are used; bad input is refused
alike.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from numpy_ref.config import ModelConfig
from numpy_ref.incremental import PAD_ID, level_dilations, level_spans
from numpy_ref.incremental import IncrementalLM as NumpyIncrementalLM
from numpy_ref.neural_lm import init_params, neural_lm_forward
from torch_lm.incremental import IncrementalLM
from torch_lm.neural_lm import NeuralLM
from torch_lm.parity import Case, Component, assert_parity, assert_refused_alike, assert_same, run_numpy, to_torch

SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def small(**overrides) -> ModelConfig:
    """The default architecture (gated units, LayerNorm, fusion (2, 2, 2, 2) at context 16) at toy
    widths (V 7, E 3, H 6), with overrides."""
    return ModelConfig(**{"vocab_size": 7, "embed_dim": 3, "hidden_dim": 6} | overrides)


CONFIGS = {
    "default-gated-2222": small(),
    "tanh-2222-nonorm": small(activation="tanh", norm=False),
    "relu-422-2blocks": small(fusion=(4, 2, 2), activation="relu", n_blocks=2),
    "gated-28-pairs": small(fusion=(2, 8), pair_embed=True),
    "tanh-422-pairs-nonorm": small(fusion=(4, 2, 2), activation="tanh", norm=False, pair_embed=True),
    "gated-2222-pairs-1block": small(pair_embed=True, n_blocks=1),
    "relu-context4-22-pairs": small(context=4, fusion=(2, 2), activation="relu", pair_embed=True),
    "tanh-context4-22-1block": small(context=4, fusion=(2, 2), activation="tanh", n_blocks=1),
    "gated-context4-14-pairs": small(context=4, fusion=(1, 4), pair_embed=True),  # level 0 has only a tap 0
    "flat-gated-pairs": small(context=5, fusion=(), pair_embed=True),
    "flat-relu-nonorm-1block": small(context=6, fusion=(), activation="relu", norm=False, n_blocks=1),
}


def random_params(config: ModelConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``init_params`` plus noise: biases, LayerNorm gains and the (zero-initialised) pair table
    away from their special values, so a pair read at the wrong tap changes the logits."""
    return {name: p + 0.3 * rng.standard_normal(p.shape) for name, p in init_params(config, rng).items()}


def torch_model(config: ModelConfig, params) -> NeuralLM:
    """A NeuralLM in eval mode holding ``params`` (arrays or tensors), in their dtype."""
    first = next(iter(params.values()))
    dtype = first.dtype if isinstance(first, torch.Tensor) else to_torch(first).dtype
    model = NeuralLM(config).to(dtype).eval()
    with torch.no_grad():
        model.load_state_dict({k: to_torch(v) if isinstance(v, np.ndarray) else v.detach() for k, v in params.items()})
    return model


def padded_windows(ids, context: int):
    """ids (B, T) -> (B*T, C): the last C ids of the stream after each position, the stream
    starting with C copies of PAD_ID (what the predictor sees before its first id)."""
    B, T = ids.shape
    stream = np.concatenate([np.full((B, context), PAD_ID, dtype=np.int64), np.asarray(ids)], axis=1)
    windows = np.stack([stream[:, t + 1 : t + 1 + context] for t in range(T)], axis=1)  # (B, T, C)
    return windows.reshape(B * T, context)


# ----------------------------------------------------------------------------- the component
def _steps(predictor, ids, stack):
    """reset(B), then one step per column of ids (B, T) -> logits (B, T, V)."""
    predictor.reset(ids.shape[0])
    return stack([predictor.step(ids[:, t]) for t in range(ids.shape[1])], 1)


def _run(predictor, fixed, stack):
    """What ``fixed`` asks of a fresh predictor: a stream of steps ("steps"), or one call of
    ``fixed["method"]`` with the ids as given after ``reset(fixed["batch"])`` (None: no reset)."""
    if fixed["method"] == "steps":
        return {"logits": _steps(predictor, fixed["ids"], stack)}
    if fixed["batch"] is not None:
        predictor.reset(fixed["batch"])
    return {"logits": getattr(predictor, fixed["method"])(fixed["ids"])}


def _numpy_incremental(inputs, fixed):
    return _run(NumpyIncrementalLM(dict(inputs), fixed["config"]), fixed, np.stack), None


def _torch_incremental(inputs, fixed):
    return _run(IncrementalLM(torch_model(fixed["config"], inputs)), fixed, torch.stack)


def _torch_window(inputs, fixed):
    """The witness: ``NeuralLM.forward`` (eval) of every PAD-padded window of the stream."""
    config, ids = fixed["config"], fixed["ids"]
    windows = torch.from_numpy(padded_windows(ids.numpy(), config.context))
    with torch.no_grad():
        logits, _ = torch_model(config, inputs)(windows)  # (B*T, V)
    return {"logits": logits.reshape(*ids.shape, config.vocab_size)}


INCREMENTAL = Component("incremental_lm", _numpy_incremental, _torch_incremental, witness=_torch_window)


def stream_case(config: ModelConfig, params, ids, label: str = "") -> Case:
    """params as inputs (nothing is differentiated); a stream of ids (B, T), stepped."""
    return Case(params, {"config": config, "ids": ids, "method": "steps"}, label=label)


def numpy_window_logits(params, config: ModelConfig, ids) -> np.ndarray:
    """The reference's witness: ``neural_lm_forward`` of every PAD-padded window, (B, T, V)."""
    logits, _, _ = neural_lm_forward(params, padded_windows(ids, config.context), config)
    return logits.reshape(*np.shape(ids), config.vocab_size)


# ----------------------------------------------------------------------------- structure
@pytest.mark.parametrize(
    "groups, dilations, spans",
    [((2, 2, 2, 2), [1, 2, 4, 8], [2, 3, 5, 9]), ((4, 2, 2), [1, 4, 8], [4, 5, 9]), ((2, 8), [1, 2], [2, 15])],
)
def test_levels_keep_their_oldest_tap_to_their_newest(groups, dilations, spans):
    config = small(fusion=groups)
    assert level_dilations(config) == dilations and level_spans(config) == spans
    assert level_spans(small(context=5, fusion=())) == [5]


# ----------------------------------------------------------------------------- every step is the window forward
@pytest.mark.parametrize("name", CONFIGS)
def test_every_step_is_the_window_forward_of_the_padded_stream(name, dtypes, rng):
    """Positions 0..C-1 read PAD-padded windows, the rest run two contexts past them: numpy vs
    torch, torch vs ``NeuralLM.forward``, numpy vs ``neural_lm_forward``."""
    config = CONFIGS[name]
    params = random_params(config, rng)
    ids = rng.integers(0, config.vocab_size, (3, 3 * config.context + 5))
    run = assert_parity(INCREMENTAL, stream_case(config, params, ids, label=name), dtypes)
    cast = {k: v.astype(dtypes[0]) for k, v in params.items()}
    assert_same(run.outputs["logits"], numpy_window_logits(cast, config, ids), f"{name}: numpy vs window forward")


@SETTINGS
@given(
    name=st.sampled_from(["default-gated-2222", "gated-28-pairs", "relu-context4-22-pairs", "flat-gated-pairs"]),
    batch=st.integers(1, 4),
    length=st.integers(1, 40),
    vocab=st.integers(1, 5),
    seed=st.integers(0, 2**32 - 1),
)
def test_random_streams_in_float64(name, batch, length, vocab, seed):
    """Any batch, any length (shorter than a context included) and small vocabularies, where
    repeated ids and pairs and the pad itself are the rule."""
    config = dataclasses.replace(CONFIGS[name], vocab_size=vocab)
    rng = np.random.default_rng(seed)
    params = random_params(config, rng)
    ids = rng.integers(0, vocab, (batch, length))
    run = assert_parity(INCREMENTAL, stream_case(config, params, ids, label=name))
    assert_same(run.outputs["logits"], numpy_window_logits(params, config, ids), f"{name}: numpy vs window forward")


# ----------------------------------------------------------------------------- feed, reset, rows, the first prediction
ENGINES = {
    "numpy": lambda config, params: NumpyIncrementalLM(params, config),
    "torch": lambda config, params: IncrementalLM(torch_model(config, params)),
}


def as_engine(engine: str, ids: np.ndarray):
    return ids if engine == "numpy" else torch.from_numpy(ids)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", ["gated-2222-pairs-1block", "flat-gated-pairs"])
def test_feed_is_stepping_and_reset_restores_the_start(engine, name, rng):
    config = CONFIGS[name]
    predictor = ENGINES[engine](config, random_params(config, rng))
    ids = rng.integers(0, config.vocab_size, (2, 2 * config.context + 3))
    stepped = _steps(predictor, as_engine(engine, ids), np.stack if engine == "numpy" else torch.stack)
    predictor.reset(2)
    assert_same(predictor.feed(as_engine(engine, ids)), stepped[:, -1], rtol=0, atol=0)
    predictor.reset(2)
    for chunk in np.array_split(np.arange(ids.shape[1]), 4):  # feed in pieces: the state carries over
        last = predictor.feed(as_engine(engine, ids[:, chunk]))
    assert_same(last, stepped[:, -1], rtol=0, atol=0)
    predictor.reset(2)  # after a stream: the same logits as a fresh start
    assert_same(predictor.step(as_engine(engine, ids[:, 0])), stepped[:, 0], rtol=0, atol=0)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", ["gated-2222-pairs-1block", "gated-28-pairs", "flat-gated-pairs"])
def test_a_pad_after_reset_predicts_the_first_character_and_changes_nothing(engine, name, rng):
    """step(PAD_ID) right after reset is the window of C pads, and the state stays the start:
    the stream before the first id is all pads already."""
    config = CONFIGS[name]
    params = random_params(config, rng)
    predictor = ENGINES[engine](config, params)
    ids = rng.integers(0, config.vocab_size, (1, 2 * config.context))
    predictor.reset(1)
    first = predictor.step(as_engine(engine, np.array([PAD_ID])))
    assert_same(first, numpy_window_logits(params, config, np.array([[PAD_ID]]))[:, 0])
    after_pad = predictor.feed(as_engine(engine, ids))
    predictor.reset(1)
    assert_same(after_pad, predictor.feed(as_engine(engine, ids)), rtol=0, atol=0)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", ["gated-2222-pairs-1block", "relu-422-2blocks", "flat-gated-pairs"])
def test_the_state_is_a_function_of_the_last_context_ids(engine, name, rng):
    """After a long stream the predictor continues as after reset and only its last C ids (what
    the sampler relies on to feed only the end of a long prompt)."""
    config = CONFIGS[name]
    predictor = ENGINES[engine](config, random_params(config, rng))
    C = config.context
    ids = rng.integers(0, config.vocab_size, (2, 3 * C))
    then = rng.integers(0, config.vocab_size, (2, C + 2))
    predictor.reset(2)
    predictor.feed(as_engine(engine, ids))
    long = predictor.feed(as_engine(engine, then))
    predictor.reset(2)
    predictor.feed(as_engine(engine, ids[:, -C:]))
    assert_same(predictor.feed(as_engine(engine, then)), long)


@pytest.mark.parametrize("engine", ENGINES)
def test_rows_of_a_batch_are_independent(engine, rng):
    config = CONFIGS["gated-2222-pairs-1block"]
    params = random_params(config, rng)
    ids = rng.integers(0, config.vocab_size, (3, 20))
    predictor = ENGINES[engine](config, params)
    stack = np.stack if engine == "numpy" else torch.stack
    batched = _steps(predictor, as_engine(engine, ids), stack)
    for b in range(3):
        assert_same(batched[b : b + 1], _steps(predictor, as_engine(engine, ids[b : b + 1]), stack), f"row {b}")


# ----------------------------------------------------------------------------- parameters are used in place
def test_numpy_predictor_uses_parameters_updated_in_place(rng):
    """A dynamic-evaluation caller updates the arrays between steps: outputs computed afterwards
    (here the head, then everything after a reset) use the new values; nothing was copied."""
    config = CONFIGS["gated-2222-pairs-1block"]
    params = random_params(config, rng)
    ids = rng.integers(0, config.vocab_size, (2, 20))
    predictor = NumpyIncrementalLM(params, config)
    predictor.reset(2)
    before = predictor.feed(ids)
    params["output.bias"] += 1.0  # in place: every logit moves by 1
    predictor.reset(2)
    assert_same(predictor.feed(ids), before + 1.0)
    for name in params:
        params[name] *= 1.1
    predictor.reset(2)
    assert_same(predictor.feed(ids), numpy_window_logits(params, config, ids)[:, -1])


def test_torch_predictor_uses_parameters_updated_in_place(rng):
    config = CONFIGS["gated-2222-pairs-1block"]
    params = random_params(config, rng)
    ids = rng.integers(0, config.vocab_size, (2, 20))
    model = torch_model(config, params)
    predictor = IncrementalLM(model)
    predictor.reset(2)
    predictor.feed(torch.from_numpy(ids))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.1)
    predictor.reset(2)
    scaled = {k: 1.1 * v for k, v in params.items()}
    assert_same(predictor.feed(torch.from_numpy(ids)), numpy_window_logits(scaled, config, ids)[:, -1])


def test_the_caller_reusing_its_ids_buffer_changes_no_pair(rng):
    """The pair of the next id reads the previous one: the predictor keeps its own copy."""
    config = CONFIGS["gated-28-pairs"]
    params = random_params(config, rng)
    ids = rng.integers(0, config.vocab_size, (1, 12))
    expected = numpy_window_logits(params, config, ids)[:, -1]
    for engine in ENGINES:
        predictor = ENGINES[engine](config, params)
        predictor.reset(1)
        buffer = as_engine(engine, np.zeros(1, dtype=np.int64))
        for t in range(ids.shape[1]):
            buffer[0] = int(ids[0, t])  # one buffer, overwritten in place for every id
            logits = predictor.step(buffer)
        assert_same(logits, expected, engine)


# ----------------------------------------------------------------------------- bad input -> ValueError on both sides
V7 = CONFIGS["relu-context4-22-pairs"]  # V = 7

BAD_INPUT = [
    ("step", 2, np.array([[1, 2]]), r"IncrementalLM\.step: ids must be 1-D, got shape \(1, 2\)"),
    ("step", 2, np.array(3), r"IncrementalLM\.step: ids must be 1-D, got shape \(\)"),
    (
        "step",
        2,
        np.array([1, 2, 3]),
        r"ids must have shape \(2,\), one id per row of reset\(batch=2\), got shape \(3,\)",
    ),
    ("step", 2, np.array([0, 7]), r"IncrementalLM\.step: ids must lie in \[0, 7\), got values in \[0, 7\]"),
    ("step", 2, np.array([-1, 3]), r"ids must lie in \[0, 7\), got values in \[-1, 3\]"),
    ("step", 2, np.array([1.0, 2.0]), r"IncrementalLM\.step: ids must hold integers, got dtype .*float64"),
    ("step", 2, np.array([True, False]), r"ids must hold integers, got dtype .*bool"),
    ("step", None, np.array([1]), r"IncrementalLM\.step: no stream yet; call reset\(batch\) first"),
    ("feed", None, np.array([[1]]), r"IncrementalLM\.feed: no stream yet; call reset\(batch\) first"),
    ("feed", 2, np.array([1, 2]), r"IncrementalLM\.feed: ids must be 2-D, got shape \(2,\)"),
    ("feed", 2, np.zeros((2, 0), dtype=np.int64), r"ids must have shape \(2, T\) with T >= 1, .* got shape \(2, 0\)"),
    ("feed", 2, np.zeros((1, 3), dtype=np.int64), r"ids must have shape \(2, T\) with T >= 1, .* got shape \(1, 3\)"),
    ("feed", 1, np.array([[1, 9, 2]]), r"IncrementalLM\.feed: ids must lie in \[0, 7\), got values in \[1, 9\]"),
    ("feed", 1, np.array([[0.5]]), r"IncrementalLM\.feed: ids must hold integers"),
    ("step", 0, np.array([1]), r"IncrementalLM\.reset: batch must be a positive integer, got 0"),
    ("step", 1.5, np.array([1]), r"IncrementalLM\.reset: batch must be a positive integer, got 1\.5"),
]


@pytest.mark.parametrize("method, batch, ids, message", BAD_INPUT)
def test_bad_input_is_refused_alike(method, batch, ids, message, rng):
    case = Case(random_params(V7, rng), {"config": V7, "ids": ids, "method": method, "batch": batch})
    assert_refused_alike(INCREMENTAL, case, message)


def test_the_torch_predictor_refuses_training_mode_and_another_device(rng):
    model = torch_model(V7, random_params(V7, rng))
    predictor = IncrementalLM(model)
    predictor.reset(1)
    with pytest.raises(ValueError, match=r"IncrementalLM\.step: ids must be on the model's device cpu, got meta"):
        predictor.step(torch.zeros(1, dtype=torch.long, device="meta"))
    model.train()
    for call in (lambda: predictor.reset(1), lambda: predictor.step(torch.tensor([1]))):
        with pytest.raises(ValueError, match=r"the model is in training mode, .* call model\.eval\(\)$"):
            call()
    model.eval()
    assert predictor.step(torch.tensor([1])).shape == (1, 7)


def test_logits_come_in_the_parameters_dtype(rng):
    params = {k: v.astype(np.float32) for k, v in random_params(V7, rng).items()}
    case = stream_case(V7, params, rng.integers(0, 7, (2, 5)))
    assert run_numpy(INCREMENTAL, case, np.float32).outputs["logits"].dtype == np.float32
    predictor = IncrementalLM(torch_model(V7, params).double())
    predictor.reset(2)
    assert predictor.step(torch.tensor([1, 2])).dtype == torch.float64
