"""The parity harness itself: if it let a difference through, every parity test would be void. Each
check is shown to pass on a right component and to fail on one wrong entry, a wrong scale, a wrong
dtype, a wrong shape; the likely causes name the patterns they are built for."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch.autograd.gradcheck import GradcheckError

from torch_lm.parity import (
    Case,
    assert_central_differences,
    assert_gradcheck,
    assert_parity,
    assert_refused_alike,
    assert_same,
    mismatches,
    parity_mismatches,
    tolerance,
)
from torch_lm.parity.causes import likely_cause
from torch_lm.parity.components import LINEAR, SOFTMAX


def linear_case(seed=0) -> Case:
    rng = np.random.default_rng(seed)
    return Case(
        {"x": rng.standard_normal((4, 3)), "weight": rng.standard_normal((2, 3)), "bias": rng.standard_normal(2)}
    )


def with_backward(change) -> object:
    """LINEAR whose NumPy backward is changed by ``change(grads)``."""

    def backward(upstream, cache):
        return change(LINEAR.numpy_backward(upstream, cache))

    return dataclasses.replace(LINEAR, numpy_backward=backward)


# ----------------------------------------------------------------------------- comparison
def test_tolerance_is_the_less_precise_dtypes():
    assert tolerance("float64") == (1e-7, 1e-7)
    assert tolerance("float64", "float32") == tolerance("float32") == (1.3e-6, 1e-5)
    assert tolerance("int64") == (0.0, 0.0)


def test_first_differing_entry_is_named_with_its_values():
    expected = np.arange(6.0).reshape(2, 3)
    got = expected.copy()
    got[1, 0] += 1e-3
    got[1, 2] += 1e-3
    [found] = mismatches(got, expected, "grad")
    assert (found.index, found.n_bad, found.size) == ((1, 0), 2, 6)
    assert str(found) == "grad[1, 0]: expected 3 got 3.001 (2 of 6 entries differ)"


def test_within_tolerance_agrees_and_just_outside_does_not():
    expected = np.array([1.0, 100.0])
    assert not mismatches(expected * (1 + 0.5e-7), expected)  # float64: rtol 1e-7
    assert mismatches(expected * (1 + 5e-7), expected)


@pytest.mark.parametrize(
    "got, expected, kind",
    [
        (np.zeros((3, 2)), np.zeros((2, 3)), "shape"),
        (np.zeros(3, np.float64), np.zeros(3, np.float32), "dtype"),
        (torch.zeros(3, dtype=torch.float32), np.zeros(3, np.float64), "dtype"),
    ],
)
def test_shape_and_dtype_differences_are_mismatches(got, expected, kind):
    [found] = mismatches(got, expected)
    assert found.kind == kind


def test_nan_never_agrees_and_equal_infinities_do():
    assert mismatches(np.array([np.nan]), np.array([np.nan]))
    assert not mismatches(np.array([np.inf, -np.inf]), np.array([np.inf, -np.inf]))


def test_dicts_compare_key_by_key_and_a_missing_key_is_a_mismatch():
    expected = {"weight": np.ones(2), "bias": np.zeros(1)}
    found = mismatches({"weight": np.ones(2) * 2}, expected, "grad")
    assert {(m.quantity, m.kind) for m in found} == {("grad[bias]", "missing"), ("grad[weight]", "value")}
    with pytest.raises(AssertionError, match=r"grad\[bias\]: missing"):
        assert_same({"weight": np.ones(2)}, expected, "grad")


# ----------------------------------------------------------------------------- the battery
@pytest.mark.parametrize("dtypes", [(np.float64, torch.float64), (np.float32, torch.float32)], ids=["f64", "f32"])
def test_a_right_component_passes_every_check(dtypes):
    case = linear_case()
    assert_parity(LINEAR, case, dtypes)
    assert_central_differences(LINEAR, case)
    assert_gradcheck(LINEAR, case)


def test_one_wrong_gradient_entry_fails_parity_and_central_differences():
    def nudge(grads):
        grads["weight"][1, 2] *= 1 + 1e-5
        return grads

    wrong = with_backward(nudge)
    [found] = parity_mismatches(wrong, linear_case())
    assert found.quantity == "numpy vs torch: grad[weight]" and found.index == (1, 2)
    with pytest.raises(AssertionError):
        assert_central_differences(wrong, linear_case())


def test_a_silent_upcast_fails_parity_in_float32():
    def upcast(inputs, fixed):
        out, cache = LINEAR.numpy_forward(inputs, fixed)
        return {"out": out["out"].astype(np.float64)}, cache

    wrong = dataclasses.replace(LINEAR, numpy_forward=upcast)
    found = parity_mismatches(wrong, linear_case(), (np.float32, torch.float32))
    assert [m.kind for m in found] == ["dtype"]


def test_a_wrong_torch_side_fails_against_the_witness():
    wrong = dataclasses.replace(SOFTMAX, torch_forward=lambda t, f: {"out": torch.exp(t["x"]) / 2})
    found = parity_mismatches(wrong, Case({"x": np.array([[0.5, -1.0, 2.0]])}))
    assert any(m.quantity.startswith("torch vs witness") for m in found)


def test_gradcheck_fails_for_a_torch_function_with_a_wrong_backward():
    class WrongSquare(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x**2

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return grad * x  # the derivative is 2x

    wrong = dataclasses.replace(LINEAR, torch_forward=lambda t, f: {"out": WrongSquare.apply(t["x"])})
    with pytest.raises(GradcheckError):
        assert_gradcheck(wrong, Case({"x": np.array([0.5, -1.5])}))


def test_refused_alike_needs_a_value_error_on_both_sides():
    bad = Case({"x": np.ones((3, 4)), "weight": np.ones((5, 6))})
    assert_refused_alike(LINEAR, bad, "x has shape", "x has shape")
    lenient = dataclasses.replace(LINEAR, torch_forward=lambda t, f: {"out": t["x"]})
    with pytest.raises(AssertionError, match="torch: no ValueError"):
        assert_refused_alike(lenient, bad, "x has shape")


# ----------------------------------------------------------------------------- likely causes
def cause_of(got, expected, **factors) -> str | None:
    [found] = mismatches(np.asarray(got, float), np.asarray(expected, float))
    return likely_cause(found, factors)


def test_causes_name_the_patterns():
    expected = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    assert "missing factor 1/N" in cause_of(expected * 2, expected, **{"1/N": 0.5})
    assert "a factor 1/(1 - p) too many" in cause_of(expected / 0.7, expected, **{"1/(1 - p)": 1 / 0.7})
    assert "a sign" in cause_of(-expected, expected)
    assert "constant factor" in cause_of(expected * 3.7, expected)
    assert "a transpose" in cause_of(expected.T, expected)
    square = np.array([[1.0, 2.0], [3.0, 4.0]])
    assert "transposed" in cause_of(square.T, square)
    rows = expected.copy()
    rows[1, 0] += 1
    assert "only rows [1]" in cause_of(rows, expected)
    assert "overflow" in cause_of([np.nan, 1.0], [0.5, 1.0])
    assert "-inf" in cause_of([-np.inf, 0.0], [-1000.0, 0.0])
    assert cause_of([1.0, 2.5], [1.0, 2.0]) is None
