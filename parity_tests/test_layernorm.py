"""LayerNorm: numpy_ref against torch_lm, with F.layer_norm / nn.LayerNorm as the third witness,
central differences for the NumPy backward, torch.autograd.gradcheck, zero-variance rows, a golden
value and the errors for bad input.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from numpy_ref.gradcheck import numerical_gradient_array, rel_error
from numpy_ref.layernorm import layernorm_backward, layernorm_forward
from parity_tests.conftest import assert_close, grads_to_numpy, state_dict_to_numpy, to_numpy, to_torch
from torch_lm.layernorm import LayerNorm, layer_norm

TOLERANCE = 1e-7  # docs/DESIGN.md §2: rel_error bound for central differences in float64
# `dtypes` is an immutable (numpy dtype, torch dtype) pair, safe to share across examples.
SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

leading = st.lists(st.integers(1, 5), max_size=2).map(tuple)  # batch dims, batch 1 included
shapes = st.tuples(leading, st.integers(2, 7)).map(lambda s: s[0] + (s[1],))  # (..., D); D = 1 is zero-variance
seeds = st.integers(0, 2**32 - 1)


def random_case(rng: np.random.Generator, shape: tuple, np_dtype) -> dict[str, np.ndarray]:
    """x (shape), gamma and beta (D,), upstream gradient dout (shape); D >= 2.

    Every row of x gets an exact standard deviation in [0.5, 10] and a mean in [-3, 3], so the
    float32 comparisons are well conditioned: 1/sigma <= 2 amplifies rounding by at most 2.
    (Rows of zero variance, where 1/sigma = 1/sqrt(eps) ~ 316, have tests of their own.)
    """
    z = rng.standard_normal(shape)
    z = (z - z.mean(axis=-1, keepdims=True)) / z.std(axis=-1, keepdims=True)
    rows = shape[:-1] + (1,)
    x = z * rng.uniform(0.5, 10.0, rows) + rng.uniform(-3.0, 3.0, rows)
    d = shape[-1]
    case = {"x": x, "gamma": rng.standard_normal(d), "beta": rng.standard_normal(d), "dout": rng.standard_normal(shape)}
    return {name: value.astype(np_dtype) for name, value in case.items()}


def torch_module_forward_backward(case: dict, torch_dtype, eps: float):
    """Our LayerNorm module with gamma/beta loaded; returns (out, dx, grads keyed weight/bias)."""
    module = LayerNorm(case["x"].shape[-1], eps=eps).to(torch_dtype)
    module.load_state_dict({"weight": to_torch(case["gamma"]), "bias": to_torch(case["beta"])})
    x = to_torch(case["x"], torch_dtype, requires_grad=True)
    out = module(x)
    out.backward(to_torch(case["dout"], torch_dtype))
    return out, x.grad, grads_to_numpy(module)


def builtin_forward_backward(case: dict, torch_dtype, eps: float):
    """F.layer_norm, the third witness; returns (out, dx, grads keyed weight/bias)."""
    x, w, b = (to_torch(case[k], torch_dtype, requires_grad=True) for k in ("x", "gamma", "beta"))
    out = F.layer_norm(x, x.shape[-1:], w, b, eps)
    out.backward(to_torch(case["dout"], torch_dtype))
    return out, x.grad, {"weight": w.grad, "bias": b.grad}


def check_numpy_matches_torch(case: dict, dtypes, eps: float = 1e-5) -> None:
    np_dtype, torch_dtype = dtypes
    out, cache = layernorm_forward(case["x"], case["gamma"], case["beta"], eps)
    dx, dgamma, dbeta = layernorm_backward(case["dout"], cache)
    assert {a.dtype for a in (out, dx, dgamma, dbeta)} == {np.dtype(np_dtype)}  # no silent upcast
    torch_out, torch_dx, torch_grads = torch_module_forward_backward(case, torch_dtype, eps)
    assert_close(out, torch_out)
    assert_close(dx, torch_dx)
    assert_close({"weight": dgamma, "bias": dbeta}, torch_grads)


def check_torch_matches_builtin(case: dict, torch_dtype, eps: float = 1e-5) -> None:
    torch_out, torch_dx, torch_grads = torch_module_forward_backward(case, torch_dtype, eps)
    witness_out, witness_dx, witness_grads = builtin_forward_backward(case, torch_dtype, eps)
    assert_close(torch_out, witness_out)
    assert_close(torch_dx, witness_dx)
    assert_close(torch_grads, witness_grads)


# ---------------------------------------------------------------- parity: numpy vs torch vs F


@SETTINGS
@given(shape=shapes, eps=st.sampled_from([1e-5, 1e-3, 0.5]), seed=seeds)
def test_layernorm_matches_torch_and_builtin(dtypes, shape, eps, seed):
    case = random_case(np.random.default_rng(seed), shape, dtypes[0])
    check_numpy_matches_torch(case, dtypes, eps)
    check_torch_matches_builtin(case, dtypes[1], eps)


def test_state_dict_matches_nn_layernorm():
    ours, builtin = LayerNorm(6), nn.LayerNorm(6)
    assert list(ours.state_dict()) == list(builtin.state_dict()) == ["weight", "bias"]
    assert_close(state_dict_to_numpy(ours), state_dict_to_numpy(builtin))  # ones and zeros


def test_reset_parameters_restores_identity_affine():
    module = LayerNorm(4)
    with torch.no_grad():
        module.weight.normal_()
        module.bias.normal_()
    module.reset_parameters()
    assert_close(state_dict_to_numpy(module), {"weight": np.ones(4, np.float32), "bias": np.zeros(4, np.float32)})


# ---------------------------------------------------------------- gradients: central differences, gradcheck

# D >= 3: D = 1 is in the zero-variance tests, and for D = 2 x_hat is +-1 whatever x is (up to
# eps), so dx is ~eps-small and central differences would measure only rounding noise.
GRAD_SHAPES = [(1, 3), (1, 5), (3, 4), (2, 3, 5)]


@pytest.mark.parametrize("shape", GRAD_SHAPES, ids=lambda shape: "x".join(map(str, shape)))
def test_numpy_backward_matches_central_differences(rng, shape):
    case = random_case(rng, shape, np.float64)
    x, gamma, beta, dout = case["x"], case["gamma"], case["beta"], case["dout"]
    dx, dgamma, dbeta = layernorm_backward(dout, layernorm_forward(x, gamma, beta)[1])

    def forward(x, gamma, beta):
        return layernorm_forward(x, gamma, beta)[0]

    assert rel_error(dx, numerical_gradient_array(lambda v: forward(v, gamma, beta), x, dout)) <= TOLERANCE
    assert rel_error(dgamma, numerical_gradient_array(lambda v: forward(x, v, beta), gamma, dout)) <= TOLERANCE
    assert rel_error(dbeta, numerical_gradient_array(lambda v: forward(x, gamma, v), beta, dout)) <= TOLERANCE


def test_torch_layer_norm_and_module_pass_gradcheck(rng):
    x, w, b = (to_torch(rng.standard_normal(s), requires_grad=True) for s in [(3, 5), (5,), (5,)])
    assert torch.autograd.gradcheck(lambda x, w, b: layer_norm(x, w, b), (x, w, b))
    module = LayerNorm(5).to(torch.float64)
    assert torch.autograd.gradcheck(module, (x,))


# ---------------------------------------------------------------- zero variance, golden value

# Zero-variance rows: constant rows whose sums are exact in float32 too (so the mean is exact and
# the variance exactly 0), and D = 1, where every row is constant.
ZERO_VARIANCE = {
    "constant-rows": np.array([[3.5, 3.5, 3.5, 3.5], [0.0, 0.0, 0.0, 0.0], [-2.0, -2.0, -2.0, -2.0]]),
    "D=1": np.array([[2.4629242], [-0.3], [1000.0]]),
}


def zero_variance_case(rng: np.random.Generator, x: np.ndarray, np_dtype) -> dict[str, np.ndarray]:
    """The given zero-variance x (..., D) with random gamma, beta (D,) and dout (..., D)."""
    d = x.shape[-1]
    case = {
        "x": x,
        "gamma": rng.standard_normal(d),
        "beta": rng.standard_normal(d),
        "dout": rng.standard_normal(x.shape),
    }
    return {name: value.astype(np_dtype) for name, value in case.items()}


@pytest.mark.parametrize("name", sorted(ZERO_VARIANCE))
def test_zero_variance_rows_give_beta_and_finite_gradients(dtypes, rng, name):
    case = zero_variance_case(rng, ZERO_VARIANCE[name], dtypes[0])
    out, cache = layernorm_forward(case["x"], case["gamma"], case["beta"])
    dx, _, _ = layernorm_backward(case["dout"], cache)
    assert_close(out, np.broadcast_to(case["beta"], out.shape))
    assert np.isfinite(dx).all()
    # x_hat = 0, so dx = (g - mean(g)) / sqrt(eps): only the gradient through the mean survives.
    g = case["dout"] * case["gamma"]
    assert_close(dx, (g - g.mean(axis=-1, keepdims=True)) / np.sqrt(np.asarray(1e-5, dtypes[0])))
    check_numpy_matches_torch(case, dtypes)


@pytest.mark.parametrize("name", sorted(ZERO_VARIANCE))
def test_zero_variance_rows_match_builtin_in_float64(rng, name):
    # float64 only: F.layer_norm's float32 backward forms dx as a difference of terms of size
    # |g| / sqrt(eps) ~ 300 |g|, which leaves ~ulp(300 |g|) ~ 6e-5 of rounding on entries that
    # should be 0 (D = 1), above float32's atol of 1e-5. Ours subtracts before scaling.
    check_torch_matches_builtin(zero_variance_case(rng, ZERO_VARIANCE[name], np.float64), torch.float64)


@pytest.mark.parametrize("name", sorted(ZERO_VARIANCE))
def test_zero_variance_backward_matches_central_differences_and_gradcheck(rng, name):
    case = zero_variance_case(rng, ZERO_VARIANCE[name], np.float64)
    x, gamma, beta, dout = case["x"], case["gamma"], case["beta"], case["dout"]
    dx, _, _ = layernorm_backward(dout, layernorm_forward(x, gamma, beta)[1])
    numeric = numerical_gradient_array(lambda v: layernorm_forward(v, gamma, beta)[0], x, dout)
    assert rel_error(dx, numeric) <= TOLERANCE
    x_t = to_torch(x, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: layer_norm(v, to_torch(gamma), to_torch(beta)), (x_t,))


def test_golden_layernorm_of_1_2_3():
    x, gamma, beta = np.array([1.0, 2.0, 3.0]), np.ones(3), np.zeros(3)
    scale = 1 / math.sqrt(2 / 3 + 1e-5)  # mean 2, biased variance 2/3, eps inside the sqrt
    exact = np.array([-scale, 0.0, scale])
    out, _ = layernorm_forward(x, gamma, beta)
    torch_out = LayerNorm(3).to(torch.float64)(to_torch(x))
    np.testing.assert_array_equal(np.round(out, 4), [-1.2247, 0.0, 1.2247])
    np.testing.assert_allclose(out, exact, rtol=1e-15, atol=1e-15)
    np.testing.assert_allclose(to_numpy(torch_out), exact, rtol=1e-15, atol=1e-15)


# ---------------------------------------------------------------- bad input -> ValueError on both sides

X, D = np.zeros((2, 3)), np.zeros(3)

BAD_INPUT = [
    (np.float64(1.0), np.zeros(1), np.zeros(1), {}, r"x must have at least one axis .* got shape \(\)"),
    (np.zeros((2, 0)), np.zeros(0), np.zeros(0), {}, r"x must have at least one axis .* got shape \(2, 0\)"),
    (np.zeros((2, 3), dtype=np.int64), D, D, {}, r"x must be a floating-point array, got dtype .*int64"),
    (X, np.zeros(4), D, {}, r"{gamma} has shape \(4,\) but x.shape\[-1:\] has shape \(3,\)"),
    (X, np.zeros((1, 3)), D, {}, r"{gamma} has shape \(1, 3\) but x.shape\[-1:\] has shape \(3,\)"),
    (X, D, np.zeros(2), {}, r"{beta} has shape \(2,\) but x.shape\[-1:\] has shape \(3,\)"),
    (X, D, D, {"eps": 0.0}, r"eps must be a finite number > 0, got 0.0"),
    (X, D, D, {"eps": -1e-5}, r"eps must be a finite number > 0, got -1e-05"),
]


@pytest.mark.parametrize("x, gamma, beta, kwargs, message", BAD_INPUT)
def test_bad_input_raises_on_both_sides(x, gamma, beta, kwargs, message):
    with pytest.raises(ValueError, match=message.format(gamma="gamma", beta="beta")):
        layernorm_forward(x, gamma, beta, **kwargs)
    with pytest.raises(ValueError, match=message.format(gamma="weight", beta="bias")):
        layer_norm(*(torch.from_numpy(np.asarray(a)) for a in (x, gamma, beta)), **kwargs)


def test_module_rejects_input_of_the_wrong_width():
    with pytest.raises(ValueError, match=r"weight has shape \(4,\) but x.shape\[-1:\] has shape \(3,\)"):
        LayerNorm(4)(torch.zeros(2, 3))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"dim": 0}, r"LayerNorm: dim must be a positive integer, got 0"),
        ({"dim": 2.0}, r"LayerNorm: dim must be a positive integer, got 2.0"),
        ({"dim": 3, "eps": 0.0}, r"LayerNorm: eps must be a finite number > 0, got 0.0"),
    ],
)
def test_module_rejects_bad_constructor_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LayerNorm(**kwargs)


def test_numpy_backward_rejects_upstream_gradient_of_wrong_shape():
    _, cache = layernorm_forward(X, D + 1, D)
    with pytest.raises(ValueError, match=r"dout has shape \(3, 2\) but the forward output has shape \(2, 3\)"):
        layernorm_backward(np.zeros((3, 2)), cache)
