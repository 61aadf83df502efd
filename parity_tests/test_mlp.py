"""Two-layer net: numpy_ref.mlp vs torch_lm.mlp.TwoLayerMLP, outputs and every gradient."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from numpy_ref.mlp import init_mlp_params, mlp_forward
from torch_lm.mlp import TwoLayerMLP
from torch_lm.parity import (
    Case,
    assert_central_differences,
    assert_gradcheck,
    assert_parity,
    assert_refused_alike,
    state_of,
)
from torch_lm.parity.components import MLP

# `dtypes` is a constant pair per test, so reusing it across hypothesis examples is safe.
FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def make_case(seed: int, lead: tuple[int, ...], d_in: int, d_hidden: int, d_out: int, bias: bool) -> Case:
    """Params keyed like ``state_dict()`` (random biases, so they matter), x (*lead, d_in), and
    the upstream gradient dy (*lead, d_out)."""
    rng = np.random.default_rng(seed)
    params = init_mlp_params(d_in, d_hidden, d_out, rng, bias=bias)
    if bias:
        for key in ("fc1.bias", "fc2.bias"):
            params[key] = rng.standard_normal(params[key].shape)
    x = rng.standard_normal(lead + (d_in,))
    dy = rng.standard_normal(lead + (d_out,))
    label = f"lead {lead}, {d_in} -> {d_hidden} -> {d_out}, bias {bias}"
    return Case({"x": x, **params}, upstream={"y": dy}, label=label)


# --- golden numbers ---------------------------------------------------------------------------


def test_golden_two_layer_net_on_x_1_minus_1():
    params = {
        "fc1.weight": np.array([[2.0, 1.0], [1.0, -1.0], [0.5, 1.0]]),  # (H=3, D_in=2)
        "fc2.weight": np.array([[0.5, 1.0, 3.0]]),
    }  # (D_out=1, H=3)
    x = np.array([1.0, -1.0])
    # torch's TwoLayerMLP agrees with the reference on y and on every gradient
    run = assert_parity(MLP, Case({"x": x, **params}, upstream={"y": np.ones(1)}))
    # W1 x = [2 - 1, 1 + 1, 0.5 - 1] = [1, 2, -0.5];  h = ReLU(.) = [1, 2, 0]
    # y = W2 h = 0.5*1 + 1*2 + 3*0 = 2.5
    np.testing.assert_array_equal(run.outputs["y"], [2.5])
    # Backward with dy = 1: dW2 = outer(1, h) = [[1, 2, 0]];  dh = W2^T = [0.5, 1, 3];
    # dh_pre = dh * 1[W1 x > 0] = [0.5, 1, 0];  dW1 = outer(dh_pre, x) = [[0.5, -0.5], [1, -1], [0, 0]];
    # dx = W1^T dh_pre = [2*0.5 + 1*1, 1*0.5 - 1*1] = [2, -0.5]
    np.testing.assert_array_equal(run.grads["fc2.weight"], [[1.0, 2.0, 0.0]])
    np.testing.assert_array_equal(run.grads["fc1.weight"], [[0.5, -0.5], [1.0, -1.0], [0.0, 0.0]])
    np.testing.assert_array_equal(run.grads["x"], [2.0, -0.5])


# --- parity --------------------------------------------------------------------------------------


@FAST
@given(
    lead=st.lists(st.integers(1, 4), max_size=2).map(tuple),
    d_in=st.integers(1, 7),
    d_hidden=st.integers(1, 9),
    d_out=st.integers(1, 5),
    bias=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_numpy_matches_torch(dtypes, lead, d_in, d_hidden, d_out, bias, seed):
    # every parameter is an input, so a gradient missing on either side is a mismatch
    assert_parity(MLP, make_case(seed, lead, d_in, d_hidden, d_out, bias), dtypes)


def test_state_dict_keys_match_numpy_params(rng):
    for bias in (True, False):
        assert sorted(state_of(TwoLayerMLP(3, 4, 2, bias=bias))) == sorted(init_mlp_params(3, 4, 2, rng, bias=bias))


# --- gradients against central differences and torch.autograd.gradcheck -------------------------

CASES = [((), 2, 3, 1), ((1,), 3, 4, 2), ((5,), 4, 6, 3), ((2, 3), 3, 5, 2)]  # (lead, d_in, d_hidden, d_out)


@pytest.mark.parametrize("lead, d_in, d_hidden, d_out", CASES)
@pytest.mark.parametrize("bias", [True, False])
def test_backward_matches_central_differences(lead, d_in, d_hidden, d_out, bias):
    case = make_case(11, lead, d_in, d_hidden, d_out, bias)
    h_pre = case.inputs["x"] @ case.inputs["fc1.weight"].T + case.inputs.get("fc1.bias", 0)
    assert np.abs(h_pre).min() > 1e-3, "test data sits on a ReLU kink; central differences would be invalid"
    assert_central_differences(MLP, case)


@pytest.mark.parametrize("lead, d_in, d_hidden, d_out", CASES)
@pytest.mark.parametrize("bias", [True, False])
def test_module_passes_autograd_gradcheck(lead, d_in, d_hidden, d_out, bias):
    assert_gradcheck(MLP, make_case(11, lead, d_in, d_hidden, d_out, bias))  # kink-free, as checked above


# --- bad input -------------------------------------------------------------------------------------


class TestBadInput:
    def test_x_does_not_fit_fc1(self, rng):
        assert_refused_alike(
            MLP,
            Case({"x": np.ones((5, 2)), **init_mlp_params(3, 4, 2, rng)}),
            r"mlp_forward: x has shape \(5, 2\) and fc1.weight has shape \(4, 3\)",
            r"Linear: x has shape \(5, 2\) and weight has shape \(4, 3\)",
        )

    def test_fc2_does_not_fit_fc1(self, rng):
        params = init_mlp_params(3, 4, 2, rng)
        params["fc2.weight"] = np.ones((2, 5))
        with pytest.raises(ValueError, match=r"fc2.weight has shape \(2, 5\) and fc1.weight has shape \(4, 3\)"):
            mlp_forward(params, np.ones((1, 3)))

    def test_missing_and_unknown_keys(self, rng):
        params = init_mlp_params(3, 4, 2, rng)
        params["fc1.bais"] = params.pop("fc1.weight")
        with pytest.raises(ValueError, match=r"missing \['fc1.weight'\], unknown \['fc1.bais'\]"):
            mlp_forward(params, np.ones((1, 3)))

    def test_weight_not_2d(self, rng):
        params = init_mlp_params(3, 4, 2, rng)
        params["fc2.weight"] = np.ones(4)
        with pytest.raises(ValueError, match=r"mlp_forward: fc2.weight must be 2-D, got shape \(4,\)"):
            mlp_forward(params, np.ones((1, 3)))

    def test_integer_x(self, rng):
        # Each engine on its own: MLP's torch side builds its module in x's dtype, and an integer
        # dtype stops nn.Module.to with a TypeError before the check under test is reached.
        with pytest.raises(ValueError, match="x must be a floating-point array, got dtype int64"):
            mlp_forward(init_mlp_params(3, 4, 2, rng), np.ones((1, 3), dtype=np.int64))
        with pytest.raises(ValueError, match="x must be a floating-point array, got dtype torch.int64"):
            TwoLayerMLP(3, 4, 2)(torch.ones(1, 3, dtype=torch.int64))

    def test_non_positive_sizes(self, rng):
        with pytest.raises(ValueError, match="init_mlp_params: d_hidden must be a positive integer, got 0"):
            init_mlp_params(3, 0, 2, rng)
        with pytest.raises(ValueError, match="Linear: out_features must be a positive integer, got 0"):
            TwoLayerMLP(3, 0, 2)
