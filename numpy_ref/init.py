"""Xavier (Glorot) and He (Kaiming) weight initialisation (NN exercise 7).

Both pick the weight scale so that signals neither grow nor shrink from layer to layer:

* Xavier, for tanh-like layers: Var(w) = 2 / (fan_in + fan_out), a compromise between keeping
  the forward variance (needs 1 / fan_in) and the backward variance (needs 1 / fan_out).
* He, for ReLU layers: Var(w) = 2 / fan_in, because ReLU zeroes half of its inputs on average
  and so halves the second moment that reaches the next layer.

The uniform variants draw from U(-a, a) with a = sqrt(3) * std, which has the same variance.
Arrays are returned in torch's layout, ``(fan_out, fan_in)``. ``torch_lm.init`` reuses the
std helpers, so the two engines cannot disagree about the formulas.
"""

from __future__ import annotations

import math

import numpy as np

from numpy_ref.validation import check_positive_int, fail

# Var(U(-a, a)) = a² / 3, so a = sqrt(3) * std gives a uniform draw the wanted std.
UNIFORM_BOUND_PER_STD = math.sqrt(3.0)


def xavier_std(fan_in: int, fan_out: int) -> float:
    """Standard deviation ``sqrt(2 / (fan_in + fan_out))`` of Xavier-initialised weights."""
    fan_in = check_positive_int("xavier_std", "fan_in", fan_in)
    fan_out = check_positive_int("xavier_std", "fan_out", fan_out)
    return math.sqrt(2.0 / (fan_in + fan_out))


def he_std(fan_in: int) -> float:
    """Standard deviation ``sqrt(2 / fan_in)`` of He-initialised weights (ReLU layers)."""
    fan_in = check_positive_int("he_std", "fan_in", fan_in)
    return math.sqrt(2.0 / fan_in)


def xavier_normal(fan_out: int, fan_in: int, rng: np.random.Generator, dtype=np.float64) -> np.ndarray:
    """Weights (fan_out, fan_in) drawn from N(0, xavier_std²)."""
    return _normal("xavier_normal", (fan_out, fan_in), xavier_std(fan_in, fan_out), rng, dtype)


def he_normal(fan_out: int, fan_in: int, rng: np.random.Generator, dtype=np.float64) -> np.ndarray:
    """Weights (fan_out, fan_in) drawn from N(0, he_std²)."""
    return _normal("he_normal", (fan_out, fan_in), he_std(fan_in), rng, dtype)


def xavier_uniform(fan_out: int, fan_in: int, rng: np.random.Generator, dtype=np.float64) -> np.ndarray:
    """Weights (fan_out, fan_in) drawn from U(-a, a), a = sqrt(3) * xavier_std."""
    bound = UNIFORM_BOUND_PER_STD * xavier_std(fan_in, fan_out)
    return _uniform("xavier_uniform", (fan_out, fan_in), bound, rng, dtype)


def he_uniform(fan_out: int, fan_in: int, rng: np.random.Generator, dtype=np.float64) -> np.ndarray:
    """Weights (fan_out, fan_in) drawn from U(-a, a), a = sqrt(3) * he_std."""
    return _uniform("he_uniform", (fan_out, fan_in), UNIFORM_BOUND_PER_STD * he_std(fan_in), rng, dtype)


def _normal(where: str, shape: tuple[int, int], std: float, rng: np.random.Generator, dtype) -> np.ndarray:
    dtype = _check_dtype(where, dtype)
    # Drawn directly in the target dtype, so float32 weights never pass through float64.
    return rng.standard_normal(shape, dtype=dtype) * dtype.type(std)


def _uniform(where: str, shape: tuple[int, int], bound: float, rng: np.random.Generator, dtype) -> np.ndarray:
    dtype = _check_dtype(where, dtype)
    unit = rng.random(shape, dtype=dtype)  # U[0, 1)
    return (2 * unit - 1) * dtype.type(bound)  # U[-bound, bound)


def _check_dtype(where: str, dtype) -> np.dtype:
    """The generator draws only float32 and float64; anything else is a ValueError."""
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        fail(where, f"dtype must be float32 or float64, got {dtype}")
    return dtype
