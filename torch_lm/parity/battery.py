"""The parity battery: one component, run by both engines on the same case, compared.

A ``Component`` is a function of named float arrays (``Case.inputs``, the ones gradients are taken
with respect to) and of everything else (``Case.fixed``: token ids, masks, settings), written
twice:

* the NumPy side as a forward/backward pair with a cache, cs231n style:
  ``numpy_forward(inputs, fixed) -> (outputs, cache)`` and
  ``numpy_backward(upstream, cache) -> {input name: gradient}``;
* the torch side as ``torch_forward(inputs, fixed) -> outputs``, tensors in and out, gradients by
  autograd; ``witness`` has the same signature and calls torch's own built-in where one exists.

Outputs are dicts of arrays keyed by name. ``upstream`` holds d loss / d output for every output a
gradient flows back from: 1 for a scalar output (a loss), seeded normal draws for an array.

The checks, each usable alone and each returning what it found rather than only raising:

* ``parity_mismatches``: outputs and every gradient of NumPy against torch in the dtype pair
  asked for (float64 and float32), and torch against its witness; shapes and dtypes included.
* ``central_difference_errors``: every NumPy gradient against central differences of the NumPy
  forward (float64), so a disagreement can be pinned on one side.
* ``assert_gradcheck``: ``torch.autograd.gradcheck`` of the torch forward, every input at once.
* ``assert_refused_alike``: a bad case raises the same ``ValueError`` on both sides.

``parity_tests/`` runs every component through these; ``torch_lm.exercises`` runs a learner's
code through them with the learner's functions on the NumPy side.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from numpy_ref.gradcheck import numerical_gradient_array, rel_error
from torch_lm.parity.causes import likely_cause
from torch_lm.parity.compare import mismatches

NumpyForward = Callable[[dict, dict], tuple[dict, Any]]
NumpyBackward = Callable[[dict, Any], dict]
TorchForward = Callable[[dict, dict], dict]

# (NumPy dtype, torch dtype) pairs every parity check runs in.
DTYPE_PAIRS = [(np.float64, torch.float64), (np.float32, torch.float32)]
DTYPE_IDS = ["float64", "float32"]


@dataclass(frozen=True)
class Case:
    """One call of a component: float ``inputs`` (differentiated), ``fixed`` arguments (not), the
    upstream gradient (``None``: drawn from ``seed``), and a label for messages."""

    inputs: Mapping[str, np.ndarray] = field(default_factory=dict)
    fixed: Mapping[str, Any] = field(default_factory=dict)
    upstream: Mapping[str, np.ndarray] | None = None
    seed: int = 0
    label: str = ""


@dataclass(frozen=True)
class Component:
    """A component in both engines (see the module docstring for the signatures).

    ``differentiated`` names the outputs a gradient flows back from (``None``: every float output);
    a component without ``numpy_backward`` is compared on its outputs alone.
    """

    name: str
    numpy_forward: NumpyForward
    torch_forward: TorchForward
    numpy_backward: NumpyBackward | None = None
    witness: TorchForward | None = None
    differentiated: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Run:
    """What one engine computed: outputs and gradients (``None`` when nothing is differentiated)."""

    outputs: dict[str, Any]
    grads: dict[str, Any] | None


# ----------------------------------------------------------------------------- running one engine
def numpy_inputs(case: Case, dtype) -> tuple[dict, dict]:
    """The case's inputs and fixed arguments for the NumPy side: float arrays cast to ``dtype``."""
    inputs = {k: np.asarray(v).astype(dtype) for k, v in case.inputs.items()}
    return inputs, {k: _each_array(v, lambda a: _cast_float(a, dtype)) for k, v in case.fixed.items()}


def torch_inputs(case: Case, dtype: torch.dtype, requires_grad: bool = True) -> tuple[dict, dict]:
    """The same for the torch side: tensors (inputs as grad leaves), other values unchanged."""
    np_dtype = _numpy_dtype(dtype)
    inputs = {
        k: _tensor(np.asarray(v).astype(np_dtype), dtype).requires_grad_(requires_grad) for k, v in case.inputs.items()
    }
    fixed = {k: _each_array(v, lambda a: _tensor(_cast_float(a, np_dtype), dtype)) for k, v in case.fixed.items()}
    return inputs, fixed


def upstream_for(component: Component, case: Case, outputs: Mapping[str, Any], dtype) -> dict[str, np.ndarray]:
    """d loss / d output for every differentiated output: the case's own, or 1 for a scalar and
    standard normal draws (seeded by ``case.seed``, in sorted name order) for an array."""
    names = differentiated_outputs(component, outputs)
    if case.upstream is not None:
        return {k: np.asarray(case.upstream[k]).astype(dtype) for k in names}
    rng = np.random.default_rng(case.seed)
    upstream = {}
    for name in sorted(names):
        shape = np.shape(outputs[name])
        upstream[name] = np.ones(shape, dtype) if shape == () else rng.standard_normal(shape).astype(dtype)
    return upstream


def differentiated_outputs(component: Component, outputs: Mapping[str, Any]) -> tuple[str, ...]:
    if component.differentiated is not None:
        return tuple(k for k in component.differentiated if k in outputs)  # a loss needs targets
    return tuple(k for k, v in outputs.items() if _is_float(v))


def run_numpy(component: Component, case: Case, dtype=np.float64) -> Run:
    """The NumPy side's outputs and, when it has a backward, its gradient for every input."""
    inputs, fixed = numpy_inputs(case, dtype)
    outputs, cache = component.numpy_forward(inputs, fixed)
    if component.numpy_backward is None or not case.inputs or not differentiated_outputs(component, outputs):
        return Run(dict(outputs), None)
    upstream = upstream_for(component, case, outputs, dtype)
    return Run(dict(outputs), dict(component.numpy_backward(upstream, cache)))


def run_torch(component: Component, case: Case, dtype=torch.float64, forward: TorchForward | None = None) -> Run:
    """The torch side's outputs (as NumPy arrays) and autograd's gradient for every input.

    ``forward`` replaces ``component.torch_forward`` (the witness runs this way).
    """
    forward = forward or component.torch_forward
    differentiate = component.numpy_backward is not None and bool(case.inputs)
    inputs, fixed = torch_inputs(case, dtype, requires_grad=differentiate)
    outputs = forward(inputs, fixed)
    as_numpy = {k: _detached(v) for k, v in outputs.items()}
    if not differentiate or not differentiated_outputs(component, as_numpy):
        return Run(as_numpy, None)
    upstream = upstream_for(component, case, as_numpy, _numpy_dtype(dtype))
    names = list(upstream)
    grads = torch.autograd.grad(
        [outputs[k] for k in names],
        list(inputs.values()),
        grad_outputs=[_tensor(upstream[k], dtype) for k in names],
        allow_unused=True,
    )
    return Run(as_numpy, {k: _grad_or_zeros(g, inputs[k]) for k, g in zip(inputs, grads)})


# ----------------------------------------------------------------------------- the checks
def parity_mismatches(component: Component, case: Case, dtypes=DTYPE_PAIRS[0], rtol=None, atol=None) -> list:
    """Outputs and every gradient of NumPy against torch in ``dtypes`` = (NumPy dtype, torch dtype),
    then torch against the witness; every ``Mismatch`` found, its quantity naming the pair.

    In each pair the first side is "got" and the second "expected": autograd's gradients are the
    standard the hand-written ones are held to, and torch's built-in the standard for autograd's.
    """
    return _parity(component, case, dtypes, rtol, atol)[0]


def assert_parity(component: Component, case: Case, dtypes=DTYPE_PAIRS[0], rtol=None, atol=None) -> Run:
    """``parity_mismatches`` as an assertion; returns the NumPy run for further checks."""
    found, hand_written = _parity(component, case, dtypes, rtol, atol)
    if found:
        raise AssertionError(_message(component, case, found))
    return hand_written


def _parity(component: Component, case: Case, dtypes, rtol, atol) -> tuple[list, Run]:
    np_dtype, torch_dtype = dtypes
    hand_written, autograd = run_numpy(component, case, np_dtype), run_torch(component, case, torch_dtype)
    found = _run_mismatches(hand_written, autograd, "numpy vs torch", rtol, atol)
    if component.witness is not None:
        witness = run_torch(component, case, torch_dtype, forward=component.witness)
        found += _run_mismatches(autograd, witness, "torch vs witness", rtol, atol, only=set(witness.outputs))
    return found, hand_written


def central_difference_errors(component: Component, case: Case, h: float = 1e-6, richardson: bool = False) -> dict:
    """rel_error of every NumPy gradient against central differences of the NumPy forward, float64.

    The differenced function is ``sum_k <output_k, upstream_k>`` over the differentiated outputs.
    ``richardson`` combines steps h and 2h, ``(4 D(h) - D(2h)) / 3``, whose truncation error is
    O(h^4): a step as large as 1e-3 then keeps rounding noise small on small gradient entries.
    """
    inputs, fixed = numpy_inputs(case, np.float64)
    outputs, cache = component.numpy_forward(inputs, fixed)
    upstream = upstream_for(component, case, outputs, np.float64)
    grads = component.numpy_backward(upstream, cache)
    names = list(upstream)
    weights = np.concatenate([upstream[k].ravel() for k in names])

    def flat_outputs(_):
        out, _cache = component.numpy_forward(inputs, fixed)
        return np.concatenate([np.asarray(out[k], np.float64).ravel() for k in names])

    errors = {}
    for key in inputs:
        numeric = numerical_gradient_array(flat_outputs, inputs[key], weights, h)
        if richardson:
            numeric = (4 * numeric - numerical_gradient_array(flat_outputs, inputs[key], weights, 2 * h)) / 3
        errors[key] = rel_error(grads[key], numeric)
    return errors


def assert_central_differences(
    component: Component, case: Case, bound: float = 1e-7, h: float = 1e-6, richardson: bool = False
) -> dict:
    """Every gradient within ``bound`` (rel_error) of central differences; returns the errors."""
    errors = central_difference_errors(component, case, h, richardson)
    assert max(errors.values(), default=0.0) <= bound, (
        f"{' '.join(filter(None, (component.name, case.label)))}: {errors}"
    )
    return errors


def assert_gradcheck(
    component: Component, case: Case, forward: TorchForward | None = None, outputs: tuple[str, ...] | None = None
) -> None:
    """``torch.autograd.gradcheck`` of the torch forward in float64 with every input differentiated,
    through the differentiated outputs (or ``outputs``: a model's logits as well as its loss)."""
    forward = forward or component.torch_forward
    inputs, fixed = torch_inputs(case, torch.float64)
    names = list(inputs)
    probe = {k: _detached(v) for k, v in forward(inputs, fixed).items()}
    outputs = outputs or differentiated_outputs(component, probe)

    def function(*values):
        result = forward(dict(zip(names, values)), fixed)
        return tuple(result[k] for k in outputs)

    assert torch.autograd.gradcheck(function, tuple(inputs.values())), " ".join(
        filter(None, (component.name, case.label))
    )


def assert_refused_alike(component: Component, case: Case, message: str, torch_message: str | None = None) -> None:
    """Both sides raise ``ValueError`` matching ``message`` (the torch side ``torch_message`` when
    its wording differs) for the case's inputs, used as given (no dtype cast)."""
    inputs = {k: np.asarray(v) for k, v in case.inputs.items()}
    _expect_value_error(lambda: component.numpy_forward(inputs, dict(case.fixed)), message, "numpy")
    tensors = {k: torch.from_numpy(v.copy()) for k, v in inputs.items()}
    fixed = {k: _each_array(v, lambda a: torch.from_numpy(a.copy())) for k, v in case.fixed.items()}
    _expect_value_error(lambda: component.torch_forward(tensors, fixed), torch_message or message, "torch")


# ----------------------------------------------------------------------------- internals
def _run_mismatches(got: Run, expected: Run, pair: str, rtol, atol, only: set | None = None) -> list:
    keys = only if only is not None else set(expected.outputs) | set(got.outputs)
    found = mismatches(
        {k: v for k, v in got.outputs.items() if k in keys},
        {k: v for k, v in expected.outputs.items() if k in keys},
        "output",
        rtol,
        atol,
    )
    if expected.grads is not None and got.grads is not None:
        found += mismatches(got.grads, expected.grads, "grad", rtol, atol)
    return [replace(m, quantity=f"{pair}: {m.quantity}") for m in found]


def _message(component: Component, case: Case, found: list) -> str:
    """Every mismatch on its own line, with the likely cause where a pattern fits."""
    head = f"{component.name}{f' [{case.label}]' if case.label else ''}: {len(found)} mismatch(es)"
    lines = [f"{m}; likely: {cause}" if (cause := likely_cause(m)) else str(m) for m in found]
    return "\n".join([head, *lines])


def _expect_value_error(call: Callable, pattern: str, side: str) -> None:
    try:
        call()
    except ValueError as error:
        assert re.search(pattern, str(error)), f"{side}: {error!s} does not match {pattern!r}"
        return
    raise AssertionError(f"{side}: no ValueError (expected one matching {pattern!r})")


def _is_float(value) -> bool:
    if isinstance(value, torch.Tensor):
        return value.is_floating_point()
    return np.issubdtype(np.asarray(value).dtype, np.floating)


def _each_array(value, convert):
    """``convert`` applied to an array, or to every array of a dict of them (dropout masks by
    layer); any other value (a config, a number) is passed through."""
    if isinstance(value, np.ndarray):
        return convert(value)
    if isinstance(value, Mapping):
        return {k: _each_array(v, convert) for k, v in value.items()}
    return value


def _cast_float(value, dtype):
    """Float arrays follow the run's dtype; ids, masks and settings are left alone."""
    if isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.floating):
        return value.astype(dtype)
    return value


def _tensor(array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    tensor = torch.from_numpy(np.array(array, copy=True))
    return tensor.to(dtype) if tensor.is_floating_point() else tensor


def _numpy_dtype(dtype: torch.dtype):
    return {torch.float64: np.float64, torch.float32: np.float32, torch.float16: np.float16}[dtype]


def _detached(value):
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value


def _grad_or_zeros(grad, tensor: torch.Tensor) -> np.ndarray:
    return np.zeros(tuple(tensor.shape), _numpy_dtype(tensor.dtype)) if grad is None else grad.detach().numpy()
