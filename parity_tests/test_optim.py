"""numpy_ref.optim against torch.optim: SGD and AdamW over many steps, gradient clipping, the lr
schedule, the weight EMA against ``torch.optim.swa_utils.AveragedModel``, and the errors for bad
input.

Tolerances: float64 is held to 1e-13 (a million times tighter than the suite's default): the only
difference left is that torch's vectorised CPU kernels fuse multiply-adds (lerp_, add_(alpha=),
addcmul_) where NumPy rounds twice, about one unit in the last place per step (measured: 4e-16 of
the parameter scale after 300 steps). float32 uses the suite's float32 defaults.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from numpy_ref.optim import EMA, SGD, AdamW, clip_grad_norm, no_decay_keys, warmup_cosine_lr
from torch_lm.parity import assert_same, state_of, to_torch
from torch_lm.training.step import make_ema

TIGHT_FLOAT64 = dict(rtol=1e-13, atol=1e-13)
SHAPES = {"layer.weight": (7, 3), "layer.bias": (7,), "deep.weight": (4, 5, 2), "scale": (1,)}
NO_DECAY = frozenset({"layer.bias"})

CASES = [
    ("SGD", dict(lr=0.05)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("AdamW", dict(lr=0.01)),
    # beta1 <= 0.5 takes the other branch of torch's lerp; eps large enough to matter.
    ("AdamW", dict(lr=0.01, betas=(0.3, 0.5), eps=1e-3, weight_decay=0.1)),
    ("AdamW", dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.1, amsgrad=True)),
]
CASE_IDS = ["sgd", "sgd-momentum-dampening", "sgd-nesterov", "adamw", "adamw-low-betas", "adamw-amsgrad"]


def _random_grads(rng: np.random.Generator, dtype) -> dict[str, np.ndarray]:
    """Standard-normal gradients of SHAPES with ~20 % exact zeros (like unused embedding rows)."""
    grads = {}
    for key, shape in SHAPES.items():
        g = rng.standard_normal(shape)
        g[rng.random(shape) < 0.2] = 0.0
        grads[key] = g.astype(dtype)
    return grads


def _torch_optimizer(name: str, kwargs: dict, tensors: dict[str, torch.Tensor], foreach):
    """torch.optim.<name> with two parameter groups: decayed, and NO_DECAY with weight_decay 0."""
    groups = [
        {"params": [t for k, t in tensors.items() if k not in NO_DECAY]},
        {"params": [tensors[k] for k in sorted(NO_DECAY)], "weight_decay": 0.0},
    ]
    return getattr(torch.optim, name)(groups, foreach=foreach, **kwargs)


@pytest.mark.parametrize("foreach", [False, None], ids=["single-tensor", "default"])
@pytest.mark.parametrize("name, kwargs", CASES, ids=CASE_IDS)
def test_many_steps_match_torch(name, kwargs, foreach, dtypes, rng):
    """100 steps with a scheduled lr: parameters and optimiser state agree with torch.optim."""
    np_dtype, torch_dtype = dtypes
    params = {k: rng.standard_normal(s).astype(np_dtype) for k, s in SHAPES.items()}
    tensors = {k: to_torch(v, torch_dtype, requires_grad=True) for k, v in params.items()}
    ours = {"SGD": SGD, "AdamW": AdamW}[name](no_decay=NO_DECAY, **kwargs)
    theirs = _torch_optimizer(name, kwargs, tensors, foreach)
    for step in range(100):
        lr = warmup_cosine_lr(step, kwargs["lr"], warmup_steps=10, total_steps=100, min_lr=1e-4)
        ours.lr = lr
        for group in theirs.param_groups:
            group["lr"] = lr
        grads = _random_grads(rng, np_dtype)
        for key, tensor in tensors.items():
            tensor.grad = to_torch(grads[key], torch_dtype)
        ours.step(params, grads)
        theirs.step()
    tolerance = TIGHT_FLOAT64 if np_dtype == np.float64 else {}
    assert_same(params, tensors, "param", **tolerance)
    for key, tensor in tensors.items():
        state, torch_state = dict(ours.state[key]), dict(theirs.state[tensor])
        if "step" in state:  # AdamW counts steps (torch as a float tensor); SGD keeps no count
            assert state.pop("step") == int(torch_state.pop("step")) == 100
        # The same buffers under torch's names (none for plain SGD), each to the same tolerance.
        assert_same(state, torch_state, f"state[{key}]", **tolerance)


def test_adamw_first_step_golden():
    """By hand: after one step m_hat = g and v_hat = g^2, so p <- p (1 - lr wd) - lr g / (|g| + eps)."""
    params = {"w": np.array([1.0, -2.0, 0.5])}
    grads = {"w": np.array([0.5, -0.25, 0.0])}
    opt = AdamW(lr=0.1, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    opt.step(params, grads)
    # 1 * 0.999 - 0.05 / 0.50000001;  -2 * 0.999 + 0.025 / 0.25000001;  0.5 * 0.999 - 0
    np.testing.assert_allclose(params["w"], [0.899000002, -1.898000004, 0.4995], rtol=1e-15, atol=1e-15)
    np.testing.assert_allclose(opt.state["w"]["exp_avg"], [0.05, -0.025, 0.0], rtol=1e-15)
    np.testing.assert_allclose(opt.state["w"]["exp_avg_sq"], [0.00025, 0.0000625, 0.0], rtol=1e-15)
    assert opt.state["w"]["step"] == 1


def test_sgd_first_momentum_buffer_is_the_undamped_gradient():
    params, grads = {"w": np.array([1.0, 2.0])}, {"w": np.array([0.5, -1.0])}
    opt = SGD(lr=0.1, momentum=0.9, dampening=0.5)
    opt.step(params, grads)
    np.testing.assert_array_equal(opt.state["w"]["momentum_buffer"], [0.5, -1.0])
    np.testing.assert_allclose(params["w"], [0.95, 2.1], rtol=1e-15)
    opt.step(params, grads)  # from now on: buf = 0.9 buf + (1 - 0.5) g
    np.testing.assert_allclose(opt.state["w"]["momentum_buffer"], [0.7, -1.4], rtol=1e-15)


@pytest.mark.parametrize(
    "make", [lambda: SGD(lr=0.1, momentum=0.9, weight_decay=0.1), lambda: AdamW(lr=0.1)], ids=["sgd", "adamw"]
)
def test_step_updates_params_in_place_and_keeps_grads(make, rng):
    params = {"w": rng.standard_normal((3, 2))}
    grads = {"w": rng.standard_normal((3, 2))}
    array, grads_before, params_before = params["w"], grads["w"].copy(), params["w"].copy()
    make().step(params, grads)
    assert params["w"] is array
    assert not np.array_equal(array, params_before)
    np.testing.assert_array_equal(grads["w"], grads_before)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_float32_stays_float32(dtype, rng):
    params = {"w": rng.standard_normal(4).astype(dtype)}
    opt = AdamW(lr=0.1, weight_decay=0.1)
    opt.step(params, {"w": rng.standard_normal(4).astype(dtype)})
    assert params["w"].dtype == dtype
    assert all(v.dtype == dtype for k, v in opt.state["w"].items() if k != "step")


@pytest.mark.parametrize("max_norm", [0.5, 1e3], ids=["clips", "no-op"])
def test_clip_grad_norm_matches_torch(max_norm, dtypes, rng):
    np_dtype, torch_dtype = dtypes
    grads = {k: (3 * rng.standard_normal(s)).astype(np_dtype) for k, s in SHAPES.items()}
    tensors = {k: to_torch(np.zeros(s), torch_dtype, requires_grad=True) for k, s in SHAPES.items()}
    for key, tensor in tensors.items():
        tensor.grad = to_torch(grads[key], torch_dtype)
    torch_norm = torch.nn.utils.clip_grad_norm_(tensors.values(), max_norm)
    our_norm = clip_grad_norm(grads, max_norm)
    assert_same(our_norm, float(torch_norm), "total norm", rtol=1e-6, atol=0.0)
    tolerance = TIGHT_FLOAT64 if np_dtype == np.float64 else {}
    assert_same(grads, {k: t.grad for k, t in tensors.items()}, "clipped grad", **tolerance)
    if max_norm < our_norm:
        clipped = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads.values()))
        assert clipped == pytest.approx(max_norm, rel=1e-5)


def _module_of(params: dict[str, np.ndarray], torch_dtype) -> torch.nn.Module:
    """A module whose ``state_dict()`` holds ``params`` under their keys (``"layer.weight"`` is the
    parameter ``weight`` of a submodule ``layer``)."""
    root = torch.nn.Module()
    for key, value in params.items():
        *path, name = key.split(".")
        owner = root
        for part in path:
            if not hasattr(owner, part):
                owner.add_module(part, torch.nn.Module())
            owner = getattr(owner, part)
        owner.register_parameter(name, torch.nn.Parameter(to_torch(value, torch_dtype)))
    return root


# 0.3 weighs the new parameters by 0.7, torch's other lerp formula; 0 follows them exactly.
EMA_DECAYS = [0.0, 0.3, 0.9, 0.999]


@pytest.mark.parametrize("decay", EMA_DECAYS)
def test_ema_of_many_steps_matches_averaged_model(decay, dtypes, rng):
    """200 updates of parameters that keep moving: the NumPy EMA is torch's maintained one,
    ``AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay))``, as the trainer builds it
    (``make_ema``); the first update is a copy (exact), every later one a lerp (to the file's
    tolerances: torch's kernel fuses multiply-adds)."""
    np_dtype, torch_dtype = dtypes
    params = {k: rng.standard_normal(s).astype(np_dtype) for k, s in SHAPES.items()}
    model = _module_of(params, torch_dtype)
    theirs = make_ema(model, decay) if decay else AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.0))
    ours = EMA(decay)
    tolerance = TIGHT_FLOAT64 if np_dtype == np.float64 else {}
    for step in range(200):
        # A drift plus noise, like weights in training.
        params = {k: (v + 0.05 + 0.1 * rng.standard_normal(v.shape)).astype(np_dtype) for k, v in params.items()}
        with torch.no_grad():
            for name, tensor in model.named_parameters():
                tensor.copy_(to_torch(params[name], torch_dtype))
        ours.update(params)
        theirs.update_parameters(model)
        if step == 0:
            assert_same(ours.params, state_of(theirs.module), "average after the first update", rtol=0, atol=0)
            assert_same(ours.params, params, "first update: a copy", rtol=0, atol=0)
    assert ours.updates == int(theirs.n_averaged) == 200
    assert_same(ours.params, state_of(theirs.module), "average", **tolerance)
    if decay > 0:  # a real average, far from the latest parameters: the agreement means something
        assert min(np.max(np.abs(ours.params[k] - params[k])) for k in params) > 1e-2


def test_ema_keeps_its_own_copy_and_leaves_params_alone(rng):
    params = {"w": rng.standard_normal(3)}
    before = params["w"].copy()
    ema = EMA(0.5)
    ema.update(params)
    assert ema.params["w"] is not params["w"]
    params["w"] += 1.0  # the caller's arrays change (an optimiser step): the average does not
    np.testing.assert_array_equal(ema.params["w"], before)
    ema.update(params)
    np.testing.assert_array_equal(params["w"], before + 1.0)
    np.testing.assert_allclose(ema.params["w"], before + 0.5, rtol=1e-15)  # halfway, decay 0.5


def test_ema_golden():
    """By hand: 1, then 1 + 0.1 (3 - 1) = 1.2, then 1.2 + 0.1 (-1 - 1.2) = 0.98."""
    ema = EMA(0.9)
    for value in (1.0, 3.0, -1.0):
        ema.update({"w": np.array([value])})
    np.testing.assert_allclose(ema.params["w"], [0.98], rtol=1e-15)
    assert ema.updates == 3


@pytest.mark.parametrize("decay", [-0.1, 1.0, 1.5, float("nan"), True, "0.9"])
def test_ema_refuses_a_decay_outside_0_1(decay):
    """[0, 1) on our side; torch's ``get_ema_multi_avg_fn`` refuses below 0 and above 1 (it takes 1,
    an average frozen at the first copy, which training has no use for, and NaN)."""
    with pytest.raises(ValueError, match="decay must be a probability in"):
        EMA(decay)
    if isinstance(decay, float) and (decay < 0.0 or decay > 1.0):
        with pytest.raises(ValueError, match="decay"):
            get_ema_multi_avg_fn(decay)


@pytest.mark.parametrize(
    "second, match",
    [
        ({"v": np.zeros(3)}, "missing"),
        ({"w": np.zeros(4)}, "shape"),
        ({"w": np.zeros(3, dtype=np.float32)}, "dtype"),
        ({"w": np.zeros(3, dtype=np.int64)}, "floating-point"),
    ],
)
def test_ema_refuses_params_unlike_the_average(second, match):
    ema = EMA(0.9)
    ema.update({"w": np.zeros(3)})
    with pytest.raises(ValueError, match=match):
        ema.update(second)
    assert ema.updates == 1


def test_warmup_cosine_lr_shape():
    lrs = [warmup_cosine_lr(s, 1.0, warmup_steps=4, total_steps=20, min_lr=0.1) for s in range(25)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in itertools.pairwise(lrs[3:]))  # non-increasing after warmup
    assert lrs[12] == pytest.approx(0.55)  # half-way down the cosine
    assert lrs[20:] == [0.1] * 5
    assert warmup_cosine_lr(0, 0.3, warmup_steps=0, total_steps=10) == 0.3  # no warmup: start at the peak


def test_no_decay_keys_picks_biases_norms_and_embeddings():
    keys = [
        "embedding.weight",
        "pair_embedding.weight",
        "hidden.0.linear.weight",
        "hidden.0.linear.bias",
        "hidden.0.norm.weight",
        "hidden.0.norm.bias",
        "output.weight",
        "output.bias",
    ]
    assert no_decay_keys(keys) == {
        "embedding.weight",
        "pair_embedding.weight",
        "hidden.0.linear.bias",
        "hidden.0.norm.weight",
        "hidden.0.norm.bias",
        "output.bias",
    }


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: SGD(lr=-0.1), "lr"),
        (lambda: SGD(lr=True), "lr"),
        (lambda: SGD(momentum=-0.5), "momentum"),
        (lambda: SGD(weight_decay=-1e-4), "weight_decay"),
        (lambda: SGD(nesterov=True), "nesterov"),
        (lambda: SGD(momentum=0.9, dampening=0.1, nesterov=True), "nesterov"),
        (lambda: AdamW(lr=float("nan")), "lr"),
        (lambda: AdamW(betas=(1.0, 0.999)), r"betas\[0\]"),
        (lambda: AdamW(betas=(0.9, -0.1)), r"betas\[1\]"),
        (lambda: AdamW(betas=0.9), "betas"),
        (lambda: AdamW(eps=-1e-8), "eps"),
        (lambda: AdamW(weight_decay=-0.01), "weight_decay"),
    ],
)
def test_bad_hyperparameters_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_negative_scheduled_lr_raises():
    opt = AdamW()
    with pytest.raises(ValueError, match="lr"):
        opt.lr = -1e-3


@pytest.mark.parametrize(
    "params, grads, no_decay, match",
    [
        ({"w": np.zeros(3)}, {"v": np.zeros(3)}, (), "missing"),
        ({"w": np.zeros(3)}, {"w": np.zeros(4)}, (), "shape"),
        ({"w": np.zeros(3)}, {"w": np.zeros(3, dtype=np.float32)}, (), "dtype"),
        ({"w": np.zeros(3, dtype=np.int64)}, {"w": np.zeros(3, dtype=np.int64)}, (), "floating-point"),
        ({"w": np.zeros(3)}, {"w": np.zeros(3)}, ("b",), "no_decay"),
    ],
)
def test_bad_step_inputs_raise(params, grads, no_decay, match):
    for opt in (SGD(no_decay=no_decay), AdamW(no_decay=no_decay)):
        with pytest.raises(ValueError, match=match):
            opt.step(params, grads)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: clip_grad_norm({"w": np.ones(2)}, 0.0), "max_norm"),
        (lambda: warmup_cosine_lr(-1, 1.0, 2, 10), "step"),
        (lambda: warmup_cosine_lr(0, 1.0, 11, 10), "warmup_steps"),
        (lambda: warmup_cosine_lr(0, 1.0, 2, 0), "total_steps"),
        (lambda: warmup_cosine_lr(0, 0.1, 2, 10, min_lr=0.2), "min_lr"),
    ],
)
def test_bad_clip_and_schedule_arguments_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()
