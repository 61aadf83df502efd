"""What two engines computed, compared: the first entry that differs, named.

Values may be NumPy arrays, torch tensors, Python or NumPy scalars, or dicts of them (a gradient
per parameter, keyed like ``state_dict()``). ``mismatches(got, expected)`` returns one
``Mismatch`` per quantity that differs (an empty list when everything agrees); ``assert_same``
raises ``AssertionError`` naming them.

Two arrays agree when they have the same shape, the same dtype (a float32 engine that silently
computes in float64 is a mismatch) and every entry satisfies
``|got - expected| <= atol + rtol * |expected|``, with ``torch.testing.assert_close``'s default
tolerances for the less precise of the two dtypes: float64 rtol 1e-7 / atol 1e-7, float32
rtol 1.3e-6 / atol 1e-5 (docs/DESIGN.md §2). Equal infinities agree; NaN never does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

# (rtol, atol) by dtype: torch.testing.assert_close's defaults.
_TOLERANCES = {
    "float16": (1e-3, 1e-5),
    "bfloat16": (1.6e-2, 1e-5),
    "float32": (1.3e-6, 1e-5),
    "float64": (1e-7, 1e-7),
}
_PRECISION_ORDER = ["bfloat16", "float16", "float32", "float64"]


@dataclass(frozen=True)
class Mismatch:
    """One quantity on which two engines differ.

    ``index`` is the first differing entry in row-major order (``None`` when the shapes, dtypes
    or keys already differ); ``expected`` and ``got`` are the values there, or the shapes / dtypes
    / a description. ``got_array`` and ``expected_array`` keep the whole values (in their own
    dtype) for a diagnosis that looks at more than one entry.
    """

    quantity: str
    index: tuple[int, ...] | None
    expected: object
    got: object
    kind: str = "value"  # "value", "shape", "dtype", "type", "missing", "unexpected", or "property"
    n_bad: int = 1
    size: int = 1
    got_array: np.ndarray | None = field(default=None, repr=False, compare=False)
    expected_array: np.ndarray | None = field(default=None, repr=False, compare=False)

    def where(self) -> str:
        """``quantity[i, j]``, or the bare quantity for a scalar or a whole-array difference."""
        if not self.index:
            return self.quantity
        return f"{self.quantity}[{', '.join(map(str, self.index))}]"

    def expected_text(self) -> str:
        return self._text(self.expected)

    def got_text(self) -> str:
        return self._text(self.got)

    def __str__(self) -> str:
        if self.kind in ("missing", "unexpected"):
            return f"{self.quantity}: {self.kind}"
        text = f"{self.where()}: expected {self.expected_text()} got {self.got_text()}"
        return (
            f"{text} ({self.n_bad} of {self.size} entries differ)" if self.kind == "value" and self.size > 1 else text
        )

    def _text(self, value) -> str:
        """A value as read in a message; a shape, dtype or type says which it is."""
        return f"{self.kind} {_fmt(value)}" if self.kind in ("shape", "dtype", "type") else _fmt(value)


def tolerance(*dtypes) -> tuple[float, float]:
    """(rtol, atol) for comparing values of these dtypes: the less precise float dtype decides;
    exact (0, 0) when none is a float."""
    names = [_dtype_name(d) for d in dtypes]
    floats = [n for n in names if n in _TOLERANCES]
    if not floats:
        return 0.0, 0.0
    return _TOLERANCES[min(floats, key=_PRECISION_ORDER.index)]


def mismatches(got, expected, quantity: str = "value", rtol=None, atol=None, check_dtype: bool = True) -> list:
    """Every quantity on which ``got`` differs from ``expected`` (see the module docstring).

    Dicts are compared key by key (``quantity[key]``); a key on one side only is a mismatch.
    ``rtol``/``atol`` override the dtype's tolerance.
    """
    if isinstance(expected, Mapping) or isinstance(got, Mapping):
        return _dict_mismatches(got, expected, quantity, rtol, atol, check_dtype)
    found = _array_mismatch(got, expected, quantity, rtol, atol, check_dtype)
    return [] if found is None else [found]


def assert_same(got, expected, quantity: str = "value", rtol=None, atol=None, check_dtype: bool = True) -> None:
    """Raise ``AssertionError`` listing every mismatch between ``got`` and ``expected``."""
    found = mismatches(got, expected, quantity, rtol, atol, check_dtype)
    if found:
        raise AssertionError("; ".join(map(str, found)))


def to_numpy(value) -> np.ndarray:
    """A NumPy copy of a tensor (detached, on the CPU), an array or a scalar."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy().copy()
    return np.array(value, copy=True)


def to_torch(array, dtype: torch.dtype | None = None, requires_grad: bool = False) -> torch.Tensor:
    """A torch copy of a NumPy array or scalar (integer arrays keep their dtype), optionally cast
    to ``dtype`` and made a leaf that requires grad."""
    tensor = torch.from_numpy(np.array(array, copy=True))
    if dtype is not None:
        tensor = tensor.to(dtype)
    return tensor.requires_grad_(requires_grad)


def state_of(module: torch.nn.Module) -> dict[str, np.ndarray]:
    """``module.state_dict()`` as NumPy arrays, keys unchanged."""
    return {name: to_numpy(value) for name, value in module.state_dict().items()}


def grads_of(module: torch.nn.Module) -> dict[str, np.ndarray]:
    """The ``.grad`` of every parameter as NumPy arrays, keyed like ``state_dict()``."""
    return {name: to_numpy(p.grad) for name, p in module.named_parameters()}


# ----------------------------------------------------------------------------- internals
def _dict_mismatches(got, expected, quantity, rtol, atol, check_dtype) -> list:
    if not isinstance(got, Mapping) or not isinstance(expected, Mapping):
        kinds = ("a dict" if isinstance(x, Mapping) else type(x).__name__ for x in (expected, got))
        return [Mismatch(quantity, None, *kinds, kind="type")]
    found = [Mismatch(f"{quantity}[{key}]", None, None, None, kind="missing") for key in expected if key not in got]
    found += [Mismatch(f"{quantity}[{key}]", None, None, None, kind="unexpected") for key in got if key not in expected]
    for key in expected:
        if key in got:
            found += mismatches(got[key], expected[key], f"{quantity}[{key}]", rtol, atol, check_dtype)
    return found


def _array_mismatch(got, expected, quantity, rtol, atol, check_dtype) -> Mismatch | None:
    got_dtype, expected_dtype = _dtype_of(got), _dtype_of(expected)
    a, b = _as_array(got), _as_array(expected)
    if a.shape != b.shape:
        return Mismatch(quantity, None, b.shape, a.shape, kind="shape", got_array=a, expected_array=b)
    if check_dtype and None not in (got_dtype, expected_dtype) and got_dtype != expected_dtype:
        return Mismatch(quantity, None, expected_dtype, got_dtype, kind="dtype", got_array=a, expected_array=b)
    # A Python number counts as float64 (or int) for the tolerance, but not for the dtype check.
    default_rtol, default_atol = tolerance(*(d or str(v.dtype) for d, v in ((got_dtype, a), (expected_dtype, b))))
    rtol = default_rtol if rtol is None else rtol
    atol = default_atol if atol is None else atol
    close = _close(a, b, rtol, atol)
    if close.all():
        return None
    bad = np.argwhere(~close)
    index = tuple(int(i) for i in bad[0])
    expected_text, got_text = _distinct(b[index], a[index])
    return Mismatch(
        quantity, index, expected_text, got_text, n_bad=len(bad), size=a.size, got_array=a, expected_array=b
    )


def _close(a: np.ndarray, b: np.ndarray, rtol: float, atol: float) -> np.ndarray:
    """Entrywise ``|a - b| <= atol + rtol |b|``; equal values (infinities included) agree, NaN never."""
    if a.dtype == np.bool_ or b.dtype == np.bool_:
        return a == b
    with np.errstate(invalid="ignore", over="ignore"):
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        return (a64 == b64) | (np.abs(a64 - b64) <= atol + rtol * np.abs(b64))


def _as_array(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        return value.double().numpy() if value.dtype == torch.bfloat16 else value.numpy()
    return np.asarray(value)


def _dtype_of(value) -> str | None:
    """The dtype's name for arrays, tensors and NumPy scalars; None for Python numbers."""
    if isinstance(value, (torch.Tensor, np.ndarray, np.generic)):
        return _dtype_name(value.dtype)
    return None


def _dtype_name(dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _distinct(expected, got) -> tuple[str, str]:
    """The two values printed with the fewest significant digits (6 at least) that tell them apart."""
    texts = ("", "")
    for digits in (6, 9, 12, 17):
        texts = tuple(f"{float(v):.{digits}g}" for v in (expected, got))
        if texts[0] != texts[1]:
            break
    return texts


def _fmt(value) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.6g}"
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return _fmt(value.item())
    return str(value)
