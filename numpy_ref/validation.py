"""Argument checks shared by ``numpy_ref`` and ``torch_lm``.

Pure Python on shapes (tuples) and numbers, so the reference stays torch-free and both sides
raise the same ``ValueError`` text for the same mistake. No torch twin on purpose: ``torch_lm``
imports these (its tensor-only checks are in ``torch_lm/_checks.py``); every component's
bad-input tests exercise them on both engines. Every message names the function, the
argument and what was seen.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence


def fail(where: str, message: str) -> None:
    """Raise ``ValueError("<where>: <message>")``."""
    raise ValueError(f"{where}: {message}")


def check_positive_int(where: str, name: str, value: object) -> int:
    """Return ``value`` if it is an int >= 1 (bools rejected), else raise ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        fail(where, f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_nonnegative_int(where: str, name: str, value: object) -> int:
    """Return ``value`` if it is an int >= 0 (bools rejected), else raise ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        fail(where, f"{name} must be an integer >= 0, got {value!r}")
    return int(value)


def check_probability(where: str, name: str, p: object) -> float:
    """Return ``p`` if it is a real number in [0, 1), else raise ValueError."""
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= float(p) < 1.0:
        fail(where, f"{name} must be a probability in [0, 1), got {p!r}")
    return float(p)


def check_positive_float(where: str, name: str, value: object) -> float:
    """Return ``value`` if it is a finite real number > 0, else raise ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 < float(value) < float("inf"):
        fail(where, f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_ndim(where: str, name: str, shape: Sequence[int], allowed: Sequence[int]) -> None:
    """Raise unless ``len(shape)`` is one of ``allowed``."""
    if len(shape) not in allowed:
        want = " or ".join(f"{n}-D" for n in allowed)
        fail(where, f"{name} must be {want}, got shape {tuple(shape)}")


def check_dim_matches(
    where: str, name_a: str, shape_a: Sequence[int], axis_a: int, name_b: str, shape_b: Sequence[int], axis_b: int
) -> None:
    """Raise unless ``shape_a[axis_a] == shape_b[axis_b]``, naming both shapes."""
    if shape_a[axis_a] != shape_b[axis_b]:
        fail(
            where,
            f"{name_a} has shape {tuple(shape_a)} and {name_b} has shape {tuple(shape_b)}; "
            f"expected {name_a}.shape[{axis_a}] == {name_b}.shape[{axis_b}]",
        )


def check_same_shape(where: str, name_a: str, shape_a: Sequence[int], name_b: str, shape_b: Sequence[int]) -> None:
    """Raise unless the two shapes are equal."""
    if tuple(shape_a) != tuple(shape_b):
        fail(where, f"{name_a} has shape {tuple(shape_a)} but {name_b} has shape {tuple(shape_b)}; they must be equal")


def check_index_range(where: str, name: str, lowest: int, highest: int, size: int) -> None:
    """Raise unless every index lies in ``[0, size)``; ``lowest``/``highest`` are the extremes seen."""
    if lowest < 0 or highest >= size:
        fail(where, f"{name} must lie in [0, {size}), got values in [{lowest}, {highest}]")


def check_integer_dtype(where: str, name: str, dtype_is_integer: bool, dtype: object) -> None:
    """Raise unless the array holds integers (token ids, targets)."""
    if not dtype_is_integer:
        fail(where, f"{name} must hold integers, got dtype {dtype}")


def check_float_dtype(where: str, name: str, dtype_is_float: bool, dtype: object) -> None:
    """Raise unless the array holds floating-point numbers."""
    if not dtype_is_float:
        fail(where, f"{name} must be a floating-point array, got dtype {dtype}")


def check_nonempty_last_axis(where: str, name: str, shape: Sequence[int]) -> None:
    """Raise unless the array has at least one axis and its last axis is non-empty.

    For functions that work over the last axis (softmax, LayerNorm): a 0-d array has no such
    axis, and an empty one has no maximum or mean to normalise by.
    """
    if len(shape) == 0 or shape[-1] == 0:
        fail(where, f"{name} must have at least one axis and a non-empty last axis, got shape {tuple(shape)}")


def check_nonnegative_float(where: str, name: str, value: object) -> float:
    """Return ``value`` if it is a finite real number >= 0 (bools rejected), else raise ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) < float("inf"):
        fail(where, f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def check_same_dtype(where: str, name_a: str, dtype_a: object, name_b: str, dtype_b: object) -> None:
    """Raise unless two arrays share a dtype: mixing float32 and float64 would silently upcast
    on the NumPy side and fail inside torch, so both engines refuse it up front."""
    if dtype_a != dtype_b:
        fail(where, f"{name_a} has dtype {dtype_a} but {name_b} has dtype {dtype_b}; they must match")


def check_bool_dtype(where: str, name: str, dtype_is_bool: bool, dtype: object) -> None:
    """Raise unless the array holds booleans (a keep-mask), so 0/1 floats or 2.0 cannot sneak in."""
    if not dtype_is_bool:
        fail(where, f"{name} must be a boolean array, got dtype {dtype}")


def check_even_last_axis(where: str, name: str, shape: Sequence[int]) -> None:
    """Raise unless the array has a last axis of even size, to be split into two halves (a gated
    unit's filter and gate)."""
    if len(shape) == 0 or shape[-1] % 2:
        fail(where, f"{name} must have a last axis of even size (filter and gate halves), got shape {tuple(shape)}")
