"""LayerNorm: numpy_ref against torch_lm, with F.layer_norm / nn.LayerNorm as the third witness,
central differences for the NumPy backward, torch.autograd.gradcheck, zero-variance rows, a golden
value and the errors for bad input.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from numpy_ref.layernorm import layernorm_backward, layernorm_forward
from torch_lm.layernorm import LayerNorm, layer_norm
from torch_lm.parity import (
    DTYPE_PAIRS,
    Case,
    assert_central_differences,
    assert_gradcheck,
    assert_parity,
    assert_refused_alike,
    assert_same,
    run_numpy,
    run_torch,
    state_of,
)
from torch_lm.parity.components import LAYERNORM

TOLERANCE = 1e-7  # docs/DESIGN.md §2: rel_error bound for central differences in float64
# `dtypes` is an immutable (numpy dtype, torch dtype) pair, safe to share across examples.
SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

leading = st.lists(st.integers(1, 5), max_size=2).map(tuple)  # batch dims, batch 1 included
shapes = st.tuples(leading, st.integers(2, 7)).map(lambda s: s[0] + (s[1],))  # (..., D); D = 1 is zero-variance
seeds = st.integers(0, 2**32 - 1)


def random_case(rng: np.random.Generator, shape: tuple, eps: float = 1e-5) -> Case:
    """x (shape), weight and bias (D,), upstream gradient (shape); D >= 2.

    Every row of x gets an exact standard deviation in [0.5, 10] and a mean in [-3, 3], so the
    float32 comparisons are well conditioned: 1/sigma <= 2 amplifies rounding by at most 2.
    (Rows of zero variance, where 1/sigma = 1/sqrt(eps) ~ 316, have tests of their own.)
    """
    z = rng.standard_normal(shape)
    z = (z - z.mean(axis=-1, keepdims=True)) / z.std(axis=-1, keepdims=True)
    rows = shape[:-1] + (1,)
    x = z * rng.uniform(0.5, 10.0, rows) + rng.uniform(-3.0, 3.0, rows)
    d = shape[-1]
    inputs = {"x": x, "weight": rng.standard_normal(d), "bias": rng.standard_normal(d)}
    return Case(inputs, fixed={"eps": eps}, upstream={"out": rng.standard_normal(shape)}, label=f"{shape}, eps {eps}")


def layer_norm_function(inputs: dict, fixed: dict) -> dict:
    """The torch side as the function ``layer_norm`` rather than the module ``LayerNorm``."""
    return {"out": layer_norm(inputs["x"], inputs["weight"], inputs["bias"], fixed.get("eps", 1e-5))}


# The function's own refusals: the module refuses a last axis of size 0 earlier, when it is built.
LAYER_NORM_FUNCTION = replace(LAYERNORM, name="layer_norm", torch_forward=layer_norm_function)
# F.layer_norm's float32 backward is inaccurate on zero-variance rows (see below): NumPy vs torch only.
LAYERNORM_WITHOUT_WITNESS = replace(LAYERNORM, witness=None)


# ---------------------------------------------------------------- parity: numpy vs torch vs F


@SETTINGS
@given(shape=shapes, eps=st.sampled_from([1e-5, 1e-3, 0.5]), seed=seeds)
def test_layernorm_matches_torch_and_builtin(dtypes, shape, eps, seed):
    assert_parity(LAYERNORM, random_case(np.random.default_rng(seed), shape, eps), dtypes)


def test_state_dict_matches_nn_layernorm():
    ours, builtin = LayerNorm(6), nn.LayerNorm(6)
    assert list(ours.state_dict()) == list(builtin.state_dict()) == ["weight", "bias"]
    assert_same(state_of(ours), state_of(builtin))  # ones and zeros


def test_reset_parameters_restores_identity_affine():
    module = LayerNorm(4)
    with torch.no_grad():
        module.weight.normal_()
        module.bias.normal_()
    module.reset_parameters()
    assert_same(state_of(module), {"weight": np.ones(4, np.float32), "bias": np.zeros(4, np.float32)})


# ---------------------------------------------------------------- gradients: central differences, gradcheck

# D >= 3: D = 1 is in the zero-variance tests, and for D = 2 x_hat is +-1 whatever x is (up to
# eps), so dx is ~eps-small and central differences would measure only rounding noise.
GRAD_SHAPES = [(1, 3), (1, 5), (3, 4), (2, 3, 5)]


@pytest.mark.parametrize("shape", GRAD_SHAPES, ids=lambda shape: "x".join(map(str, shape)))
def test_numpy_backward_matches_central_differences(rng, shape):
    assert_central_differences(LAYERNORM, random_case(rng, shape), bound=TOLERANCE)


def test_torch_layer_norm_and_module_pass_gradcheck(rng):
    x, w, b = (rng.standard_normal(s) for s in [(3, 5), (5,), (5,)])
    case = Case({"x": x, "weight": w, "bias": b})
    assert_gradcheck(LAYER_NORM_FUNCTION, case)
    assert_gradcheck(LAYERNORM, case)


# ---------------------------------------------------------------- zero variance, golden value

# Zero-variance rows: constant rows whose sums are exact in float32 too (so the mean is exact and
# the variance exactly 0), and D = 1, where every row is constant.
ZERO_VARIANCE = {
    "constant-rows": np.array([[3.5, 3.5, 3.5, 3.5], [0.0, 0.0, 0.0, 0.0], [-2.0, -2.0, -2.0, -2.0]]),
    "D=1": np.array([[2.4629242], [-0.3], [1000.0]]),
}


def zero_variance_case(rng: np.random.Generator, x: np.ndarray, np_dtype) -> Case:
    """The given zero-variance x (..., D), random weight and bias (D,) and upstream (..., D), in ``np_dtype``."""
    d = x.shape[-1]
    inputs = {"x": x, "weight": rng.standard_normal(d), "bias": rng.standard_normal(d)}
    inputs = {name: value.astype(np_dtype) for name, value in inputs.items()}
    return Case(inputs, upstream={"out": rng.standard_normal(x.shape).astype(np_dtype)}, label=f"{x.shape}")


@pytest.mark.parametrize("name", sorted(ZERO_VARIANCE))
def test_zero_variance_rows_give_beta_and_finite_gradients(dtypes, rng, name):
    case = zero_variance_case(rng, ZERO_VARIANCE[name], dtypes[0])
    run = assert_parity(LAYERNORM_WITHOUT_WITNESS, case, dtypes)
    out, dx = run.outputs["out"], run.grads["x"]
    assert_same(out, np.broadcast_to(case.inputs["bias"], out.shape))
    assert np.isfinite(dx).all()
    # x_hat = 0, so dx = (g - mean(g)) / sqrt(eps): only the gradient through the mean survives.
    g = case.upstream["out"] * case.inputs["weight"]
    assert_same(dx, (g - g.mean(axis=-1, keepdims=True)) / np.sqrt(np.asarray(1e-5, dtypes[0])))


@pytest.mark.parametrize("name", sorted(ZERO_VARIANCE))
def test_zero_variance_rows_match_builtin_in_float64(rng, name):
    # float64 only: F.layer_norm's float32 backward forms dx as a difference of terms of size
    # |g| / sqrt(eps) ~ 300 |g|, which leaves ~ulp(300 |g|) ~ 6e-5 of rounding on entries that
    # should be 0 (D = 1), above float32's atol of 1e-5. Ours subtracts before scaling.
    assert_parity(LAYERNORM, zero_variance_case(rng, ZERO_VARIANCE[name], np.float64), DTYPE_PAIRS[0])


@pytest.mark.parametrize("name", sorted(ZERO_VARIANCE))
def test_zero_variance_backward_matches_central_differences_and_gradcheck(rng, name):
    case = zero_variance_case(rng, ZERO_VARIANCE[name], np.float64)
    assert_central_differences(LAYERNORM, case, bound=TOLERANCE)
    assert_gradcheck(LAYER_NORM_FUNCTION, case)


def test_golden_layernorm_of_1_2_3():
    case = Case({"x": np.array([1.0, 2.0, 3.0]), "weight": np.ones(3), "bias": np.zeros(3)})
    scale = 1 / math.sqrt(2 / 3 + 1e-5)  # mean 2, biased variance 2/3, eps inside the sqrt
    exact = np.array([-scale, 0.0, scale])
    out, torch_out = run_numpy(LAYERNORM, case).outputs["out"], run_torch(LAYERNORM, case).outputs["out"]
    np.testing.assert_array_equal(np.round(out, 4), [-1.2247, 0.0, 1.2247])
    assert_same(out, exact, "numpy", rtol=1e-15, atol=1e-15)
    assert_same(torch_out, exact, "torch", rtol=1e-15, atol=1e-15)


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
    case = Case({"x": x, "weight": gamma, "bias": beta}, fixed=kwargs)
    numpy_message = message.format(gamma="gamma", beta="beta")
    torch_message = message.format(gamma="weight", beta="bias")
    assert_refused_alike(LAYER_NORM_FUNCTION, case, numpy_message, torch_message)


def test_module_rejects_input_of_the_wrong_width():
    case = Case({"x": np.zeros((2, 3)), "weight": np.ones(4), "bias": np.zeros(4)})
    message = r"{} has shape \(4,\) but x.shape\[-1:\] has shape \(3,\)"
    assert_refused_alike(LAYERNORM, case, message.format("gamma"), message.format("weight"))


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
