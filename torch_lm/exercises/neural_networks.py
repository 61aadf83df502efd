"""The ten "Neural Networks" exercises as checks of a learner's functions.

Each check calls the learner's function on the sheet's own inputs first, then on inputs chosen to
expose the usual mistakes (a non-square W shows a transpose, logits of 1000 an overflow, an exact
0 the ReLU kink), and compares every answer with the torch twin's (``torch_lm`` through the parity
harness; autograd for the gradients). A mismatch is named by the exercise's catalogue of
mistakes, else by the harness's generic patterns.
"""

from __future__ import annotations

import math
import re

import numpy as np
import torch

from numpy_ref.gradcheck import numerical_gradient
from numpy_ref.init import he_std, xavier_std
from torch_lm.exercises.core import Exercise, Mistake, expect, fail
from torch_lm.exercises.learner import call, require
from torch_lm.mlp import TwoLayerMLP
from torch_lm.parity import Case, run_torch, to_torch
from torch_lm.parity.components import CROSS_ENTROPY, DROPOUT, LAYERNORM, LINEAR, RELU, SOFTMAX


def _copies(*arrays):
    """Fresh copies, so a learner's in-place edit cannot change the expected values."""
    return tuple(np.array(a, dtype=np.float64, copy=True) for a in arrays)


# ----------------------------------------------------------------------------- nn1
AFFINE_MISTAKES = [
    Mistake("a transpose: W.T @ x, where z = W x with W shaped (out, in)", lambda x, W, b: W.T @ x + b),
    Mistake("the bias b is not added", lambda x, W, b: W @ x),
    Mistake("an entrywise product W * x where z = W x is a matrix product", lambda x, W, b: W * x + b),
]


def affine_cases():
    rng = np.random.default_rng(1)
    yield np.array([1.0, 2.0]), np.array([[1.0, 0.0], [0.5, -1.0]]), np.array([0.1, 0.2])  # the sheet's
    yield rng.standard_normal(2), rng.standard_normal((3, 2)), rng.standard_normal(3)  # (out, in) = (3, 2)


def check_affine(namespace) -> None:
    affine = require(namespace, "affine")
    for x, W, b in affine_cases():
        z = call("affine", affine, *_copies(x, W, b))
        expected = run_torch(LINEAR, Case({"x": x, "weight": W, "bias": b})).outputs["out"]
        expect(z, expected, "z", AFFINE_MISTAKES, (x, W, b))


# ----------------------------------------------------------------------------- nn2
RELU_MISTAKES = [Mistake("min(0, z) where ReLU is max(0, z)", lambda z: np.minimum(0.0, z))]
RELU_DERIVATIVE_MISTAKES = [
    Mistake(
        "the derivative at exactly 0 is 1 (z >= 0): it is taken as 0 (z > 0), as in torch", lambda z: (z >= 0) * 1.0
    ),
    Mistake("returns ReLU itself, not its derivative (1 where z > 0, else 0)", lambda z: np.maximum(0.0, z)),
]


def relu_cases():
    yield np.array([-1.0, 0.0, 2.0])  # the sheet's
    z = np.random.default_rng(2).standard_normal((3, 4))
    z[0, 1] = z[2, 3] = 0.0
    yield z


def check_relu(namespace) -> None:
    relu, relu_derivative = require(namespace, "relu"), require(namespace, "relu_derivative")
    for z in relu_cases():
        torch_run = run_torch(RELU, Case({"x": z}, upstream={"out": np.ones_like(z)}))
        expect(call("relu", relu, *_copies(z)), torch_run.outputs["out"], "relu(z)", RELU_MISTAKES, (z,))
        derivative = call("relu_derivative", relu_derivative, *_copies(z))
        expect(derivative, torch_run.grads["x"], "relu_derivative(z)", RELU_DERIVATIVE_MISTAKES, (z,))


# ----------------------------------------------------------------------------- nn3
TWO_LAYER_MISTAKES_H = [
    Mistake("h is not passed through ReLU", lambda x, W1, W2: W1 @ x),
    Mistake("a transpose: W1.T @ x, where h = ReLU(W1 x)", lambda x, W1, W2: np.maximum(0, W1.T @ x)),
]
TWO_LAYER_MISTAKES_Y = [
    Mistake(
        "ReLU applied to y too: the output layer is linear", lambda x, W1, W2: np.maximum(0, W2 @ np.maximum(0, W1 @ x))
    ),
    Mistake("y from W2 applied to W1 x before the ReLU", lambda x, W1, W2: W2 @ (W1 @ x)),
]


def two_layer_cases():
    yield np.array([1.0, -1.0]), np.eye(2), np.array([[1.0, 1.0]])  # the sheet's: h = [1, 0], y = [1]
    rng = np.random.default_rng(3)
    yield rng.standard_normal(2), rng.standard_normal((4, 2)), rng.standard_normal((3, 4))


def check_two_layer(namespace) -> None:
    forward = require(namespace, "two_layer_forward")
    for x, W1, W2 in two_layer_cases():
        out = call("two_layer_forward", forward, *_copies(x, W1, W2))
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise fail(
                "two_layer_forward(x, W1, W2)", "the pair (h, y)", type(out).__name__, "return h and y: return h, y"
            )
        net = TwoLayerMLP(W1.shape[1], W1.shape[0], W2.shape[0], bias=False).double()
        net.load_state_dict({"fc1.weight": to_torch(W1), "fc2.weight": to_torch(W2)})
        with torch.no_grad():
            h = net.act(net.fc1(to_torch(x)))
            y = net(to_torch(x))
        expect(out[0], h.numpy(), "h", TWO_LAYER_MISTAKES_H, (x, W1, W2))
        expect(out[1], y.numpy(), "y", TWO_LAYER_MISTAKES_Y, (x, W1, W2))


# ----------------------------------------------------------------------------- nn4
def _naive_softmax(logits):
    e = np.exp(logits)
    return e / e.sum()


SOFTMAX_CE_MISTAKES_P = [
    Mistake("p is not normalised: divide exp(logits - max) by its sum", lambda z, t: np.exp(z - z.max())),
]
SOFTMAX_CE_MISTAKES_LOSS = [
    Mistake("log base 2: the loss is in nats, -np.log(p[target])", lambda z, t: -np.log2(_naive_softmax(z)[t])),
    Mistake("a sign: the loss is -log p[target]", lambda z, t: np.log(_naive_softmax(z)[t])),
    Mistake(
        "the loss adds -log p over every class; only the target's counts", lambda z, t: -np.log(_naive_softmax(z)).sum()
    ),
]


def softmax_ce_cases():
    yield np.array([2.0, 1.0, 0.0]), 0  # the sheet's
    yield np.array([0.5, -1.2, 3.0, 0.1]), 3
    yield np.array([1000.0, 0.0, -1000.0]), 0  # exp(1000) overflows unless the max is subtracted
    yield np.array([50.0, 0.0, -50.0]), 1


def check_softmax_cross_entropy(namespace) -> None:
    function = require(namespace, "softmax_cross_entropy")
    for logits, target in softmax_ce_cases():
        out = call("softmax_cross_entropy", function, *_copies(logits), target)
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise fail(
                "softmax_cross_entropy(logits, target)", "the pair (p, loss)", type(out).__name__, "return p, loss"
            )
        p = run_torch(SOFTMAX, Case({"x": logits})).outputs["out"]
        loss = run_torch(CROSS_ENTROPY, Case({"logits": logits[None]}, {"targets": np.array([target])})).outputs["loss"]
        expect(out[0], p, "p", SOFTMAX_CE_MISTAKES_P, (logits, target))
        expect(out[1], loss, "loss", SOFTMAX_CE_MISTAKES_LOSS, (logits, target), {"ln 2": math.log(2)})


# ----------------------------------------------------------------------------- nn5
AFFINE_GRAD_MISTAKES = [
    Mistake("a transpose: dW[i, j] = dZ[i] x[j], np.outer(dZ, x)", lambda dZ, x: np.outer(x, dZ)),
    Mistake("an entrywise product dZ * x where dW is the outer product", lambda dZ, x: dZ * x),
    Mistake("a dot product where dW is the outer product", lambda dZ, x: np.dot(dZ, x)),
]


def affine_grad_cases():
    yield np.array([2.0, -1.0]), np.array([3.0, 4.0])  # the sheet's
    rng = np.random.default_rng(5)
    yield rng.standard_normal(3), rng.standard_normal(2)


def check_affine_weight_grad(namespace) -> None:
    function = require(namespace, "affine_weight_grad")
    for dZ, x in affine_grad_cases():
        dW = call("affine_weight_grad", function, *_copies(dZ, x))
        case = Case({"x": x, "weight": np.zeros((len(dZ), len(x))), "bias": np.zeros(len(dZ))}, upstream={"out": dZ})
        expect(dW, run_torch(LINEAR, case).grads["weight"], "dW", AFFINE_GRAD_MISTAKES, (dZ, x))


# ----------------------------------------------------------------------------- nn6
CENTRAL_DIFFERENCE_MISTAKES = [
    Mistake("divides by eps: w + eps and w - eps are 2 eps apart", lambda f, w, h: (f(w + h) - f(w - h)) / h),
    Mistake(
        "a one-sided difference (f(w + eps) - f(w)) / eps: error O(eps), not O(eps²)",
        lambda f, w, h: (f(w + h) - f(w)) / h,
    ),
    Mistake(
        "a one-sided difference (f(w) - f(w - eps)) / eps: error O(eps), not O(eps²)",
        lambda f, w, h: (f(w) - f(w - h)) / h,
    ),
]


def central_difference_cases():
    yield (lambda a: a**2), 3.0, 1e-5  # the sheet's: about 6
    yield (lambda a: a**3), 1.5, 1e-3
    yield math.sin, 0.7, 1e-4


def check_central_difference(namespace) -> None:
    function = require(namespace, "central_difference")
    for f, w, h in central_difference_cases():
        got = call("central_difference", function, f, w, h)
        expected = numerical_gradient(lambda a, f=f: float(f(float(a[0]))), np.array([w]), h)[0]
        expect(got, expected, f"central_difference at w = {w}", CENTRAL_DIFFERENCE_MISTAKES, (f, w, h))


# ----------------------------------------------------------------------------- nn7
XAVIER_MISTAKES = [
    Mistake("the variance, not the std: take the square root", lambda i, o: 2 / (i + o)),
    Mistake(
        "sqrt(1 / (fan_in + fan_out)): Glorot's variance is 2 / (fan_in + fan_out)", lambda i, o: math.sqrt(1 / (i + o))
    ),
    Mistake("only fan_in: Glorot averages both, sqrt(2 / (fan_in + fan_out))", lambda i, o: math.sqrt(1 / i)),
]
HE_MISTAKES = [
    Mistake("sqrt(1 / fan_in), LeCun's: He doubles it for a ReLU, sqrt(2 / fan_in)", lambda i, o: math.sqrt(1 / i)),
    Mistake("the variance, not the std: take the square root", lambda i, o: 2 / i),
]


FANS = [(100, 200), (3, 7), (784, 256)]  # the sheet's first; the others tell the mistakes apart


def check_init_scales(namespace) -> None:
    xavier, he = require(namespace, "xavier_std"), require(namespace, "he_std")
    answers = [(call("xavier_std", xavier, i, o), call("he_std", he, i), (i, o)) for i, o in FANS]
    for x_got, he_got, (i, o) in answers:
        also_x = [(a[0], a[2]) for a in answers]
        also_he = [(a[1], a[2]) for a in answers]
        expect(x_got, xavier_std(i, o), f"xavier_std({i}, {o})", XAVIER_MISTAKES, (i, o), also=also_x)
        expect(he_got, he_std(i), f"he_std({i})", HE_MISTAKES, (i, o), also=also_he)


# ----------------------------------------------------------------------------- nn8
DROPOUT_MISTAKES = [
    Mistake(
        "divides by p_drop: inverted dropout divides by the keep probability 1 - p_drop", lambda h, m, p: h * m / p
    ),
    Mistake(
        "multiplies by 1 - p_drop, the test-time scaling of classic dropout: divide by it",
        lambda h, m, p: h * m * (1 - p),
    ),
    Mistake("the mask inverted: mask is 1 for a unit kept", lambda h, m, p: h * (1 - m) / (1 - p)),
]


def dropout_cases():
    yield np.array([1.0, 1.0, 1.0]), np.array([1.0, 0.0, 1.0]), 1 / 3  # the sheet's: [1.5, 0, 1.5]
    rng = np.random.default_rng(8)
    for p in (0.5, 0.1, 0.9):
        yield rng.standard_normal((3, 4)), (rng.random((3, 4)) >= p).astype(float), p


def check_inverted_dropout(namespace) -> None:
    function = require(namespace, "inverted_dropout")
    for h, mask, p in dropout_cases():
        got = call("inverted_dropout", function, *_copies(h, mask), p)
        expected = run_torch(DROPOUT, Case({"x": h}, {"p": p, "mask": mask.astype(bool)})).outputs["out"]
        expect(got, expected, "out", DROPOUT_MISTAKES, (h, mask, p), {"1/(1 - p_drop)": 1 / (1 - p)})


# ----------------------------------------------------------------------------- nn9
LAYER_NORM_MISTAKES = [
    Mistake(
        "an unbiased variance (ddof=1): LayerNorm divides by D, x.var()",
        lambda x, e: (x - x.mean()) / np.sqrt(x.var(ddof=1) + e),
    ),
    Mistake("eps added outside the square root: sqrt(var + eps)", lambda x, e: (x - x.mean()) / (x.std() + e)),
    Mistake("no eps: sqrt(var + eps) keeps a constant vector finite", lambda x, e: (x - x.mean()) / x.std()),
    Mistake("the eps argument is ignored (1e-5 written in)", lambda x, e: (x - x.mean()) / np.sqrt(x.var() + 1e-5)),
]


def layer_norm_cases():
    yield np.array([1.0, 2.0, 3.0]), 1e-5  # the sheet's
    rng = np.random.default_rng(9)
    yield 3.0 + 5.0 * rng.standard_normal(7), 1e-5
    yield np.array([0.5, 1.5, -2.0, 4.0]), 0.1
    yield np.full(4, 2.0), 1e-5  # zero variance: 0 / sqrt(eps) = 0


def check_layer_norm(namespace) -> None:
    function = require(namespace, "layer_norm")
    for x, eps in layer_norm_cases():
        got = call("layer_norm", function, *_copies(x), eps=eps)
        case = Case({"x": x, "weight": np.ones_like(x), "bias": np.zeros_like(x)}, {"eps": eps})
        expect(got, run_torch(LAYERNORM, case).outputs["out"], "y", LAYER_NORM_MISTAKES, (x, eps))


# ----------------------------------------------------------------------------- nn10
CHECKLIST_THEMES = {  # theme: what a line about it mentions
    "tensor shapes": r"shape",
    "overfitting one tiny batch": r"overfit|memori[sz]|tiny batch|small batch|single batch|one batch",
    "activation statistics": r"activation",
    "gradient norms": r"grad",
}


def check_checklist(namespace) -> None:
    function = require(namespace, "diagnostics_checklist")
    checks = call("diagnostics_checklist", function)
    if not isinstance(checks, (list, tuple)) or not all(isinstance(c, str) for c in checks):
        raise fail(
            "diagnostics_checklist()",
            "a list of strings",
            type(checks).__name__,
            "return the checks as a list of strings",
        )
    if len(checks) < 4:
        raise fail("diagnostics_checklist()", "at least 4 checks", f"{len(checks)}", "write one line per diagnostic")
    for theme, pattern in CHECKLIST_THEMES.items():
        if not any(re.search(pattern, c, re.IGNORECASE) for c in checks):
            raise fail("diagnostics_checklist()", f"a check of {theme}", "none", f"add a line about {theme}")


EXERCISES = [
    Exercise("nn1", "affine layer", ("affine",), "affine(x, W, b) -> z", check_affine),
    Exercise(
        "nn2",
        "ReLU and its derivative",
        ("relu", "relu_derivative"),
        "relu(z) -> a; relu_derivative(z) -> da/dz",
        check_relu,
    ),
    Exercise(
        "nn3", "two-layer forward", ("two_layer_forward",), "two_layer_forward(x, W1, W2) -> (h, y)", check_two_layer
    ),
    Exercise(
        "nn4",
        "softmax cross-entropy",
        ("softmax_cross_entropy",),
        "softmax_cross_entropy(logits, target) -> (p, loss)",
        check_softmax_cross_entropy,
    ),
    Exercise(
        "nn5", "affine gradient", ("affine_weight_grad",), "affine_weight_grad(dZ, x) -> dW", check_affine_weight_grad
    ),
    Exercise(
        "nn6",
        "gradient check",
        ("central_difference",),
        "central_difference(f, w, eps) -> float",
        check_central_difference,
    ),
    Exercise(
        "nn7",
        "initialisation scales",
        ("xavier_std", "he_std"),
        "xavier_std(fan_in, fan_out) -> float; he_std(fan_in) -> float",
        check_init_scales,
    ),
    Exercise(
        "nn8",
        "inverted dropout",
        ("inverted_dropout",),
        "inverted_dropout(h, mask, p_drop) -> out",
        check_inverted_dropout,
    ),
    Exercise("nn9", "LayerNorm", ("layer_norm",), "layer_norm(x, eps=1e-5) -> y", check_layer_norm),
    Exercise(
        "nn10",
        "diagnostics checklist",
        ("diagnostics_checklist",),
        "diagnostics_checklist() -> list[str]",
        check_checklist,
    ),
]
