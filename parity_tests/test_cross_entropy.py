"""Softmax, log-softmax (with temperature) and softmax cross-entropy: numpy_ref against torch_lm,
with F.softmax / F.log_softmax / F.cross_entropy as the third witness, central differences for
every NumPy backward, torch.autograd.gradcheck for every torch function, golden values, extreme
logits and the errors for bad input.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from numpy_ref import cross_entropy as ref
from numpy_ref.gradcheck import numerical_gradient, numerical_gradient_array, rel_error
from parity_tests.conftest import assert_close, to_numpy, to_torch
from torch_lm import cross_entropy as tlm

TOLERANCE = 1e-7  # docs/DESIGN.md §2: rel_error bound for central differences in float64
# `dtypes` is an immutable (numpy dtype, torch dtype) pair, safe to share across examples.
SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# name -> (numpy forward, numpy backward, torch function, torch built-in witness)
ACTIVATIONS = {
    "softmax": (ref.softmax_forward, ref.softmax_backward, tlm.softmax, F.softmax),
    "log_softmax": (ref.log_softmax_forward, ref.log_softmax_backward, tlm.log_softmax, F.log_softmax),
}

shapes = st.lists(st.integers(1, 6), min_size=1, max_size=3).map(tuple)  # (..., V), batch 1 and V = 1 included
scales = st.sampled_from([1e-3, 1.0, 30.0, 1000.0])  # up to logits of +-1000
temperatures = st.sampled_from([1.0, 0.05, 0.5, 3.7])
seeds = st.integers(0, 2**32 - 1)


def torch_forward_backward(fn, x_np, dout_np, torch_dtype, *args):
    """Run a torch function on a copy of x, backpropagate dout; return (output, dx) as tensors."""
    x = to_torch(x_np, torch_dtype, requires_grad=True)
    out = fn(x, *args)
    out.backward(to_torch(dout_np, torch_dtype))
    return out, x.grad


def confident_logits(vocab: int, target: int, p: float) -> np.ndarray:
    """Logits (1, vocab) giving probability exactly ``p`` to ``target`` and equal shares to the rest.

    With every other logit 0, p = e^a / (e^a + vocab - 1), so a = ln(p (vocab - 1) / (1 - p)).
    """
    logits = np.zeros((1, vocab))
    logits[0, target] = math.log(p * (vocab - 1) / (1 - p))
    return logits


# ---------------------------------------------------------------- parity: numpy vs torch vs F


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@SETTINGS
@given(shape=shapes, scale=scales, temperature=temperatures, seed=seeds)
def test_softmax_and_log_softmax_match_torch_and_builtin(dtypes, name, shape, scale, temperature, seed):
    np_dtype, torch_dtype = dtypes
    forward, backward, torch_fn, builtin = ACTIVATIONS[name]
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * scale).astype(np_dtype)
    dout = rng.standard_normal(shape).astype(np_dtype)

    out, cache = forward(x, temperature)
    dx = backward(dout, cache)
    torch_out, torch_dx = torch_forward_backward(torch_fn, x, dout, torch_dtype, temperature)

    assert out.dtype == np_dtype and dx.dtype == np_dtype  # no silent upcast
    assert_close(out, torch_out)
    assert_close(dx, torch_dx)
    witness_out, witness_dx = torch_forward_backward(lambda t: builtin(t / temperature, dim=-1), x, dout, torch_dtype)
    assert_close(torch_out, witness_out)
    assert_close(torch_dx, witness_dx)


@SETTINGS
@given(n=st.integers(1, 7), vocab=st.integers(1, 11), scale=scales, seed=seeds)
def test_cross_entropy_matches_torch_and_builtin(dtypes, n, vocab, scale, seed):
    np_dtype, torch_dtype = dtypes
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal((n, vocab)) * scale).astype(np_dtype)
    targets = rng.integers(0, vocab, n)

    loss, dlogits = ref.cross_entropy(logits, targets)
    torch_logits = to_torch(logits, torch_dtype, requires_grad=True)
    torch_loss = tlm.cross_entropy(torch_logits, to_torch(targets))
    torch_loss.backward()
    witness_logits = to_torch(logits, torch_dtype, requires_grad=True)
    witness_loss = F.cross_entropy(witness_logits, to_torch(targets))
    witness_loss.backward()

    assert loss.shape == () and loss.dtype == np_dtype and dlogits.dtype == np_dtype
    assert_close(loss, torch_loss)
    assert_close(dlogits, torch_logits.grad)
    assert_close(torch_loss, witness_loss)
    assert_close(torch_logits.grad, witness_logits.grad)


def test_cross_entropy_module_is_the_function(rng):
    logits = to_torch(rng.standard_normal((4, 6)))
    targets = to_torch(rng.integers(0, 6, 4))
    assert_close(tlm.CrossEntropyLoss()(logits, targets), tlm.cross_entropy(logits, targets), rtol=0, atol=0)


# ---------------------------------------------------------------- gradients: central differences, gradcheck

GRAD_SHAPES = [(1, 1), (1, 5), (3, 7), (2, 3, 4)]


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@pytest.mark.parametrize("shape", GRAD_SHAPES, ids=lambda shape: "x".join(map(str, shape)))
@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.5])
def test_numpy_activation_backward_matches_central_differences(rng, name, shape, temperature):
    forward, backward, _, _ = ACTIVATIONS[name]
    x = rng.standard_normal(shape)
    dout = rng.standard_normal(shape)
    _, cache = forward(x, temperature)
    numeric = numerical_gradient_array(lambda x: forward(x, temperature)[0], x, dout)
    assert rel_error(backward(dout, cache), numeric) <= TOLERANCE


@pytest.mark.parametrize("n, vocab", [(1, 1), (1, 4), (5, 3), (6, 9)])
def test_numpy_cross_entropy_gradient_matches_central_differences(rng, n, vocab):
    logits = rng.standard_normal((n, vocab))
    targets = rng.integers(0, vocab, n)
    _, dlogits = ref.cross_entropy(logits, targets)
    numeric = numerical_gradient(lambda z: float(ref.cross_entropy(z, targets)[0]), logits)
    assert rel_error(dlogits, numeric) <= TOLERANCE


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.5])
def test_torch_activations_pass_gradcheck(rng, name, temperature):
    torch_fn = ACTIVATIONS[name][2]
    x = to_torch(rng.standard_normal((3, 5)), requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: torch_fn(x, temperature), (x,))


def test_torch_cross_entropy_and_module_pass_gradcheck(rng):
    logits = to_torch(rng.standard_normal((4, 6)), requires_grad=True)
    targets = to_torch(np.array([0, 5, 2, 5]))
    assert torch.autograd.gradcheck(lambda z: tlm.cross_entropy(z, targets), (logits,))
    assert torch.autograd.gradcheck(lambda z: tlm.CrossEntropyLoss()(z, targets), (logits,))


# ---------------------------------------------------------------- edge cases

EXTREME = np.array([[1000.0, -1000.0, 0.0], [-1000.0, -1000.0, -1000.0], [1000.0, 1000.0, -1000.0]])


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_logits_of_plus_minus_1000_stay_finite_and_correct(dtypes, name):
    np_dtype, torch_dtype = dtypes
    forward, backward, torch_fn, builtin = ACTIVATIONS[name]
    x = EXTREME.astype(np_dtype)
    dout = np.ones_like(x)
    out, cache = forward(x)
    dx = backward(dout, cache)
    torch_out, torch_dx = torch_forward_backward(torch_fn, x, dout, torch_dtype)
    witness_out, witness_dx = torch_forward_backward(lambda t: builtin(t, dim=-1), x, dout, torch_dtype)

    assert np.isfinite(out).all() and np.isfinite(dx).all()
    assert_close(out, witness_out)
    assert_close(dx, witness_dx)
    assert_close(torch_out, witness_out)
    assert_close(torch_dx, witness_dx)


def test_log_softmax_of_extreme_logits_is_exact():
    # exp(1000) overflows, so a naive log(softmax) would give -inf; log-sum-exp gives the exact
    # log-probabilities (the other terms are below e^-1000 relative).
    ln2, ln3 = math.log(2), math.log(3)
    expected = np.array([[0.0, -2000.0, -1000.0], [-ln3, -ln3, -ln3], [-ln2, -ln2, -2000.0 - ln2]])
    np.testing.assert_allclose(ref.log_softmax(EXTREME), expected, rtol=1e-15, atol=0)
    np.testing.assert_allclose(to_numpy(tlm.log_softmax(to_torch(EXTREME))), expected, rtol=1e-15, atol=0)


def test_cross_entropy_with_extreme_logits_matches_builtin(dtypes):
    np_dtype, torch_dtype = dtypes
    logits = EXTREME.astype(np_dtype)
    targets = np.array([1, 0, 2])  # -ln p = 2000, ln 3, 2000 + ln 2
    loss, dlogits = ref.cross_entropy(logits, targets)
    torch_logits = to_torch(logits, torch_dtype, requires_grad=True)
    torch_loss = tlm.cross_entropy(torch_logits, to_torch(targets))
    torch_loss.backward()
    assert np.isfinite(loss) and np.isfinite(dlogits).all()
    assert_close(loss, np.asarray((4000 + math.log(3) + math.log(2)) / 3, dtype=np_dtype))
    assert_close(loss, F.cross_entropy(to_torch(logits, torch_dtype), to_torch(targets)))
    assert_close(torch_loss, loss)
    assert_close(torch_logits.grad, dlogits)


@pytest.mark.parametrize("vocab", [2, 9])
def test_targets_at_first_and_last_class(dtypes, vocab, rng):
    np_dtype, torch_dtype = dtypes
    logits = rng.standard_normal((4, vocab)).astype(np_dtype)
    targets = np.array([0, vocab - 1, vocab - 1, 0])
    loss, dlogits = ref.cross_entropy(logits, targets)
    witness_logits = to_torch(logits, torch_dtype, requires_grad=True)
    witness_loss = F.cross_entropy(witness_logits, to_torch(targets))
    witness_loss.backward()
    assert_close(loss, witness_loss)
    assert_close(dlogits, witness_logits.grad)
    assert_close(tlm.cross_entropy(to_torch(logits, torch_dtype), to_torch(targets)), witness_loss)


def test_temperature_divides_the_logits(rng):
    x = rng.standard_normal((3, 5))
    for temperature in (0.2, 1.0, 4.0):
        assert_close(ref.softmax(x, temperature), ref.softmax(x / temperature))
        assert_close(tlm.softmax(to_torch(x), temperature), ref.softmax(x / temperature))


def test_temperature_sharpens_and_flattens():
    x = np.array([1.0, 2.0, 3.0])
    assert_close(ref.softmax(x, 0.01), np.array([0.0, 0.0, 1.0]))  # T -> 0: argmax
    assert_close(ref.softmax(x, 1e9), np.full(3, 1 / 3))  # T -> inf: uniform
    assert_close(tlm.softmax(to_torch(x), 0.01), np.array([0.0, 0.0, 1.0]))
    assert_close(tlm.softmax(to_torch(x), 1e9), np.full(3, 1 / 3))


def test_temperature_scales_the_gradient_by_one_over_t(rng):
    # d softmax(x / T) / dx = J(x / T) / T: evaluated at x = T * y, the gradient is the T = 1
    # gradient at y divided by T.
    y, dout, temperature = rng.standard_normal((2, 4)), rng.standard_normal((2, 4)), 4.0
    for forward, backward, _, _ in ACTIVATIONS.values():
        dx_t1 = backward(dout, forward(y)[1])
        dx_t = backward(dout, forward(temperature * y, temperature)[1])
        assert_close(dx_t, dx_t1 / temperature)


# ---------------------------------------------------------------- golden values


def test_golden_cross_entropy_of_2_1_0_with_target_0():
    logits, targets = np.array([[2.0, 1.0, 0.0]]), np.array([0])
    exact = -2.0 + math.log(math.exp(2.0) + math.exp(1.0) + 1.0)  # -z_t + log sum exp z
    loss, _ = ref.cross_entropy(logits, targets)
    torch_loss = tlm.cross_entropy(to_torch(logits), to_torch(targets))
    assert round(float(loss), 4) == 0.4076
    assert float(loss) == pytest.approx(exact, rel=1e-15)
    assert float(torch_loss) == pytest.approx(exact, rel=1e-15)


@pytest.mark.parametrize("p, expected", [(0.5, math.log(2)), (1e-4, 9.2103)])
def test_golden_cross_entropy_is_minus_log_p_with_10000_word_vocabulary(p, expected):
    vocab, target = 10_000, 1234
    logits, targets = confident_logits(vocab, target, p), np.array([target])
    assert ref.softmax(logits)[0, target] == pytest.approx(p, rel=1e-12)
    loss, _ = ref.cross_entropy(logits, targets)
    torch_loss = tlm.cross_entropy(to_torch(logits), to_torch(targets))
    assert float(loss) == pytest.approx(-math.log(p), rel=1e-12)
    assert float(loss) == pytest.approx(expected, abs=1e-4)
    assert float(torch_loss) == pytest.approx(-math.log(p), rel=1e-12)


def test_confident_correct_prediction_approaches_zero_loss():
    vocab, target = 10_000, 7
    losses = [
        float(ref.cross_entropy(confident_logits(vocab, target, p), np.array([target]))[0])
        for p in (0.9, 0.999, 1 - 1e-9)
    ]
    assert losses == sorted(losses, reverse=True)
    assert losses[-1] == pytest.approx(1e-9, rel=1e-5)  # -ln(1 - e) ~ e
    one_hot_ish = np.full((1, 5), -1000.0)
    one_hot_ish[0, 2] = 1000.0
    assert float(ref.cross_entropy(one_hot_ish, np.array([2]))[0]) == 0.0
    assert float(tlm.cross_entropy(to_torch(one_hot_ish), to_torch(np.array([2])))) == 0.0


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 5), vocab=st.integers(1, 8), scale=scales, seed=seeds)
def test_cross_entropy_is_never_negative(n, vocab, scale, seed):
    rng = np.random.default_rng(seed)
    logits, targets = rng.standard_normal((n, vocab)) * scale, rng.integers(0, vocab, n)
    assert float(ref.cross_entropy(logits, targets)[0]) >= 0.0
    assert float(tlm.cross_entropy(to_torch(logits), to_torch(targets))) >= 0.0


@pytest.mark.parametrize("vocab", [1, 2, 7])
def test_softmax_of_equal_logits_is_uniform(vocab):
    x = np.full((2, vocab), 3.25)
    assert_close(ref.softmax(x), np.full((2, vocab), 1 / vocab))
    assert_close(tlm.softmax(to_torch(x)), np.full((2, vocab), 1 / vocab))


def test_golden_softmax_of_10_0_0():
    x = np.array([10.0, 0.0, 0.0])
    small = 1 / (math.exp(10.0) + 2)  # e^0 / (e^10 + 2 e^0)
    exact = np.array([1 - 2 * small, small, small])
    np.testing.assert_allclose(ref.softmax(x), [0.99991, 4.54e-5, 4.54e-5], rtol=1e-3)
    np.testing.assert_allclose(ref.softmax(x), exact, rtol=1e-14)
    np.testing.assert_allclose(to_numpy(tlm.softmax(to_torch(x))), exact, rtol=1e-14)


# ---------------------------------------------------------------- bad input -> ValueError on both sides

X = np.zeros((2, 3))
TARGETS = np.array([0, 2])

BAD_SOFTMAX_INPUT = [
    (np.float64(1.0), {}, r"x must have at least one axis and a non-empty last axis, got shape \(\)"),
    (np.zeros((2, 0)), {}, r"x must have at least one axis .* got shape \(2, 0\)"),
    (np.zeros((2, 3), dtype=np.int64), {}, r"x must be a floating-point array, got dtype"),
    (X, {"temperature": 0.0}, r"temperature must be a finite number > 0, got 0.0"),
    (X, {"temperature": -1.5}, r"temperature must be a finite number > 0, got -1.5"),
    (X, {"temperature": float("inf")}, r"temperature must be a finite number > 0, got inf"),
]


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@pytest.mark.parametrize("x, kwargs, message", BAD_SOFTMAX_INPUT)
def test_bad_softmax_input_raises_on_both_sides(name, x, kwargs, message):
    forward, _, torch_fn, _ = ACTIVATIONS[name]
    with pytest.raises(ValueError, match=message):
        forward(x, **kwargs)
    with pytest.raises(ValueError, match=message):
        torch_fn(torch.from_numpy(np.asarray(x)), **kwargs)


BAD_CROSS_ENTROPY_INPUT = [
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
    with pytest.raises(ValueError, match=message):
        ref.cross_entropy(logits, targets)
    with pytest.raises(ValueError, match=message):
        tlm.cross_entropy(torch.from_numpy(logits), torch.from_numpy(targets))


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_numpy_backward_rejects_upstream_gradient_of_wrong_shape(name):
    forward, backward, _, _ = ACTIVATIONS[name]
    _, cache = forward(X)
    with pytest.raises(ValueError, match=r"has shape \(3, 2\) but the .* output has shape \(2, 3\)"):
        backward(np.zeros((3, 2)), cache)
