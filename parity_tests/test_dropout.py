"""Inverted dropout: numpy_ref.dropout vs torch_lm.dropout.Dropout with a shared keep-mask,
and both vs F.dropout by statistics (torch's own mask cannot be injected)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from numpy_ref.dropout import dropout_backward, dropout_forward, make_keep_mask
from torch_lm.dropout import Dropout, keep_threshold
from torch_lm.dropout import make_keep_mask as torch_keep_mask
from torch_lm.parity import (
    Case,
    assert_central_differences,
    assert_gradcheck,
    assert_parity,
    assert_refused_alike,
    assert_same,
    run_numpy,
    run_torch,
    to_torch,
)
from torch_lm.parity.components import DROPOUT

# `dtypes` is a constant pair per test, so reusing it across hypothesis examples is safe.
FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
N = 200_000  # draws for the statistical tests


def both_engines(case: Case) -> list:
    """The NumPy run and the torch run of DROPOUT on one case."""
    return [run_numpy(DROPOUT, case), run_torch(DROPOUT, case)]


# --- golden numbers ----------------------------------------------------------------------------


def test_golden_ones_with_mask_101_and_p_one_third():
    mask = np.array([True, False, True])
    case = Case({"x": np.ones(3)}, fixed={"p": 1 / 3, "mask": mask}, upstream={"out": np.ones(3)})
    # kept entries are scaled by 1 / (1 - 1/3) = 1.5, so E[out] = 2/3 * 1.5 = 1 = x
    for run in both_engines(case):
        assert_same(run.outputs["out"], np.array([1.5, 0.0, 1.5]))
        assert_same(run.grads["x"], np.array([1.5, 0.0, 1.5]))


# --- parity with a shared mask ----------------------------------------------------------------------


def masked_case(rng: np.random.Generator, shape: tuple[int, ...], p: float) -> Case:
    """Standard normal x and upstream gradient, then a keep-mask for p, all drawn from ``rng``."""
    x, dout = rng.standard_normal(shape), rng.standard_normal(shape)
    mask = make_keep_mask(shape, p, rng)
    return Case({"x": x}, fixed={"p": p, "mask": mask}, upstream={"out": dout}, label=f"{shape}, p {p}")


@FAST
@given(
    shape=st.lists(st.integers(1, 6), min_size=1, max_size=3).map(tuple),
    p=st.sampled_from([0.0, 0.1, 0.5, 0.9, 0.99]),
    seed=st.integers(0, 2**32 - 1),
)
def test_numpy_matches_torch_with_the_same_mask(dtypes, shape, p, seed):
    assert_parity(DROPOUT, masked_case(np.random.default_rng(seed), shape, p), dtypes)


@pytest.mark.parametrize("shape", [(1,), (7,), (3, 4), (2, 3, 5)])
@pytest.mark.parametrize("p", [0.0, 0.3, 0.9])
def test_backward_matches_central_differences(shape, p, rng):
    assert_central_differences(DROPOUT, masked_case(rng, shape, p))


@pytest.mark.parametrize("shape", [(1,), (7,), (3, 4)])
@pytest.mark.parametrize("p", [0.3, 0.9])
def test_module_passes_autograd_gradcheck(shape, p, rng):
    mask = make_keep_mask(shape, p, rng)  # fixed, so the function is deterministic
    case = Case({"x": rng.standard_normal(shape)}, fixed={"p": p, "mask": mask}, label=f"{shape}, p {p}")
    assert_gradcheck(DROPOUT, case)


# --- identity cases: p == 0 and evaluation -------------------------------------------------------


def test_p_zero_is_identity_and_ignores_the_mask(rng):
    x = rng.standard_normal((4, 5))
    mask = np.zeros((4, 5), dtype=bool)  # would zero everything if it were used
    for run in both_engines(Case({"x": x}, fixed={"p": 0.0, "mask": mask}, upstream={"out": x})):
        np.testing.assert_array_equal(run.outputs["out"], x)
        np.testing.assert_array_equal(run.grads["x"], x)


def test_eval_mode_is_identity(rng):
    x, mask = rng.standard_normal((4, 5)), np.zeros((4, 5), dtype=bool)
    for fixed in ({"p": 0.5, "mask": mask, "train": False}, {"p": 0.5, "train": False}):
        for run in both_engines(Case({"x": x}, fixed, upstream={"out": x})):
            np.testing.assert_array_equal(run.outputs["out"], x)
            np.testing.assert_array_equal(run.grads["x"], x)


def test_draws_from_the_generator_when_no_mask_is_given(rng):
    x = np.ones((20, 30))
    a = Dropout(0.5)(to_torch(x), generator=torch.Generator().manual_seed(3))
    b = Dropout(0.5)(to_torch(x), generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and 0 < torch.count_nonzero(a) < x.size
    out_a, _ = dropout_forward(x, 0.5, rng=np.random.default_rng(3))
    out_b, _ = dropout_forward(x, 0.5, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(out_a, out_b)


# --- statistics: keep-rate ≈ 1 - p and mean preserved, for ours and for F.dropout -------------------


def assert_dropout_statistics(out: np.ndarray, p: float) -> None:
    """out = dropout(ones(N)): kept fraction within 5 binomial SE of 1 - p, mean within 5 SE of 1.

    Kept entries are exactly 1 / (1 - p); out has mean 1 and variance p / (1 - p) per entry.
    """
    kept = out != 0
    assert abs(kept.mean() - (1 - p)) < 5 * math.sqrt(p * (1 - p) / out.size)
    assert abs(out.mean() - 1) < 5 * math.sqrt(p / (1 - p) / out.size)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[kept], 1 / (1 - p))


@pytest.mark.parametrize("p", [0.1, 0.5, 0.99])
def test_keep_rate_and_mean_numpy(p):
    out, _ = dropout_forward(np.ones(N), p, rng=np.random.default_rng(0))
    assert_dropout_statistics(out, p)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.99])
def test_keep_rate_and_mean_torch_and_f_dropout(p):
    generator = torch.Generator().manual_seed(0)
    ones = torch.ones(N, dtype=torch.float64)
    assert_dropout_statistics(Dropout(p)(ones, generator=generator).numpy(), p)
    with torch.random.fork_rng():  # F.dropout takes no generator; seed the global one, then restore it
        torch.manual_seed(0)
        assert_dropout_statistics(F.dropout(ones, p, training=True).numpy(), p)


def test_keep_masks_keep_with_probability_one_minus_p():
    for mask in (
        make_keep_mask((N,), 0.25, np.random.default_rng(1)),
        torch_keep_mask((N,), 0.25, torch.Generator().manual_seed(1)).numpy(),
    ):
        assert mask.dtype == np.bool_
        assert abs(mask.mean() - 0.75) < 5 * math.sqrt(0.25 * 0.75 / N)


# --- the CPU sampler: a 32-bit threshold, drawn a byte first ------------------------------------------


def test_keep_threshold_rounds_p_to_32_bits():
    assert keep_threshold(0.0) == 0
    assert keep_threshold(0.5) == 2**31
    assert keep_threshold(0.1) == 429496730  # round(0.1 * 2**32) = round(429496729.6)
    assert keep_threshold(1 - 2**-40) == 2**32 - 1  # would round to 2**32, which no word reaches


def test_cpu_keep_rate_is_exact_where_the_top_byte_ties():
    # threshold 2**31 + 2**23: top byte 128, low bits 2**23. A top byte of 128 (1 entry in 256) is
    # kept only when its low 24 bits reach 2**23, i.e. half the time: exact keep rate 1 - p =
    # 0.498046875. Dropping every tie would give 127/256 = 0.49609, keeping them 0.5, each > 7 SE off.
    p, n = 0.5 + 2**-9, 4_000_000
    assert keep_threshold(p) == 2**31 + 2**23
    mask = torch_keep_mask((n,), p, torch.Generator().manual_seed(5))
    assert abs(mask.double().mean().item() - (1 - p)) < 4 * math.sqrt(p * (1 - p) / n)


def test_cpu_masks_are_a_function_of_the_generator_and_advance_it():
    first, again = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    a, b = torch_keep_mask((64, 64), 0.3, first), torch_keep_mask((64, 64), 0.3, again)
    assert torch.equal(a, b)  # same state, same mask
    assert not torch.equal(torch_keep_mask((64, 64), 0.3, first), a)  # the state moved on
    with torch.random.fork_rng():  # no generator: torch's default one
        torch.manual_seed(7)
        assert torch.equal(torch_keep_mask((64, 64), 0.3), a)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_dropout_masks_in_every_float_dtype_agree_with_make_keep_mask(dtype):
    x = torch.ones(50, 40, dtype=dtype)
    out = Dropout(0.25)(x, generator=torch.Generator().manual_seed(2))
    mask = torch_keep_mask((50, 40), 0.25, torch.Generator().manual_seed(2))
    assert out.dtype == dtype
    assert torch.equal(out != 0, mask)
    assert torch.equal(out[mask], torch.full((int(mask.sum()),), 1 / 0.75, dtype=dtype))


# --- bad input -----------------------------------------------------------------------------------------


REFUSED_ALIKE = {  # label: (x, fixed, NumPy message, torch message)
    "mask shape": (
        np.ones((2, 3)),
        {"p": 0.5, "mask": np.ones(3, dtype=bool)},
        r"dropout_forward: mask has shape \(3,\) but x has shape \(2, 3\)",
        r"Dropout: mask has shape \(3,\) but x has shape \(2, 3\)",
    ),
    "mask not boolean": (
        np.ones(3),
        {"p": 0.5, "mask": np.array([1.0, 0.0, 1.0])},
        "dropout_forward: mask must be a boolean array, got dtype float64",
        "Dropout: mask must be a boolean array, got dtype torch.float64",
    ),
    "integer x": (
        np.ones(3, dtype=np.int64),
        {"p": 0.5},
        "dropout_forward: x must be a floating-point array, got dtype int64",
        "Dropout: x must be a floating-point array, got dtype torch.int64",
    ),
}


class TestBadInput:
    @pytest.mark.parametrize("p", [1.0, -0.1, 1.5])
    def test_p_outside_zero_one(self, p):
        message = rf"p must be a probability in \[0, 1\), got {p}"
        case = Case({"x": np.ones(3)}, fixed={"p": p})
        assert_refused_alike(DROPOUT, case, f"dropout_forward: {message}", f"Dropout: {message}")
        with pytest.raises(ValueError, match=f"make_keep_mask: {message}"):
            make_keep_mask((3,), p, np.random.default_rng(0))

    @pytest.mark.parametrize("label", REFUSED_ALIKE)
    def test_refused_alike(self, label):
        x, fixed, numpy_message, torch_message = REFUSED_ALIKE[label]
        assert_refused_alike(DROPOUT, Case({"x": x}, fixed=fixed), numpy_message, torch_message)

    def test_no_rng_and_no_mask(self):
        with pytest.raises(ValueError, match="dropout_forward: rng is required"):
            dropout_forward(np.ones(3), 0.5)

    def test_dout_shape_in_backward(self):
        _, cache = dropout_forward(np.ones((2, 3)), 0.5, mask=np.ones((2, 3), dtype=bool))
        with pytest.raises(ValueError, match=r"dropout_backward: dout has shape \(3, 2\) but x has shape \(2, 3\)"):
            dropout_backward(np.ones((3, 2)), cache)
