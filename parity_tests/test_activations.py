"""ReLU, tanh and the gated unit tanh(a) * sigmoid(b): numpy_ref.activations vs
torch_lm.activations vs F.relu / torch.tanh / F.glu of a tanh."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from numpy_ref.activations import (
    activation_backward,
    activation_forward,
    gated_tanh_backward,
    gated_tanh_forward,
    relu_derivative,
    tanh_derivative,
    tanh_forward,
)
from torch_lm.activations import GatedTanh, ReLU, Tanh, gated_tanh, make_activation, tanh
from torch_lm.parity import (
    Case,
    assert_central_differences,
    assert_gradcheck,
    assert_parity,
    assert_refused_alike,
    assert_same,
    run_numpy,
    run_torch,
)
from torch_lm.parity.components import GATED, RELU, TANH

# `dtypes` is a constant pair per test, so reusing it across hypothesis examples is safe.
FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
COMPONENTS = {"relu": RELU, "tanh": TANH}
NAMES = sorted(COMPONENTS)


def random_input(seed: int, shape: tuple[int, ...], dtype=np.float64) -> np.ndarray:
    """Standard normal entries, a fifth of them set to exactly 0 (ReLU's kink, tanh's centre)."""
    rng = np.random.default_rng(seed)
    x = np.asarray(2 * rng.standard_normal(shape))
    x[rng.random(shape) < 0.2] = 0.0
    return x.astype(dtype)


def module_forward(name: str):
    """The torch side as the module ``make_activation(name)`` (ReLU(), Tanh()) rather than the function."""
    return lambda inputs, fixed: {"out": make_activation(name)(inputs["x"])}


def every_engine(component, case: Case, *forwards) -> list:
    """The NumPy run, the torch run, and one torch run per further forward (a module, the built-in)."""
    torch_runs = [run_torch(component, case, forward=forward) for forward in (None, *forwards)]
    return [run_numpy(component, case), *torch_runs]


# --- golden numbers ----------------------------------------------------------------------------


def test_golden_relu_and_its_derivative():
    x = np.array([-1.0, 0.0, 2.0])
    np.testing.assert_array_equal(relu_derivative(x), [0.0, 0.0, 1.0])
    # NumPy, relu, ReLU() and F.relu, exactly
    for run in every_engine(RELU, Case({"x": x}, upstream={"out": np.ones(3)}), module_forward("relu"), RELU.witness):
        np.testing.assert_array_equal(run.outputs["out"], [0.0, 0.0, 2.0])
        np.testing.assert_array_equal(run.grads["x"], [0.0, 0.0, 1.0])


def test_relu_derivative_at_exactly_zero_is_zero_on_both_sides_and_in_f_relu():
    case = Case({"x": np.zeros(4)}, upstream={"out": np.array([1.0, -2.0, 3.0, 0.5])})
    for run in every_engine(RELU, case, RELU.witness):
        np.testing.assert_array_equal(run.grads["x"], np.zeros(4))


def test_golden_tanh_and_its_derivative():
    x = np.array([-1.0, 0.0, 2.0])
    # tanh(1) = 0.7615941559557649, tanh(2) = 0.9640275800758169; derivative 1 - tanh².
    expected = np.array([-0.7615941559557649, 0.0, 0.9640275800758169])
    assert_same(tanh_derivative(x), 1 - expected**2)
    for run in every_engine(TANH, Case({"x": x}, upstream={"out": np.ones(3)})):
        assert_same(run.outputs["out"], expected)
        assert_same(run.grads["x"], 1 - expected**2)


# --- parity: numpy vs torch_lm vs torch built-in --------------------------------------------------


@FAST
@pytest.mark.parametrize("name", NAMES)
@given(shape=st.lists(st.integers(1, 6), max_size=3).map(tuple), seed=st.integers(0, 2**32 - 1))
def test_numpy_matches_torch_and_witness(dtypes, name, shape, seed):
    case = Case({"x": random_input(seed, shape)}, upstream={"out": random_input(seed + 1, shape)}, label=f"{shape}")
    assert_parity(COMPONENTS[name], case, dtypes)


@pytest.mark.parametrize("name, derivative", [("relu", relu_derivative), ("tanh", tanh_derivative)])
def test_derivative_is_backward_of_ones(name, derivative):
    x = random_input(0, (4, 5))
    _, cache = activation_forward(name, x)
    np.testing.assert_array_equal(derivative(x), activation_backward(name, np.ones_like(x), cache))


def test_tanh_saturates_without_overflow_and_keeps_its_gradient_exact(dtypes):
    # (e^2x - 1) / (e^2x + 1) would give inf / inf here; the slope at 0 must be 1, not 0.
    x = np.array([-1000.0, -60.0, -1e-10, 0.0, 1e-10, 60.0, 1000.0])
    assert_parity(TANH, Case({"x": x}, upstream={"out": np.ones_like(x)}), dtypes)


def test_nan_propagates_like_the_builtins():
    case = Case({"x": np.array([np.nan])})
    for component in (RELU, TANH):
        for run in every_engine(component, case, component.witness):
            assert np.isnan(run.outputs["out"]).all(), component.name


# --- float32 on the CPU: NumPy's tanh, torch's backward ------------------------------------------


def ulps_from_exact(approx: np.ndarray, x: np.ndarray) -> np.ndarray:
    """|approx - tanh(x)| in float32 units in the last place of the exact value (float64 tanh)."""
    exact = np.tanh(x.astype(np.float64))
    return np.abs(approx.astype(np.float64) - exact) / np.spacing(np.abs(exact).astype(np.float32))


def test_float32_cpu_tanh_is_numpys_bit_for_bit_and_within_2_ulp():
    # Normal inputs over 12 decades (tiny, where tanh(x) ~ x, up to saturation) and both signs.
    rng = np.random.default_rng(0)
    x = (rng.choice([-1.0, 1.0], 200_000) * 10.0 ** rng.uniform(-8, 1.5, 200_000)).astype(np.float32)
    ours = tanh(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(ours, tanh_forward(x)[0])  # the reference's forward, bit for bit
    assert ulps_from_exact(ours, x).max() <= 2.0  # NumPy's SIMD tanh: 1.4 ulp measured
    assert ulps_from_exact(torch.tanh(torch.from_numpy(x)).numpy(), x).max() <= 1.0  # torch's, for scale


def test_float32_cpu_tanh_backward_and_double_backward_are_torch_tanhs():
    x = torch.from_numpy(random_input(3, (6, 7), np.float32)).requires_grad_(True)
    dout = torch.from_numpy(random_input(4, (6, 7), np.float32))
    grads = {}
    for name, fn in (("ours", tanh), ("torch", torch.tanh)):
        (dx,) = torch.autograd.grad(fn(x), x, dout, create_graph=True)
        (ddx,) = torch.autograd.grad(dx.sum(), x)  # d/dx sum(dout * (1 - tanh^2))
        grads[name] = (dx.detach(), ddx)
    for quantity, ours, theirs in zip(("dx", "ddx"), grads["ours"], grads["torch"]):
        assert_same(ours, theirs, quantity)


def test_float32_cpu_tanh_keeps_strides_and_shapes():
    base = torch.randn(4, 6, dtype=torch.float32)
    for x in (base.T, base[:, ::2], torch.tensor(0.5), torch.empty(0, 3)):
        np.testing.assert_array_equal(tanh(x).numpy(), np.tanh(x.numpy()))
        assert tanh(x).shape == x.shape


# --- gradients against central differences and torch.autograd.gradcheck -----------------------

SHAPES = [(1,), (7,), (3, 4), (2, 3, 5)]


def kink_free_input(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Entries with 1e-3 <= |x| <= 3, so x ± h never crosses ReLU's kink at 0."""
    return rng.choice([-1.0, 1.0], shape) * rng.uniform(1e-3, 3, shape)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", NAMES)
def test_backward_matches_central_differences(name, shape, rng):
    case = Case({"x": kink_free_input(shape, rng)}, upstream={"out": rng.standard_normal(shape)}, label=f"{shape}")
    assert_central_differences(COMPONENTS[name], case)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", NAMES)
def test_function_and_module_pass_autograd_gradcheck(name, shape, rng):
    case = Case({"x": kink_free_input(shape, rng)}, label=f"{shape}")
    assert_gradcheck(COMPONENTS[name], case)
    assert_gradcheck(COMPONENTS[name], case, forward=module_forward(name))


# --- dispatch and bad input -------------------------------------------------------------------------


def test_make_activation_builds_the_named_module():
    assert isinstance(make_activation("relu"), ReLU)
    assert isinstance(make_activation("tanh"), Tanh)
    assert isinstance(make_activation("gated"), GatedTanh)


class TestBadInput:
    def test_unknown_activation_name(self):
        with pytest.raises(ValueError, match="activation_forward: name must be one of .*got 'gelu'"):
            activation_forward("gelu", np.ones(2))
        with pytest.raises(ValueError, match="activation_backward: name must be one of .*got 'gelu'"):
            activation_backward("gelu", np.ones(2), np.ones(2))
        with pytest.raises(ValueError, match="make_activation: name must be one of .*got 'gelu'"):
            make_activation("gelu")

    @pytest.mark.parametrize("name", NAMES)
    def test_integer_x_is_refused_alike(self, name):
        assert_refused_alike(
            COMPONENTS[name],
            Case({"x": np.array([1, -2])}),
            f"{name}_forward: x must be a floating-point array, got dtype int64",
            f"{name}: x must be a floating-point array, got dtype torch.int64",
        )

    @pytest.mark.parametrize("name", NAMES)
    def test_dout_shape_in_backward(self, name):
        _, cache = activation_forward(name, np.ones((2, 3)))
        with pytest.raises(ValueError, match=rf"{name}_backward: dout has shape \(3, 2\) but x has shape \(2, 3\)"):
            activation_backward(name, np.ones((3, 2)), cache)


# --- the gated unit: tanh of the first half times sigmoid of the second ----------------------------

# (..., 2H) shapes: batch dimensions of any size, an even last axis (H = 1 included).
even_shapes = st.tuples(st.lists(st.integers(1, 4), max_size=2), st.integers(1, 4)).map(lambda t: (*t[0], 2 * t[1]))


def gated_module(inputs, fixed):
    return {"out": make_activation("gated")(inputs["x"])}


def test_golden_gated_and_its_gradient():
    x = np.array([[1.0, -2.0, 0.0, 3.0]])  # filter (1, -2), gate (0, 3)
    t = np.array([0.7615941559557649, -0.9640275800758169])  # tanh(1), tanh(-2)
    s = np.array([0.5, 0.9525741268224334])  # sigmoid(0), sigmoid(3)
    expected_dx = np.concatenate([s * (1 - t**2), t * s * (1 - s)])[None]  # filter half, gate half
    for run in every_engine(GATED, Case({"x": x}, upstream={"out": np.ones((1, 2))}), gated_module, GATED.witness):
        assert_same(run.outputs["out"], (t * s)[None])
        assert_same(run.grads["x"], expected_dx)


@FAST
@given(shape=even_shapes, seed=st.integers(0, 2**32 - 1))
def test_gated_numpy_matches_torch_and_witness(dtypes, shape, seed):
    out_shape = (*shape[:-1], shape[-1] // 2)
    case = Case({"x": random_input(seed, shape)}, upstream={"out": random_input(seed + 1, out_shape)}, label=f"{shape}")
    assert_parity(GATED, case, dtypes)


def test_gated_dispatch_is_the_gated_pair():
    x = random_input(0, (3, 8))
    out, cache = activation_forward("gated", x)
    assert_same(out, gated_tanh_forward(x)[0])
    dout = random_input(1, (3, 4))
    assert_same(activation_backward("gated", dout, cache), gated_tanh_backward(dout, cache))


def test_gated_saturates_without_overflow_in_either_half(dtypes):
    # A gate of -1000 must be 0 (exp(1000) overflows a naive 1 / (1 + exp(-b))); slopes 0 in the tails.
    big = np.array([-1000.0, -60.0, -1e-10, 0.0, 1e-10, 60.0, 1000.0])
    x = np.concatenate([np.repeat(big, 7), np.tile(big, 7)])  # every filter with every gate
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is the right answer
        run = assert_parity(GATED, Case({"x": x}, upstream={"out": np.ones(49)}), dtypes)
    assert np.isfinite(run.grads["x"]).all()


def test_gated_nan_propagates_like_the_builtins():
    for x in ([np.nan, 0.0], [0.5, np.nan]):
        for run in every_engine(GATED, Case({"x": np.array(x)}), GATED.witness):
            assert np.isnan(run.outputs["out"]).all(), x


@pytest.mark.parametrize("shape", [(2,), (3, 4), (2, 3, 6)])
def test_gated_backward_matches_central_differences(shape, rng):
    out_shape = (*shape[:-1], shape[-1] // 2)
    case = Case({"x": kink_free_input(shape, rng)}, upstream={"out": rng.standard_normal(out_shape)}, label=f"{shape}")
    assert_central_differences(GATED, case)


@pytest.mark.parametrize("shape", [(2,), (3, 4), (2, 3, 6)])
def test_gated_function_and_module_pass_autograd_gradcheck(shape, rng):
    case = Case({"x": kink_free_input(shape, rng)}, label=f"{shape}")
    assert_gradcheck(GATED, case)
    assert_gradcheck(GATED, case, forward=gated_module)


class TestGatedBadInput:
    @pytest.mark.parametrize("shape", [(2, 3), (5,), ()], ids=["odd last axis", "odd 1-D", "0-d"])
    def test_no_even_last_axis_is_refused_alike(self, shape):
        message = (
            rf"x must have a last axis of even size \(filter and gate halves\), got shape {re.escape(str(shape))}$"
        )
        assert_refused_alike(
            GATED, Case({"x": np.ones(shape)}), "gated_tanh_forward: " + message, "gated_tanh: " + message
        )

    def test_integer_x_is_refused_alike(self):
        assert_refused_alike(
            GATED,
            Case({"x": np.array([1, -2])}),
            "gated_tanh_forward: x must be a floating-point array, got dtype int64",
            "gated_tanh: x must be a floating-point array, got dtype torch.int64",
        )

    def test_dout_of_the_input_shape_in_backward(self):
        _, cache = activation_forward("gated", np.ones((2, 4)))
        with pytest.raises(
            ValueError,
            match=r"gated_tanh_backward: dout has shape \(2, 4\) but the forward output has shape \(2, 2\)",
        ):
            activation_backward("gated", np.ones((2, 4)), cache)

    def test_module_is_the_function(self):
        x = torch.from_numpy(random_input(2, (3, 6)))
        assert_same(GatedTanh()(x), gated_tanh(x), rtol=0, atol=0)
