"""Softmax, log-softmax (with temperature) and softmax cross-entropy: numpy_ref against torch_lm,
with F.softmax / F.log_softmax / F.cross_entropy as the third witness, central differences for
every NumPy backward, torch.autograd.gradcheck for every torch function, golden values, extreme
logits and the errors for bad input.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from torch_lm import cross_entropy as tlm
from torch_lm.parity import (
    DTYPE_PAIRS,
    Case,
    Component,
    Run,
    assert_central_differences,
    assert_gradcheck,
    assert_parity,
    assert_refused_alike,
    assert_same,
    run_numpy,
    run_torch,
    to_torch,
)
from torch_lm.parity.components import CROSS_ENTROPY, LOG_SOFTMAX, SOFTMAX

TOLERANCE = 1e-7  # docs/DESIGN.md §2: rel_error bound for central differences in float64
# `dtypes` is an immutable (numpy dtype, torch dtype) pair, safe to share across examples.
SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

ACTIVATIONS = [LOG_SOFTMAX, SOFTMAX]
activations = pytest.mark.parametrize("component", ACTIVATIONS, ids=[c.name for c in ACTIVATIONS])

shapes = st.lists(st.integers(1, 6), min_size=1, max_size=3).map(tuple)  # (..., V), batch 1 and V = 1 included
scales = st.sampled_from([1e-3, 1.0, 30.0, 1000.0])  # up to logits of +-1000
temperatures = st.sampled_from([1.0, 0.05, 0.5, 3.7])
seeds = st.integers(0, 2**32 - 1)


def engines(component: Component, case: Case, dtypes=DTYPE_PAIRS[0]) -> dict[str, Run]:
    """The NumPy and the torch run of one case, by engine: a golden value must hold for each."""
    np_dtype, torch_dtype = dtypes
    return {"numpy": run_numpy(component, case, np_dtype), "torch": run_torch(component, case, torch_dtype)}


def assert_numpy_matches_witness(component: Component, case: Case, dtypes) -> None:
    """NumPy's outputs and gradients against torch's built-in directly, not only by way of torch_lm:
    at extreme logits the built-in is the standard both are held to."""
    np_dtype, torch_dtype = dtypes
    hand_written = run_numpy(component, case, np_dtype)
    builtin = run_torch(component, case, torch_dtype, forward=component.witness)
    assert_same(hand_written.outputs, builtin.outputs, "numpy vs witness: output")
    assert_same(hand_written.grads, builtin.grads, "numpy vs witness: grad")


def confident_logits(vocab: int, target: int, p: float) -> np.ndarray:
    """Logits (1, vocab) giving probability exactly ``p`` to ``target`` and equal shares to the rest.

    With every other logit 0, p = e^a / (e^a + vocab - 1), so a = ln(p (vocab - 1) / (1 - p)).
    """
    logits = np.zeros((1, vocab))
    logits[0, target] = math.log(p * (vocab - 1) / (1 - p))
    return logits


def loss_case(logits, targets) -> Case:
    return Case({"logits": np.asarray(logits)}, {"targets": np.asarray(targets)})


# ---------------------------------------------------------------- parity: numpy vs torch vs F


@activations
@SETTINGS
@given(shape=shapes, scale=scales, temperature=temperatures, seed=seeds)
def test_softmax_and_log_softmax_match_torch_and_builtin(dtypes, component, shape, scale, temperature, seed):
    rng = np.random.default_rng(seed)
    x, dout = rng.standard_normal(shape) * scale, rng.standard_normal(shape)
    case = Case({"x": x}, {"temperature": temperature}, {"out": dout}, label=f"scale {scale}, T {temperature}")
    assert_parity(component, case, dtypes)


@SETTINGS
@given(n=st.integers(1, 7), vocab=st.integers(1, 11), scale=scales, seed=seeds)
def test_cross_entropy_matches_torch_and_builtin(dtypes, n, vocab, scale, seed):
    rng = np.random.default_rng(seed)
    logits, targets = rng.standard_normal((n, vocab)) * scale, rng.integers(0, vocab, n)
    assert_parity(CROSS_ENTROPY, loss_case(logits, targets), dtypes)


def test_cross_entropy_module_is_the_function(rng):
    logits = to_torch(rng.standard_normal((4, 6)))
    targets = to_torch(rng.integers(0, 6, 4))
    assert_same(tlm.CrossEntropyLoss()(logits, targets), tlm.cross_entropy(logits, targets), rtol=0, atol=0)


# ---------------------------------------------------------------- gradients: central differences, gradcheck

GRAD_SHAPES = [(1, 1), (1, 5), (3, 7), (2, 3, 4)]


@activations
@pytest.mark.parametrize("shape", GRAD_SHAPES, ids=lambda shape: "x".join(map(str, shape)))
@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.5])
def test_numpy_activation_backward_matches_central_differences(rng, component, shape, temperature):
    x, dout = rng.standard_normal(shape), rng.standard_normal(shape)
    assert_central_differences(component, Case({"x": x}, {"temperature": temperature}, {"out": dout}), TOLERANCE)


@pytest.mark.parametrize("n, vocab", [(1, 1), (1, 4), (5, 3), (6, 9)])
def test_numpy_cross_entropy_gradient_matches_central_differences(rng, n, vocab):
    case = loss_case(rng.standard_normal((n, vocab)), rng.integers(0, vocab, n))
    assert_central_differences(CROSS_ENTROPY, case, TOLERANCE)


@activations
@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.5])
def test_torch_activations_pass_gradcheck(rng, component, temperature):
    assert_gradcheck(component, Case({"x": rng.standard_normal((3, 5))}, {"temperature": temperature}))


def test_torch_cross_entropy_and_module_pass_gradcheck(rng):
    case = loss_case(rng.standard_normal((4, 6)), [0, 5, 2, 5])
    assert_gradcheck(CROSS_ENTROPY, case)
    assert_gradcheck(CROSS_ENTROPY, case, lambda t, f: {"loss": tlm.CrossEntropyLoss()(t["logits"], f["targets"])})


# ---------------------------------------------------------------- edge cases

EXTREME = np.array([[1000.0, -1000.0, 0.0], [-1000.0, -1000.0, -1000.0], [1000.0, 1000.0, -1000.0]])


@activations
def test_logits_of_plus_minus_1000_stay_finite_and_correct(dtypes, component):
    case = Case({"x": EXTREME}, upstream={"out": np.ones_like(EXTREME)})
    run = assert_parity(component, case, dtypes)
    assert np.isfinite(run.outputs["out"]).all() and np.isfinite(run.grads["x"]).all()
    assert_numpy_matches_witness(component, case, dtypes)


def test_log_softmax_of_extreme_logits_is_exact():
    # exp(1000) overflows, so a naive log(softmax) would give -inf; log-sum-exp gives the exact
    # log-probabilities (the other terms are below e^-1000 relative).
    ln2, ln3 = math.log(2), math.log(3)
    expected = np.array([[0.0, -2000.0, -1000.0], [-ln3, -ln3, -ln3], [-ln2, -ln2, -2000.0 - ln2]])
    for engine, run in engines(LOG_SOFTMAX, Case({"x": EXTREME})).items():
        assert_same(run.outputs["out"], expected, engine, rtol=1e-15, atol=0)


def test_cross_entropy_with_extreme_logits_matches_builtin(dtypes):
    np_dtype, _ = dtypes
    case = loss_case(EXTREME, [1, 0, 2])  # -ln p = 2000, ln 3, 2000 + ln 2
    run = assert_parity(CROSS_ENTROPY, case, dtypes)
    assert np.isfinite(run.outputs["loss"]) and np.isfinite(run.grads["logits"]).all()
    assert_same(run.outputs["loss"], np.asarray((4000 + math.log(3) + math.log(2)) / 3, dtype=np_dtype))
    assert_numpy_matches_witness(CROSS_ENTROPY, case, dtypes)


@pytest.mark.parametrize("vocab", [2, 9])
def test_targets_at_first_and_last_class(dtypes, vocab, rng):
    case = loss_case(rng.standard_normal((4, vocab)), [0, vocab - 1, vocab - 1, 0])
    assert_parity(CROSS_ENTROPY, case, dtypes)
    assert_numpy_matches_witness(CROSS_ENTROPY, case, dtypes)


def test_temperature_divides_the_logits(rng):
    x = rng.standard_normal((3, 5))
    for temperature in (0.2, 1.0, 4.0):
        expected = run_numpy(SOFTMAX, Case({"x": x / temperature})).outputs["out"]
        for engine, run in engines(SOFTMAX, Case({"x": x}, {"temperature": temperature})).items():
            assert_same(run.outputs["out"], expected, f"{engine} at T = {temperature}")


def test_temperature_sharpens_and_flattens():
    x = np.array([1.0, 2.0, 3.0])
    # T -> 0: argmax;  T -> inf: uniform
    for temperature, expected in [(0.01, np.array([0.0, 0.0, 1.0])), (1e9, np.full(3, 1 / 3))]:
        for engine, run in engines(SOFTMAX, Case({"x": x}, {"temperature": temperature})).items():
            assert_same(run.outputs["out"], expected, f"{engine} at T = {temperature}")


def test_temperature_scales_the_gradient_by_one_over_t(rng):
    # d softmax(x / T) / dx = J(x / T) / T: evaluated at x = T * y, the gradient is the T = 1
    # gradient at y divided by T.
    y, dout, temperature = rng.standard_normal((2, 4)), rng.standard_normal((2, 4)), 4.0
    at_one = Case({"x": y}, upstream={"out": dout})
    at_t = Case({"x": temperature * y}, {"temperature": temperature}, {"out": dout})
    for component in ACTIVATIONS:
        for run in (run_numpy, run_torch):
            dx_t, dx_t1 = run(component, at_t).grads["x"], run(component, at_one).grads["x"]
            assert_same(dx_t, dx_t1 / temperature, f"{component.name} by {run.__name__}: dx")


# ---------------------------------------------------------------- golden values


def test_golden_cross_entropy_of_2_1_0_with_target_0():
    runs = engines(CROSS_ENTROPY, loss_case([[2.0, 1.0, 0.0]], [0]))
    exact = -2.0 + math.log(math.exp(2.0) + math.exp(1.0) + 1.0)  # -z_t + log sum exp z
    assert round(float(runs["numpy"].outputs["loss"]), 4) == 0.4076
    for engine, run in runs.items():
        assert float(run.outputs["loss"]) == pytest.approx(exact, rel=1e-15), engine


@pytest.mark.parametrize("p, expected", [(0.5, math.log(2)), (1e-4, 9.2103)])
def test_golden_cross_entropy_is_minus_log_p_with_10000_word_vocabulary(p, expected):
    vocab, target = 10_000, 1234
    logits = confident_logits(vocab, target, p)
    for engine, run in engines(SOFTMAX, Case({"x": logits})).items():
        assert run.outputs["out"][0, target] == pytest.approx(p, rel=1e-12), engine
    runs = engines(CROSS_ENTROPY, loss_case(logits, [target]))
    for engine, run in runs.items():
        assert float(run.outputs["loss"]) == pytest.approx(-math.log(p), rel=1e-12), engine
    assert float(runs["numpy"].outputs["loss"]) == pytest.approx(expected, abs=1e-4)


def test_confident_correct_prediction_approaches_zero_loss():
    vocab, target = 10_000, 7
    losses = [
        float(run_numpy(CROSS_ENTROPY, loss_case(confident_logits(vocab, target, p), [target])).outputs["loss"])
        for p in (0.9, 0.999, 1 - 1e-9)
    ]
    assert losses == sorted(losses, reverse=True)
    assert losses[-1] == pytest.approx(1e-9, rel=1e-5)  # -ln(1 - e) ~ e
    one_hot_ish = np.full((1, 5), -1000.0)
    one_hot_ish[0, 2] = 1000.0
    for engine, run in engines(CROSS_ENTROPY, loss_case(one_hot_ish, [2])).items():
        assert float(run.outputs["loss"]) == 0.0, engine


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 5), vocab=st.integers(1, 8), scale=scales, seed=seeds)
def test_cross_entropy_is_never_negative(n, vocab, scale, seed):
    rng = np.random.default_rng(seed)
    case = loss_case(rng.standard_normal((n, vocab)) * scale, rng.integers(0, vocab, n))
    for engine, run in engines(CROSS_ENTROPY, case).items():
        assert float(run.outputs["loss"]) >= 0.0, engine


@pytest.mark.parametrize("vocab", [1, 2, 7])
def test_softmax_of_equal_logits_is_uniform(vocab):
    for engine, run in engines(SOFTMAX, Case({"x": np.full((2, vocab), 3.25)})).items():
        assert_same(run.outputs["out"], np.full((2, vocab), 1 / vocab), engine)


def test_golden_softmax_of_10_0_0():
    small = 1 / (math.exp(10.0) + 2)  # e^0 / (e^10 + 2 e^0)
    exact = np.array([1 - 2 * small, small, small])
    runs = engines(SOFTMAX, Case({"x": np.array([10.0, 0.0, 0.0])}))
    assert_same(runs["numpy"].outputs["out"], np.array([0.99991, 4.54e-5, 4.54e-5]), rtol=1e-3, atol=0)
    for engine, run in runs.items():
        assert_same(run.outputs["out"], exact, engine, rtol=1e-14, atol=0)


# ---------------------------------------------------------------- bad input -> ValueError on both sides

X = np.zeros((2, 3))
TARGETS = np.array([0, 2])

BAD_SOFTMAX_INPUT = [  # (x, fixed arguments, message)
    (np.float64(1.0), {}, r"x must have at least one axis and a non-empty last axis, got shape \(\)"),
    (np.zeros((2, 0)), {}, r"x must have at least one axis .* got shape \(2, 0\)"),
    (np.zeros((2, 3), dtype=np.int64), {}, r"x must be a floating-point array, got dtype"),
    (X, {"temperature": 0.0}, r"temperature must be a finite number > 0, got 0.0"),
    (X, {"temperature": -1.5}, r"temperature must be a finite number > 0, got -1.5"),
    (X, {"temperature": float("inf")}, r"temperature must be a finite number > 0, got inf"),
]


@activations
@pytest.mark.parametrize("x, fixed, message", BAD_SOFTMAX_INPUT)
def test_bad_softmax_input_raises_on_both_sides(component, x, fixed, message):
    assert_refused_alike(component, Case({"x": x}, fixed), message)


BAD_CROSS_ENTROPY_INPUT = [  # (logits, targets, message)
    (np.zeros(3), TARGETS, r"logits must be 2-D, got shape \(3,\)"),
    (np.zeros((2, 3, 4)), TARGETS, r"logits must be 2-D, got shape \(2, 3, 4\)"),
    (np.zeros((2, 3), dtype=np.int64), TARGETS, r"logits must be a floating-point array"),
    (
        np.zeros((0, 3)),
        np.zeros(0, dtype=np.int64),
        r"logits must have at least one row and one class, got shape \(0, 3\)",
    ),
    (X, np.array([[0], [2]]), r"targets must be 1-D, got shape \(2, 1\)"),
    (X, np.array([0, 1, 2]), r"targets has shape \(3,\) and logits has shape \(2, 3\)"),
    (X, np.array([0, 3]), r"targets must lie in \[0, 3\), got values in \[0, 3\]"),
    (X, np.array([-1, 2]), r"targets must lie in \[0, 3\), got values in \[-1, 2\]"),
    (X, np.array([0.0, 2.0]), r"targets must hold integers, got dtype"),
    (X, np.array([True, False]), r"targets must hold integers, got dtype"),
]


@pytest.mark.parametrize("logits, targets, message", BAD_CROSS_ENTROPY_INPUT)
def test_bad_cross_entropy_input_raises_on_both_sides(logits, targets, message):
    assert_refused_alike(CROSS_ENTROPY, loss_case(logits, targets), message)


@activations
def test_numpy_backward_rejects_upstream_gradient_of_wrong_shape(component):
    _, cache = component.numpy_forward({"x": X}, {})
    with pytest.raises(ValueError, match=r"has shape \(3, 2\) but the .* output has shape \(2, 3\)"):
        component.numpy_backward({"out": np.zeros((3, 2))}, cache)
