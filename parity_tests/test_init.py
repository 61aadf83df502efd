"""Xavier and He initialisation: numpy_ref.init vs torch_lm.init vs nn.init, by their statistics.

Random draws cannot match value for value across engines, so each test compares the sample
std (and mean) of a large matrix with the formula, with an absolute tolerance of 5 standard
errors: SE(s) ≈ std * sqrt((kurtosis - 1) / 4n) for the sample std, kurtosis 3 for a normal and
9/5 for a uniform, and std / sqrt(n) for the sample mean. The matrices are non-square, so mixing
up fan_in and fan_out moves the std by far more.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

import torch_lm.init as tinit
from numpy_ref import init as ninit
from torch_lm.parity import assert_same, mismatches

FAN_OUT, FAN_IN = 400, 500  # n = 200,000 draws: 5 SE ≈ 0.8 % of the std for a normal
N = FAN_OUT * FAN_IN
NORMAL_KURTOSIS, UNIFORM_KURTOSIS = 3.0, 9.0 / 5.0


@dataclass(frozen=True)
class Scheme:
    name: str
    numpy_fn: Callable
    torch_fn: Callable
    witness: Callable  # nn.init's version of the same scheme, filling a tensor in place
    std: float
    kurtosis: float
    bound: float | None  # largest |w| a uniform draw can reach


# Written out here rather than taken from numpy_ref, so a wrong formula there cannot agree with itself.
XAVIER, HE = math.sqrt(2 / (FAN_IN + FAN_OUT)), math.sqrt(2 / FAN_IN)
SCHEMES = [
    Scheme(
        "xavier_normal",
        ninit.xavier_normal,
        tinit.xavier_normal_,
        nn.init.xavier_normal_,
        XAVIER,
        NORMAL_KURTOSIS,
        None,
    ),
    Scheme(
        "he_normal",
        ninit.he_normal,
        tinit.he_normal_,
        lambda t: nn.init.kaiming_normal_(t, mode="fan_in", nonlinearity="relu"),
        HE,
        NORMAL_KURTOSIS,
        None,
    ),
    Scheme(
        "xavier_uniform",
        ninit.xavier_uniform,
        tinit.xavier_uniform_,
        nn.init.xavier_uniform_,
        XAVIER,
        UNIFORM_KURTOSIS,
        math.sqrt(3) * XAVIER,
    ),
    Scheme(
        "he_uniform",
        ninit.he_uniform,
        tinit.he_uniform_,
        lambda t: nn.init.kaiming_uniform_(t, mode="fan_in", nonlinearity="relu"),
        HE,
        UNIFORM_KURTOSIS,
        math.sqrt(3) * HE,
    ),
]
IDS = [s.name for s in SCHEMES]


def std_standard_error(std: float, n: int, kurtosis: float) -> float:
    """Standard error of the sample std of n i.i.d. draws (delta method on the sample variance)."""
    return std * math.sqrt((kurtosis - 1) / (4 * n))


def assert_statistics(w: np.ndarray, scheme: Scheme) -> None:
    """Sample std within 5 SE of the scheme's std, mean within 5 SE of 0, and the uniform bound."""
    assert w.shape == (FAN_OUT, FAN_IN)
    w = w.astype(np.float64)
    std_se, mean_se = std_standard_error(scheme.std, w.size, scheme.kurtosis), scheme.std / math.sqrt(w.size)
    found = mismatches(w.std(), scheme.std, "std", rtol=0, atol=5 * std_se)
    found += mismatches(w.mean(), 0.0, "mean", rtol=0, atol=5 * mean_se)
    assert not found, f"{scheme.name}: " + "; ".join(map(str, found))
    if scheme.bound is not None:
        assert np.abs(w).max() <= scheme.bound


# --- golden numbers ----------------------------------------------------------------------------


def test_golden_xavier_100_200_and_he_100():
    assert_same(ninit.xavier_std(100, 200), 0.0816, "xavier_std", rtol=0, atol=1e-4)  # sqrt(2 / 300) = 0.08165
    assert_same(ninit.he_std(100), 0.1414, "he_std", rtol=0, atol=1e-4)  # sqrt(2 / 100) = 0.14142
    w = ninit.xavier_normal(200, 100, np.random.default_rng(0))  # 20,000 draws: SE = 0.0816 / 200
    assert_same(w.std(), 0.0816, "sample std", rtol=0, atol=5 * 0.0816 / 200)


# --- statistics, in three implementations ------------------------------------------------------


@pytest.mark.parametrize("scheme", SCHEMES, ids=IDS)
def test_numpy_draws_match_the_formula(scheme, rng):
    assert_statistics(scheme.numpy_fn(FAN_OUT, FAN_IN, rng), scheme)


@pytest.mark.parametrize("scheme", SCHEMES, ids=IDS)
def test_torch_draws_match_the_formula(scheme):
    w = scheme.torch_fn(torch.empty(FAN_OUT, FAN_IN, dtype=torch.float64), torch.Generator().manual_seed(0))
    assert_statistics(w.numpy(), scheme)


@pytest.mark.parametrize("scheme", SCHEMES, ids=IDS)
def test_nn_init_witness_uses_the_same_formula(scheme):
    with torch.random.fork_rng():  # nn.init takes no generator; seed the global one, then restore it
        torch.manual_seed(0)
        w = scheme.witness(torch.empty(FAN_OUT, FAN_IN, dtype=torch.float64))
    assert_statistics(w.numpy(), scheme)


# --- dtype, layout, in-place behaviour, reproducibility ---------------------------------------------


@pytest.mark.parametrize("scheme", SCHEMES, ids=IDS)
def test_numpy_keeps_the_requested_dtype_and_torch_layout(scheme, dtypes, rng):
    np_dtype, _ = dtypes
    w = scheme.numpy_fn(3, 5, rng, dtype=np_dtype)
    assert w.shape == (3, 5) and w.dtype == np_dtype


@pytest.mark.parametrize("scheme", SCHEMES, ids=IDS)
def test_torch_fills_in_place_under_no_grad(scheme, dtypes):
    _, torch_dtype = dtypes
    weight = nn.Parameter(torch.zeros(3, 5, dtype=torch_dtype))  # in-place on a grad leaf needs no_grad
    returned = scheme.torch_fn(weight)
    assert returned is weight and weight.dtype == torch_dtype and weight.requires_grad
    assert weight.grad_fn is None and torch.count_nonzero(weight) == weight.numel()


@pytest.mark.parametrize("scheme", SCHEMES, ids=IDS)
def test_same_seed_same_weights(scheme):
    a = scheme.torch_fn(torch.empty(4, 6), torch.Generator().manual_seed(7))
    b = scheme.torch_fn(torch.empty(4, 6), torch.Generator().manual_seed(7))
    assert_same(a, b, "torch", rtol=0, atol=0)
    n1 = scheme.numpy_fn(4, 6, np.random.default_rng(7))
    n2 = scheme.numpy_fn(4, 6, np.random.default_rng(7))
    assert_same(n1, n2, "numpy", rtol=0, atol=0)


# --- bad input ------------------------------------------------------------------------------------------


class TestBadInput:
    @pytest.mark.parametrize("fan_out, fan_in, name", [(3, 0, "fan_in"), (-2, 3, "fan_out")])
    def test_non_positive_fans(self, fan_out, fan_in, name, rng):
        with pytest.raises(ValueError, match=f"xavier_std: {name} must be a positive integer"):
            ninit.xavier_normal(fan_out, fan_in, rng)
        with pytest.raises(ValueError, match="he_std: fan_in must be a positive integer, got 0"):
            ninit.he_normal(3, 0, rng)

    def test_integer_dtype(self, rng):
        with pytest.raises(ValueError, match="he_uniform: dtype must be float32 or float64, got int64"):
            ninit.he_uniform(3, 4, rng, dtype=np.int64)

    @pytest.mark.parametrize("scheme", SCHEMES, ids=IDS)
    def test_torch_tensor_not_2d(self, scheme):
        with pytest.raises(ValueError, match=rf"{scheme.name}_: tensor must be 2-D, got shape \(2, 3, 4\)"):
            scheme.torch_fn(torch.empty(2, 3, 4))

    def test_torch_integer_tensor(self):
        with pytest.raises(
            ValueError, match="xavier_normal_: tensor must be a floating-point array, got dtype torch.int"
        ):
            tinit.xavier_normal_(torch.zeros(3, 4, dtype=torch.int64))

    def test_torch_empty_fan(self):
        with pytest.raises(ValueError, match="he_std: fan_in must be a positive integer, got 0"):
            tinit.he_normal_(torch.empty(3, 0))
