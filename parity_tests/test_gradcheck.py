"""The central-difference checker itself: if it were wrong, every backward test would be void.

The checks that a wrong backward is caught run the way every component is checked: a small
Component with a right and a wrong hand-written backward, against central differences
(``central_difference_errors``) and against torch autograd (``parity_mismatches``), each of which
must catch the wrong one on its own.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from numpy_ref.gradcheck import numerical_gradient, numerical_gradient_array, rel_error
from torch_lm.parity import Case, Component, central_difference_errors, parity_mismatches

TOLERANCE = 1e-7  # docs/DESIGN.md §2: rel_error bound for smooth functions in float64


def with_backwards(name: str, numpy_forward, torch_forward, right, wrong) -> tuple[Component, Component]:
    """The same function twice, once with the ``right`` backward and once with the ``wrong`` one."""
    return tuple(
        Component(f"{name} ({kind})", numpy_forward, torch_forward, backward)
        for kind, backward in (("right", right), ("wrong", wrong))
    )


def errors_of(component: Component, case: Case) -> tuple[float, list]:
    """rel_error of the backward against central differences, and its mismatches with autograd."""
    (error,) = central_difference_errors(component, case).values()
    return error, parity_mismatches(component, case)


# sum(sin(x)): the gradient is cos(x); -cos(x) has the sign wrong.
SUM_SIN, SUM_SIN_WRONG_SIGN = with_backwards(
    "sum of sines",
    lambda inputs, fixed: ({"out": np.sum(np.sin(inputs["x"]))}, inputs["x"]),
    lambda t, fixed: {"out": torch.sin(t["x"]).sum()},
    lambda up, x: {"x": up["out"] * np.cos(x)},
    lambda up, x: {"x": -up["out"] * np.cos(x)},
)

# u @ W @ v with fixed u, v: the gradient is outer(u, v); its transpose has the right shape.
BILINEAR, BILINEAR_TRANSPOSED = with_backwards(
    "u W v",
    lambda inputs, fixed: ({"out": fixed["u"] @ inputs["w"] @ fixed["v"]}, (fixed["u"], fixed["v"])),
    lambda t, fixed: {"out": fixed["u"] @ t["w"] @ fixed["v"]},
    lambda up, uv: {"w": up["out"] * np.outer(*uv)},
    lambda up, uv: {"w": up["out"] * np.outer(*uv).T},
)


def _slipped_exp_backward(up, x):
    """exp's gradient with one entry off by one part in 10^6."""
    dx = up["out"] * np.exp(x)
    dx[1, 2] *= 1 + 1e-6
    return {"x": dx}


# exp(x) elementwise; the slipped backward is wrong in a single entry, by a relative 1e-6.
EXP, EXP_SLIPPED = with_backwards(
    "exp",
    lambda inputs, fixed: ({"out": np.exp(inputs["x"])}, inputs["x"]),
    lambda t, fixed: {"out": torch.exp(t["x"])},
    lambda up, x: {"x": up["out"] * np.exp(x)},
    _slipped_exp_backward,
)


def test_golden_derivative_of_square_at_3_is_6():
    w = np.array([3.0])
    grad = numerical_gradient(lambda w: float(np.sum(w**2)), w)
    assert grad == pytest.approx([6.0], abs=1e-8)


def test_x_is_restored_bit_for_bit(rng):
    x = rng.standard_normal((3, 4))
    before = x.copy()
    numerical_gradient(lambda x: float(np.sum(np.sin(x))), x)
    numerical_gradient_array(np.sin, x, np.ones_like(x))
    np.testing.assert_array_equal(x, before)


def test_x_is_restored_when_f_raises():
    x = np.array([1.0, 2.0])

    def explode(x):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        numerical_gradient(explode, x)
    np.testing.assert_array_equal(x, [1.0, 2.0])


@settings(max_examples=25, deadline=None)
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=3), seed=st.integers(0, 2**32 - 1))
def test_matches_analytic_gradient_of_smooth_function(shape, seed):
    # f(x) = sum(c * exp(x)) with c in [0.5, 2], x in [-1, 1]: the gradient c * exp(x) stays
    # well away from 0, so the elementwise relative error measures the checker, not luck.
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, shape)
    c = rng.uniform(0.5, 2, shape)
    grad = numerical_gradient(lambda x: float(np.sum(c * np.exp(x))), x)
    assert rel_error(grad, c * np.exp(x)) <= TOLERANCE


def test_array_version_is_gradient_of_weighted_sum(rng):
    x = rng.uniform(-1, 1, (2, 3))
    dout = rng.uniform(0.5, 2, (2, 3))
    grad = numerical_gradient_array(np.exp, x, dout)
    assert rel_error(grad, dout * np.exp(x)) <= TOLERANCE


def test_detects_a_wrong_sign(rng):
    case = Case({"x": rng.uniform(0.1, 1.4, 5)})  # cos(x) > 0 here, so -cos(x) is wrong everywhere
    error, found = errors_of(SUM_SIN, case)
    assert error <= TOLERANCE and not found
    error, found = errors_of(SUM_SIN_WRONG_SIGN, case)
    assert error == pytest.approx(1.0)
    assert [m.quantity for m in found] == ["numpy vs torch: grad[x]"] and found[0].n_bad == 5


def test_detects_a_small_relative_slip(rng):
    # One entry off by one part in 10^6 gives rel_error 1e-6 / 2, already over the 1e-7 bound.
    x = rng.uniform(-1, 1, (3, 3))
    case = Case({"x": x}, upstream={"out": np.ones_like(x)})
    error, found = errors_of(EXP, case)
    assert error <= TOLERANCE and not found
    error, found = errors_of(EXP_SLIPPED, case)
    assert error > TOLERANCE
    assert [(m.quantity, m.index, m.n_bad) for m in found] == [("numpy vs torch: grad[x]", (1, 2), 1)]


def test_detects_a_transposed_gradient(rng):
    # d/dW (u @ W @ v) = outer(u, v); its transpose has the right shape but wrong values.
    u, v = rng.standard_normal(3), rng.standard_normal(3)
    case = Case({"w": rng.standard_normal((3, 3))}, {"u": u, "v": v})
    error, found = errors_of(BILINEAR, case)
    assert error <= TOLERANCE and not found
    error, found = errors_of(BILINEAR_TRANSPOSED, case)
    assert error > 1e-2
    assert [m.quantity for m in found] == ["numpy vs torch: grad[w]"]


class TestRelError:
    def test_identical_arrays_give_zero(self, rng):
        a = rng.standard_normal((4, 5))
        assert rel_error(a, a.copy()) == 0.0

    def test_is_the_largest_elementwise_ratio(self):
        # |1 - 1.1| / 2.1 for the first entry; the second agrees exactly.
        assert rel_error(np.array([1.0, 5.0]), np.array([1.1, 5.0])) == pytest.approx(0.1 / 2.1)

    def test_is_symmetric_and_scale_invariant(self, rng):
        a, b = rng.standard_normal(6), rng.standard_normal(6)
        assert rel_error(a, b) == rel_error(b, a)
        assert rel_error(1e3 * a, 1e3 * b) == pytest.approx(rel_error(a, b))

    def test_opposite_signs_give_one(self):
        assert rel_error(np.array([2.0]), np.array([-2.0])) == 1.0

    def test_both_zero_is_zero_not_nan(self):
        assert rel_error(np.zeros(3), np.zeros(3)) == 0.0

    def test_zero_against_nonzero_is_large(self):
        assert rel_error(np.array([0.0]), np.array([1e-3])) == 1.0

    def test_accepts_scalars(self):
        assert rel_error(2.0, 2.0) == 0.0


class TestBadInput:
    def test_rel_error_shape_mismatch(self):
        with pytest.raises(ValueError, match=r"rel_error: a has shape \(2,\) but b has shape \(3,\)"):
            rel_error(np.zeros(2), np.zeros(3))

    def test_integer_x(self):
        with pytest.raises(ValueError, match="numerical_gradient: x must be a floating-point array, got dtype int64"):
            numerical_gradient(lambda x: 0.0, np.array([1, 2]))

    @pytest.mark.parametrize("h", [0.0, -1e-6])
    def test_non_positive_step(self, h):
        with pytest.raises(ValueError, match=f"numerical_gradient_array: h must be a finite number > 0, got {h}"):
            numerical_gradient_array(np.sin, np.ones(2), np.ones(2), h=h)

    def test_non_scalar_f(self):
        with pytest.raises(ValueError, match=r"numerical_gradient: f must return a scalar, got shape \(2,\)"):
            numerical_gradient(np.sin, np.ones(2))

    def test_f_output_not_shaped_like_dout(self):
        with pytest.raises(ValueError, match=r"f\(x \+ h\) has shape \(2,\) but dout has shape \(3,\)"):
            numerical_gradient_array(np.sin, np.ones(2), np.ones(3))
