"""Affine layer: numpy_ref.linear vs torch_lm.linear.Linear vs F.linear, outputs and gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close, grads_to_numpy, to_numpy, to_torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.func import functional_call

from numpy_ref.gradcheck import numerical_gradient_array, rel_error
from numpy_ref.linear import linear_backward, linear_forward
from torch_lm.linear import Linear

# `dtypes` is a constant pair per test, so reusing it across hypothesis examples is safe.
FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def make_case(seed: int, lead: tuple[int, ...], d_in: int, d_out: int, bias: bool, dtype=np.float64):
    """Random x (*lead, d_in), w (d_out, d_in), b (d_out,) or None, dout (*lead, d_out)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(lead + (d_in,)).astype(dtype)
    w = rng.standard_normal((d_out, d_in)).astype(dtype)
    b = rng.standard_normal(d_out).astype(dtype) if bias else None
    dout = rng.standard_normal(lead + (d_out,)).astype(dtype)
    return x, w, b, dout


def param_dict(w, b) -> dict:
    """Parameters keyed like ``Linear.state_dict()``."""
    return {"weight": w} if b is None else {"weight": w, "bias": b}


def run_numpy(x, w, b, dout):
    """(out, dx, grads keyed like the module's parameters) from the reference."""
    out, cache = linear_forward(x, w, b)
    dx, dw, db = linear_backward(dout, cache)
    return out, dx, param_dict(dw, db)


def run_module(x, w, b, dout, torch_dtype):
    """The same triple from torch_lm's Linear, loaded with w and b; autograd gives the gradients."""
    layer = Linear(w.shape[1], w.shape[0], bias=b is not None, dtype=torch_dtype)
    layer.load_state_dict({k: to_torch(v) for k, v in param_dict(w, b).items()})
    xt = to_torch(x, requires_grad=True)
    out = layer(xt)
    out.backward(to_torch(dout))
    return out, xt.grad, grads_to_numpy(layer)


def run_witness(x, w, b, dout):
    """The same triple from torch's built-in F.linear."""
    xt = to_torch(x, requires_grad=True)
    params = {k: to_torch(v, requires_grad=True) for k, v in param_dict(w, b).items()}
    out = F.linear(xt, params["weight"], params.get("bias"))
    out.backward(to_torch(dout))
    return out, xt.grad, {k: to_numpy(p.grad) for k, p in params.items()}


def assert_same_results(actual, expected):
    for name, a, e in zip(("out", "dx", "param grads"), actual, expected):
        try:
            assert_close(a, e)
        except AssertionError as error:
            raise AssertionError(f"{name}: {error}") from None


# --- golden numbers from the exercises --------------------------------------------------------


def test_golden_forward_z_is_1_1_and_minus_1_3():
    w = np.array([[0.5, 0.3], [-0.2, 0.4]])
    x = np.array([1.0, 1.0])
    b = np.array([0.3, -1.5])
    # W x = [0.5 + 0.3, -0.2 + 0.4] = [0.8, 0.2];  + b = [1.1, -1.3]
    z, _ = linear_forward(x, w, b)
    assert_close(z, np.array([1.1, -1.3]))
    layer = Linear(2, 2, dtype=torch.float64)
    layer.load_state_dict({"weight": to_torch(w), "bias": to_torch(b)})
    assert_close(layer(to_torch(x)), np.array([1.1, -1.3]))


def test_golden_backward_dw_is_outer_of_dz_and_x():
    w = np.array([[0.5, 0.3], [-0.2, 0.4]])
    x = np.array([3.0, 4.0])
    dz = np.array([2.0, -1.0])
    _, cache = linear_forward(x, w, np.zeros(2))
    dx, dw, db = linear_backward(dz, cache)
    # dW = outer(dz, x) = [[2*3, 2*4], [-1*3, -1*4]];  db = dz;  dx = W^T dz = [1.0 + 0.2, 0.6 - 0.4]
    np.testing.assert_array_equal(dw, [[6.0, 8.0], [-3.0, -4.0]])
    np.testing.assert_array_equal(db, [2.0, -1.0])
    assert_close(dx, np.array([1.2, 0.2]))
    _, _, torch_grads = run_module(x, w, np.zeros(2), dz, torch.float64)
    np.testing.assert_array_equal(torch_grads["weight"], [[6.0, 8.0], [-3.0, -4.0]])


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
    np_dtype, torch_dtype = dtypes
    x, w, b, dout = make_case(seed, lead, d_in, d_out, bias, np_dtype)
    reference = run_numpy(x, w, b, dout)
    assert reference[0].dtype == np_dtype and reference[1].dtype == np_dtype  # no silent upcast
    assert_same_results(run_module(x, w, b, dout, torch_dtype), reference)
    assert_same_results(run_witness(x, w, b, dout), reference)


def test_bias_false_has_no_bias_gradient():
    x, w, _, dout = make_case(0, (3,), 4, 2, bias=False)
    _, cache = linear_forward(x, w)
    assert linear_backward(dout, cache)[2] is None
    assert [name for name, _ in Linear(4, 2, bias=False).named_parameters()] == ["weight"]


# --- gradients against central differences and torch.autograd.gradcheck ----------------------

CASES = [((), 1, 1), ((1,), 3, 2), ((5,), 4, 3), ((2, 3), 5, 7), ((2, 1, 3), 3, 1)]  # (lead, d_in, d_out)


@pytest.mark.parametrize("lead, d_in, d_out", CASES)
@pytest.mark.parametrize("bias", [True, False])
def test_backward_matches_central_differences(lead, d_in, d_out, bias):
    x, w, b, dout = make_case(7, lead, d_in, d_out, bias)
    _, dx, grads = run_numpy(x, w, b, dout)
    assert rel_error(dx, numerical_gradient_array(lambda x: linear_forward(x, w, b)[0], x, dout)) <= 1e-7
    assert rel_error(grads["weight"], numerical_gradient_array(lambda w: linear_forward(x, w, b)[0], w, dout)) <= 1e-7
    if bias:
        assert rel_error(grads["bias"], numerical_gradient_array(lambda b: linear_forward(x, w, b)[0], b, dout)) <= 1e-7


@pytest.mark.parametrize("lead, d_in, d_out", CASES)
@pytest.mark.parametrize("bias", [True, False])
def test_module_passes_autograd_gradcheck(lead, d_in, d_out, bias):
    layer = Linear(d_in, d_out, bias=bias, dtype=torch.float64)
    x, w, b, _ = make_case(3, lead, d_in, d_out, bias)
    names = list(param_dict(w, b))
    inputs = [to_torch(v, requires_grad=True) for v in (x, *param_dict(w, b).values())]

    def call(x, *params):
        return functional_call(layer, dict(zip(names, params)), (x,))

    assert torch.autograd.gradcheck(call, inputs)


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


class TestBadInput:
    def test_mismatched_in_features(self):
        with pytest.raises(ValueError, match=r"linear_forward: x has shape \(3, 4\) and w has shape \(5, 6\)"):
            linear_forward(np.ones((3, 4)), np.ones((5, 6)))
        with pytest.raises(ValueError, match=r"Linear: x has shape \(3, 4\) and weight has shape \(5, 6\)"):
            Linear(6, 5)(torch.ones(3, 4))

    def test_weight_not_2d(self):
        with pytest.raises(ValueError, match=r"linear_forward: w must be 2-D, got shape \(4,\)"):
            linear_forward(np.ones((3, 4)), np.ones(4))

    def test_scalar_x(self):
        with pytest.raises(ValueError, match=r"linear_forward: x must have at least one axis.*got shape \(\)"):
            linear_forward(np.array(1.0), np.ones((2, 1)))
        with pytest.raises(ValueError, match=r"Linear: x must have at least one axis.*got shape \(\)"):
            Linear(1, 2)(torch.tensor(1.0))

    def test_bias_shape(self):
        with pytest.raises(ValueError, match=r"linear_forward: b has shape \(3,\) and w has shape \(2, 4\)"):
            linear_forward(np.ones((5, 4)), np.ones((2, 4)), np.ones(3))
        with pytest.raises(ValueError, match=r"linear_forward: b must be 1-D, got shape \(1, 2\)"):
            linear_forward(np.ones((5, 4)), np.ones((2, 4)), np.ones((1, 2)))

    def test_integer_x(self):
        with pytest.raises(ValueError, match="linear_forward: x must be a floating-point array, got dtype int64"):
            linear_forward(np.ones((2, 3), dtype=np.int64), np.ones((4, 3)))
        with pytest.raises(ValueError, match="Linear: x must be a floating-point array, got dtype torch.int64"):
            Linear(3, 4)(torch.ones(2, 3, dtype=torch.int64))

    def test_mixed_float_dtypes(self):
        with pytest.raises(ValueError, match="linear_forward: x has dtype float32 but w has dtype float64"):
            linear_forward(np.ones((2, 3), dtype=np.float32), np.ones((4, 3)))
        with pytest.raises(ValueError, match="Linear: x has dtype torch.float64 but weight has dtype torch.float32"):
            Linear(3, 4)(torch.ones(2, 3, dtype=torch.float64))

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
