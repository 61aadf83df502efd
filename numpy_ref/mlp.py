"""Two-layer network ``h = ReLU(x W1^T + b1)``, ``y = h W2^T + b2`` (NN exercise 3).

Built by chaining ``linear`` and ``relu`` forward/backward pairs. Parameters live in a dict
keyed like ``torch_lm.mlp.TwoLayerMLP().state_dict()``: ``fc1.weight`` (H, D_in),
``fc1.bias`` (H,), ``fc2.weight`` (D_out, H), ``fc2.bias`` (D_out,); without biases the two
bias keys are absent.
"""

from __future__ import annotations

import numpy as np

from numpy_ref.activations import relu_backward, relu_forward
from numpy_ref.init import he_normal, xavier_normal
from numpy_ref.linear import linear_backward, linear_forward
from numpy_ref.validation import check_dim_matches, check_ndim, check_nonempty_last_axis, check_positive_int, fail

_WEIGHTS = ("fc1.weight", "fc2.weight")
_BIASES = ("fc1.bias", "fc2.bias")


def init_mlp_params(
    d_in: int, d_hidden: int, d_out: int, rng: np.random.Generator, bias: bool = True
) -> dict[str, np.ndarray]:
    """Float64 parameters: He for fc1 (a ReLU follows it), Xavier for fc2, zero biases."""
    for name, size in (("d_in", d_in), ("d_hidden", d_hidden), ("d_out", d_out)):
        check_positive_int("init_mlp_params", name, size)
    params = {
        "fc1.weight": he_normal(d_hidden, d_in, rng),  # (H, D_in)
        "fc2.weight": xavier_normal(d_out, d_hidden, rng),
    }  # (D_out, H)
    if bias:
        params["fc1.bias"] = np.zeros(d_hidden)  # (H,)
        params["fc2.bias"] = np.zeros(d_out)  # (D_out,)
    return params


def mlp_forward(params: dict[str, np.ndarray], x: np.ndarray):
    """x (..., D_in) -> y (..., D_out); returns ``(y, cache)``, the cache holding the sub-caches."""
    _check_params(params, x)
    h_pre, fc1_cache = linear_forward(x, params["fc1.weight"], params.get("fc1.bias"))  # (..., H)
    h, relu_cache = relu_forward(h_pre)
    y, fc2_cache = linear_forward(h, params["fc2.weight"], params.get("fc2.bias"))  # (..., D_out)
    return y, (fc1_cache, relu_cache, fc2_cache)


def mlp_backward(dy: np.ndarray, cache):
    """dy (..., D_out) -> ``(dx, grads)``: dx (..., D_in), grads keyed like ``params``."""
    fc1_cache, relu_cache, fc2_cache = cache
    dh, dw2, db2 = linear_backward(dy, fc2_cache)  # (..., H)
    dh_pre = relu_backward(dh, relu_cache)
    dx, dw1, db1 = linear_backward(dh_pre, fc1_cache)  # (..., D_in)
    grads = {"fc1.weight": dw1, "fc2.weight": dw2}
    for key, grad in (("fc1.bias", db1), ("fc2.bias", db2)):
        if grad is not None:
            grads[key] = grad
    return dx, grads


def _check_params(params: dict[str, np.ndarray], x: np.ndarray) -> None:
    """Known keys, both weights present, and sizes that chain; ``linear_forward`` checks the rest."""
    where = "mlp_forward"
    missing = [key for key in _WEIGHTS if key not in params]
    unknown = sorted(set(params) - set(_WEIGHTS) - set(_BIASES))
    if missing or unknown:
        fail(
            where,
            f"params must have keys {list(_WEIGHTS)} and optionally {list(_BIASES)}; "
            f"missing {missing}, unknown {unknown}",
        )
    w1, w2 = params["fc1.weight"], params["fc2.weight"]
    check_nonempty_last_axis(where, "x", x.shape)
    check_ndim(where, "fc1.weight", w1.shape, [2])
    check_ndim(where, "fc2.weight", w2.shape, [2])
    check_dim_matches(where, "x", x.shape, -1, "fc1.weight", w1.shape, 1)
    check_dim_matches(where, "fc2.weight", w2.shape, 1, "fc1.weight", w1.shape, 0)
