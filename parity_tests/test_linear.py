"""Affine layer: numpy_ref.linear vs torch_lm.linear.Linear vs F.linear, outputs and gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from numpy_ref.linear import linear_backward, linear_forward
from torch_lm.linear import Linear
from torch_lm.parity import (
    Case,
    assert_central_differences,
    assert_gradcheck,
    assert_parity,
    assert_refused_alike,
    assert_same,
)
from torch_lm.parity.components import LINEAR

# `dtypes` is a constant pair per test, so reusing it across hypothesis examples is safe.
FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def make_case(seed: int, lead: tuple[int, ...], d_in: int, d_out: int, bias: bool) -> Case:
    """Random x (*lead, d_in), weight (d_out, d_in) and bias (d_out,) unless ``bias`` is False."""
    rng = np.random.default_rng(seed)
    inputs = {"x": rng.standard_normal(lead + (d_in,)), "weight": rng.standard_normal((d_out, d_in))}
    if bias:
        inputs["bias"] = rng.standard_normal(d_out)
    return Case(inputs, seed=seed, label=f"lead {lead}, {d_in} -> {d_out}, bias {bias}")


# --- golden numbers from the exercises --------------------------------------------------------


def test_golden_forward_z_is_1_1_and_minus_1_3():
    # The exercise's W = [[1, 0], [0.5, -1]], x = [1, 2], b = [0.1, 0.2]:
    # W x = [1, 0.5 - 2] = [1, -1.5];  + b = [1.1, -1.3]
    case = Case(
        {"x": np.array([1.0, 2.0]), "weight": np.array([[1.0, 0.0], [0.5, -1.0]]), "bias": np.array([0.1, 0.2])}
    )
    run = assert_parity(LINEAR, case)
    assert_same(run.outputs["out"], np.array([1.1, -1.3]))


def test_golden_backward_dw_is_outer_of_dz_and_x():
    # The exercise's dZ = [2, -1], x = [3, 4]: dW = outer(dZ, x) = [[6, 8], [-3, -4]], db = dZ,
    # and with W = [[0.5, 0.3], [-0.2, 0.4]], dx = W^T dZ = [1.0 + 0.2, 0.6 - 0.4]
    x, w, dz = np.array([3.0, 4.0]), np.array([[0.5, 0.3], [-0.2, 0.4]]), np.array([2.0, -1.0])
    case = Case({"x": x, "weight": w, "bias": np.zeros(2)}, upstream={"out": dz})
    grads = assert_parity(LINEAR, case).grads
    np.testing.assert_array_equal(grads["weight"], [[6.0, 8.0], [-3.0, -4.0]])
    np.testing.assert_array_equal(grads["bias"], [2.0, -1.0])
    assert_same(grads["x"], np.array([1.2, 0.2]))


# --- parity: numpy vs torch_lm vs F.linear ------------------------------------------------------

shapes = dict(
    lead=st.lists(st.integers(1, 4), max_size=3).map(tuple),
    d_in=st.integers(1, 9),
    d_out=st.integers(1, 9),
    bias=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)


@FAST
@given(**shapes)
def test_numpy_matches_module_and_witness(dtypes, lead, d_in, d_out, bias, seed):
    assert_parity(LINEAR, make_case(seed, lead, d_in, d_out, bias), dtypes)


def test_bias_false_has_no_bias_gradient():
    case = make_case(0, (3,), 4, 2, bias=False)
    _, cache = linear_forward(case.inputs["x"], case.inputs["weight"])
    assert linear_backward(np.ones((3, 2)), cache)[2] is None
    assert [name for name, _ in Linear(4, 2, bias=False).named_parameters()] == ["weight"]
    assert sorted(assert_parity(LINEAR, case).grads) == ["weight", "x"]


# --- gradients against central differences and torch.autograd.gradcheck ----------------------

CASES = [((), 1, 1), ((1,), 3, 2), ((5,), 4, 3), ((2, 3), 5, 7), ((2, 1, 3), 3, 1)]  # (lead, d_in, d_out)


@pytest.mark.parametrize("lead, d_in, d_out", CASES)
@pytest.mark.parametrize("bias", [True, False])
def test_backward_matches_central_differences(lead, d_in, d_out, bias):
    assert_central_differences(LINEAR, make_case(7, lead, d_in, d_out, bias))


@pytest.mark.parametrize("lead, d_in, d_out", CASES)
@pytest.mark.parametrize("bias", [True, False])
def test_module_passes_autograd_gradcheck(lead, d_in, d_out, bias):
    assert_gradcheck(LINEAR, make_case(3, lead, d_in, d_out, bias))


# --- initialisation by reset_parameters ---------------------------------------------------------


@pytest.mark.parametrize(
    "init, expected_std",
    [("xavier_normal", math.sqrt(2 / (300 + 200))), ("he_normal", math.sqrt(2 / 300))],
    ids=["xavier", "he"],
)
def test_reset_parameters_draws_the_named_init_and_zero_bias(init, expected_std):
    layer = Linear(300, 200, init=init)
    layer.reset_parameters(torch.Generator().manual_seed(0))
    n = layer.weight.numel()
    # Standard error of the sample std of n normal draws: std / sqrt(2 (n - 1)).
    assert abs(layer.weight.std().item() - expected_std) < 5 * expected_std / math.sqrt(2 * (n - 1))
    assert torch.count_nonzero(layer.bias) == 0


def test_reset_parameters_is_reproducible_with_a_generator():
    a, b = Linear(5, 4), Linear(5, 4)
    a.reset_parameters(torch.Generator().manual_seed(42))
    b.reset_parameters(torch.Generator().manual_seed(42))
    assert torch.equal(a.weight, b.weight)
    b.reset_parameters(torch.Generator().manual_seed(43))
    assert not torch.equal(a.weight, b.weight)


def test_default_init_is_xavier_normal():
    assert Linear(3, 2).init == "xavier_normal"


# --- bad input: the same ValueError from both engines --------------------------------------------


REFUSED_ALIKE = {  # label: (inputs, NumPy message, torch message)
    "in_features": (
        {"x": np.ones((3, 4)), "weight": np.ones((5, 6))},
        r"linear_forward: x has shape \(3, 4\) and w has shape \(5, 6\)",
        r"Linear: x has shape \(3, 4\) and weight has shape \(5, 6\)",
    ),
    "scalar x": (
        {"x": np.array(1.0), "weight": np.ones((2, 1))},
        r"linear_forward: x must have at least one axis.*got shape \(\)",
        r"Linear: x must have at least one axis.*got shape \(\)",
    ),
    "integer x": (
        {"x": np.ones((2, 3), dtype=np.int64), "weight": np.ones((4, 3))},
        "linear_forward: x must be a floating-point array, got dtype int64",
        "Linear: x must be a floating-point array, got dtype torch.int64",
    ),
    "mixed float dtypes": (
        {"x": np.ones((2, 3), dtype=np.float32), "weight": np.ones((4, 3))},
        "linear_forward: x has dtype float32 but w has dtype float64",
        "Linear: x has dtype torch.float32 but weight has dtype torch.float64",
    ),
}


@pytest.mark.parametrize("label", REFUSED_ALIKE)
def test_bad_input_is_refused_alike(label):
    inputs, numpy_message, torch_message = REFUSED_ALIKE[label]
    assert_refused_alike(LINEAR, Case(inputs), numpy_message, torch_message)


class TestBadInput:
    def test_weight_not_2d(self):
        with pytest.raises(ValueError, match=r"linear_forward: w must be 2-D, got shape \(4,\)"):
            linear_forward(np.ones((3, 4)), np.ones(4))

    def test_bias_shape(self):
        with pytest.raises(ValueError, match=r"linear_forward: b has shape \(3,\) and w has shape \(2, 4\)"):
            linear_forward(np.ones((5, 4)), np.ones((2, 4)), np.ones(3))
        with pytest.raises(ValueError, match=r"linear_forward: b must be 1-D, got shape \(1, 2\)"):
            linear_forward(np.ones((5, 4)), np.ones((2, 4)), np.ones((1, 2)))

    def test_dout_shape_in_backward(self):
        _, cache = linear_forward(np.ones((2, 3)), np.ones((4, 3)))
        with pytest.raises(ValueError, match=r"linear_backward: dout has shape \(2, 5\) but out has shape \(2, 4\)"):
            linear_backward(np.ones((2, 5)), cache)

    def test_dout_dtype_in_backward(self):
        _, cache = linear_forward(np.ones((2, 3), dtype=np.float32), np.ones((4, 3), dtype=np.float32))
        with pytest.raises(ValueError, match="linear_backward: dout has dtype float64 but x has dtype float32"):
            linear_backward(np.ones((2, 4)), cache)

    @pytest.mark.parametrize("in_features, out_features, name", [(0, 3, "in_features"), (3, -1, "out_features")])
    def test_non_positive_sizes(self, in_features, out_features, name):
        with pytest.raises(ValueError, match=f"Linear: {name} must be a positive integer"):
            Linear(in_features, out_features)

    def test_unknown_init(self):
        with pytest.raises(ValueError, match="Linear: init must be one of .* got 'kaiming'"):
            Linear(3, 4, init="kaiming")
