"""Every differentiable component of the project as the battery sees it: the NumPy pair and the
torch twin (with its built-in witness where torch has one) under one name.

Inputs are named like the torch module's ``state_dict()`` (``weight``, ``bias``,
``hidden.0.linear.weight``, ...) plus ``x`` for a data input, so the torch side runs the real
module through ``torch.func.functional_call(..., strict=True)``: a key missing on either side is
an error, not a silently initialised parameter. Modules are built once per shape and dtype.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from numpy_ref import activations as np_act
from numpy_ref import bigram as np_bigram
from numpy_ref import cross_entropy as np_ce
from numpy_ref.dropout import dropout_backward, dropout_forward
from numpy_ref.embedding import embedding_backward, embedding_forward
from numpy_ref.layernorm import layernorm_backward, layernorm_forward
from numpy_ref.linear import linear_backward, linear_forward
from numpy_ref.mlp import mlp_backward, mlp_forward
from numpy_ref.neural_lm import (
    neural_lm_backward,
    neural_lm_forward,
    neural_lm_sequence_backward,
    neural_lm_sequence_forward,
)
from numpy_ref.pair_embedding import pair_embedding_backward, pair_embedding_forward
from torch_lm import activations as torch_act
from torch_lm import bigram as torch_bigram
from torch_lm import cross_entropy as torch_ce
from torch_lm.dropout import Dropout
from torch_lm.embedding import Embedding
from torch_lm.layernorm import LayerNorm
from torch_lm.linear import Linear
from torch_lm.mlp import TwoLayerMLP
from torch_lm.neural_lm import NeuralLM
from torch_lm.pair_embedding import PairEmbedding
from torch_lm.parity.battery import Component


@functools.lru_cache(maxsize=256)
def _module(factory, *args) -> nn.Module:
    """One module per (factory, args): functional_call supplies the parameters on every call."""
    return factory(*args)


def _call(module: nn.Module, params: dict, *args, **kwargs):
    return functional_call(module, params, args, kwargs, strict=True)


def _params(inputs: dict, data: str = "x") -> dict:
    return {k: v for k, v in inputs.items() if k != data}


# ----------------------------------------------------------------------------- affine layer
def _linear_numpy(inputs, fixed):
    out, cache = linear_forward(inputs["x"], inputs["weight"], inputs.get("bias"))
    return {"out": out}, cache


def _linear_numpy_backward(upstream, cache):
    dx, dw, db = linear_backward(upstream["out"], cache)
    return {"x": dx, "weight": dw} | ({} if db is None else {"bias": db})


def _linear_torch(inputs, fixed):
    out_features, in_features = inputs["weight"].shape
    layer = _module(_linear_module, in_features, out_features, "bias" in inputs, inputs["weight"].dtype)
    return {"out": _call(layer, _params(inputs), inputs["x"])}


def _linear_module(in_features, out_features, bias, dtype):
    return Linear(in_features, out_features, bias, dtype=dtype)


LINEAR = Component(
    "linear",
    _linear_numpy,
    _linear_torch,
    _linear_numpy_backward,
    witness=lambda t, f: {"out": F.linear(t["x"], t["weight"], t.get("bias"))},
)


# ----------------------------------------------------------------------------- activations
def _activation(name: str, witness) -> Component:
    forward, backward = {
        "relu": (np_act.relu_forward, np_act.relu_backward),
        "tanh": (np_act.tanh_forward, np_act.tanh_backward),
        "gated": (np_act.gated_tanh_forward, np_act.gated_tanh_backward),
    }[name]
    torch_fn = {"relu": torch_act.relu, "tanh": torch_act.tanh, "gated": torch_act.gated_tanh}[name]

    def numpy_forward(inputs, fixed):
        out, cache = forward(inputs["x"])
        return {"out": out}, cache

    return Component(
        name,
        numpy_forward,
        lambda t, f: {"out": torch_fn(t["x"])},
        lambda up, cache: {"x": backward(up["out"], cache)},
        witness=lambda t, f: {"out": witness(t["x"])},
    )


def _glu_of_tanh(x: torch.Tensor) -> torch.Tensor:
    """tanh(a) * sigmoid(b) by torch's own kernels: F.glu(u) is u[..., :H] * sigmoid(u[..., H:])."""
    filter_, gate = x.chunk(2, dim=-1)
    return F.glu(torch.cat([torch.tanh(filter_), gate], dim=-1), dim=-1)


RELU = _activation("relu", F.relu)
TANH = _activation("tanh", torch.tanh)
GATED = _activation("gated", _glu_of_tanh)  # x (..., 2H) -> out (..., H)


# ----------------------------------------------------------------------------- softmax family
def _softmax_like(name: str, forward, backward, torch_fn, builtin) -> Component:
    """x (..., V) with ``fixed["temperature"]`` (default 1) -> out (..., V)."""

    def numpy_forward(inputs, fixed):
        out, cache = forward(inputs["x"], fixed.get("temperature", 1.0))
        return {"out": out}, cache

    def witness(t, fixed):
        return {"out": builtin(t["x"] / fixed.get("temperature", 1.0), dim=-1)}

    return Component(
        name,
        numpy_forward,
        lambda t, f: {"out": torch_fn(t["x"], f.get("temperature", 1.0))},
        lambda up, cache: {"x": backward(up["out"], cache)},
        witness=witness,
    )


SOFTMAX = _softmax_like("softmax", np_ce.softmax_forward, np_ce.softmax_backward, torch_ce.softmax, F.softmax)
LOG_SOFTMAX = _softmax_like(
    "log_softmax", np_ce.log_softmax_forward, np_ce.log_softmax_backward, torch_ce.log_softmax, F.log_softmax
)


def _cross_entropy_numpy(inputs, fixed):
    loss, dlogits = np_ce.cross_entropy(inputs["logits"], fixed["targets"])
    return {"loss": loss}, dlogits


CROSS_ENTROPY = Component(
    "cross_entropy",
    _cross_entropy_numpy,
    lambda t, f: {"loss": torch_ce.cross_entropy(t["logits"], f["targets"])},
    lambda up, dlogits: {"logits": up["loss"] * dlogits},
    witness=lambda t, f: {"loss": F.cross_entropy(t["logits"], f["targets"])},
)


# ----------------------------------------------------------------------------- embedding
def _embedding_numpy(inputs, fixed):
    out, cache = embedding_forward(fixed["idx"], inputs["weight"])
    return {"out": out}, cache


def _embedding_torch(inputs, fixed):
    vocab, dim = inputs["weight"].shape
    return {"out": _call(_module(_embedding_module, vocab, dim), inputs, fixed["idx"])}


def _embedding_module(vocab, dim):
    return Embedding(vocab, dim)


EMBEDDING = Component(
    "embedding",
    _embedding_numpy,
    _embedding_torch,
    lambda up, cache: {"weight": embedding_backward(up["out"], cache)},
    witness=lambda t, f: {"out": F.embedding(f["idx"].long(), t["weight"])},  # F.embedding takes int32/int64 ids
)


# ----------------------------------------------------------------------------- pair embedding
def _pair_embedding_numpy(inputs, fixed):
    out, cache = pair_embedding_forward(fixed["idx"], inputs["weight"], fixed["group"])
    return {"out": out}, cache


def _pair_embedding_torch(inputs, fixed):
    vocab = math.isqrt(inputs["weight"].shape[0])  # weight (V*V, E); a non-square is refused by the lookup
    module = _module(_pair_embedding_module, max(vocab, 1), inputs["weight"].shape[1])
    return {"out": _call(module, inputs, fixed["idx"], fixed["group"])}


def _pair_embedding_module(vocab, dim):
    return PairEmbedding(vocab, dim)


def _pair_embedding_witness(t, fixed):
    """F.embedding of the pair ids ``prev * V + cur``, masked to the positions inside a group."""
    idx, weight, group = fixed["idx"].long(), t["weight"], fixed["group"]
    vocab, n = math.isqrt(weight.shape[0]), idx.shape[-1]
    previous = torch.cat([torch.zeros_like(idx[..., :1]), idx[..., :-1]], dim=-1)  # (..., n), position 0 any id
    inside = (torch.arange(n) % group != 0).to(weight.dtype)  # (n,)
    return {"out": F.embedding(previous * vocab + idx, weight) * inside[:, None]}


PAIR_EMBEDDING = Component(
    "pair_embedding",
    _pair_embedding_numpy,
    _pair_embedding_torch,
    lambda up, cache: {"weight": pair_embedding_backward(up["out"], cache)},
    witness=_pair_embedding_witness,
)


# ----------------------------------------------------------------------------- LayerNorm
def _layernorm_numpy(inputs, fixed):
    out, cache = layernorm_forward(inputs["x"], inputs["weight"], inputs["bias"], fixed.get("eps", 1e-5))
    return {"out": out}, cache


def _layernorm_numpy_backward(upstream, cache):
    dx, dgamma, dbeta = layernorm_backward(upstream["out"], cache)
    return {"x": dx, "weight": dgamma, "bias": dbeta}


def _layernorm_torch(inputs, fixed):
    module = _module(_layernorm_module, inputs["weight"].shape[0], fixed.get("eps", 1e-5))
    return {"out": _call(module, _params(inputs), inputs["x"])}


def _layernorm_module(dim, eps):
    return LayerNorm(dim, eps=eps)


LAYERNORM = Component(
    "layernorm",
    _layernorm_numpy,
    _layernorm_torch,
    _layernorm_numpy_backward,
    witness=lambda t, f: {"out": F.layer_norm(t["x"], t["x"].shape[-1:], t["weight"], t["bias"], f.get("eps", 1e-5))},
)


# ----------------------------------------------------------------------------- dropout
def _dropout_numpy(inputs, fixed):
    out, cache = dropout_forward(inputs["x"], fixed["p"], mask=fixed.get("mask"), train=fixed.get("train", True))
    return {"out": out}, cache


def _dropout_torch(inputs, fixed):
    module = Dropout(fixed["p"]).train(fixed.get("train", True))
    return {"out": module(inputs["x"], mask=fixed.get("mask"))}


DROPOUT = Component(
    "dropout", _dropout_numpy, _dropout_torch, lambda up, cache: {"x": dropout_backward(up["out"], cache)}
)


# ----------------------------------------------------------------------------- two-layer net
def _mlp_numpy(inputs, fixed):
    y, cache = mlp_forward(_params(inputs), inputs["x"])
    return {"y": y}, cache


def _mlp_numpy_backward(upstream, cache):
    dx, grads = mlp_backward(upstream["y"], cache)
    return {"x": dx, **grads}


def _mlp_torch(inputs, fixed):
    d_hidden, d_in = inputs["fc1.weight"].shape
    d_out = inputs["fc2.weight"].shape[0]
    module = _module(_mlp_module, d_in, d_hidden, d_out, "fc1.bias" in inputs, inputs["fc1.weight"].dtype)
    return {"y": _call(module, _params(inputs), inputs["x"])}


def _mlp_module(d_in, d_hidden, d_out, bias, dtype):
    return TwoLayerMLP(d_in, d_hidden, d_out, bias=bias).to(dtype)


MLP = Component("mlp", _mlp_numpy, _mlp_torch, _mlp_numpy_backward)


# ----------------------------------------------------------------------------- NeuralLM
class _SequenceForward(nn.Module):
    """``forward`` is the NeuralLM's ``forward_sequence``, so functional_call can run it."""

    def __init__(self, lm: NeuralLM):
        super().__init__()
        self.lm = lm

    def forward(self, *args, **kwargs):
        return self.lm.forward_sequence(*args, **kwargs)


def _neural_lm_module(config, dtype, sequence):
    model = NeuralLM(config).to(dtype)
    return _SequenceForward(model) if sequence else model


def _neural_lm(name: str, forward, backward, sequence: bool) -> Component:
    """params as inputs; fixed: config, idx, targets, masks (dropout in train mode when given)."""

    def numpy_forward(inputs, fixed):
        train = fixed.get("masks") is not None
        logits, loss, cache = forward(
            inputs, fixed["idx"], fixed["config"], fixed.get("targets"), train=train, masks=fixed.get("masks")
        )
        return {"logits": logits} | ({} if loss is None else {"loss": loss}), cache

    def numpy_backward(upstream, cache):
        return {k: upstream["loss"] * g for k, g in backward(cache).items()}

    def torch_forward(inputs, fixed):
        dtype = next(iter(inputs.values())).dtype
        module = _module(_neural_lm_module, fixed["config"], dtype, sequence)
        masks = fixed.get("masks")
        module.train(masks is not None)
        prefix = "lm." if sequence else ""
        params = {prefix + k: v for k, v in inputs.items()}
        logits, loss = _call(module, params, fixed["idx"], fixed.get("targets"), masks=masks)
        return {"logits": logits} | ({} if loss is None else {"loss": loss})

    return Component(name, numpy_forward, torch_forward, numpy_backward, differentiated=("loss",))


NEURAL_LM = _neural_lm("neural_lm", neural_lm_forward, neural_lm_backward, sequence=False)
NEURAL_LM_SEQUENCE = _neural_lm(
    "neural_lm_sequence", neural_lm_sequence_forward, neural_lm_sequence_backward, sequence=True
)


# ----------------------------------------------------------------------------- neural bigram / trigram
def _bigram(name: str, forward, backward, torch_module) -> Component:
    """params as inputs; fixed: idx (B, C), and targets (B,) for a loss or counts (B, V) for the
    count-weighted loss. Outputs logits, and the loss when targets or counts are given."""

    def numpy_forward(inputs, fixed):
        logits, cache = forward(inputs, fixed["idx"])
        loss, dloss = _bigram_numpy_loss(logits, fixed)
        return {"logits": logits} | ({} if loss is None else {"loss": loss}), (cache, dloss)

    def numpy_backward(upstream, caches):
        cache, dloss = caches
        dlogits = upstream.get("logits", 0) + (0 if dloss is None else upstream["loss"] * dloss)
        return backward(dlogits, cache)

    def torch_forward(inputs, fixed):
        module = torch_module(inputs)  # sized by the parameters, so the module checks idx itself
        logits, loss = _call(module, inputs, fixed["idx"], fixed.get("targets"))
        if "counts" in fixed:
            loss = torch_bigram.count_cross_entropy(logits, fixed["counts"])
        return {"logits": logits} | ({} if loss is None else {"loss": loss})

    return Component(name, numpy_forward, torch_forward, numpy_backward)


def _bigram_numpy_loss(logits, fixed):
    if "counts" in fixed:
        return np_bigram.count_cross_entropy(logits, fixed["counts"])
    if fixed.get("targets") is not None:
        return np_ce.cross_entropy(logits, fixed["targets"])
    return None, None


def _table_module(inputs):
    rows, vocab = inputs["table.weight"].shape  # rows = vocab ** context
    context = round(math.log(rows) / math.log(vocab)) if vocab > 1 else 1
    return _module(_build_table, vocab, context, inputs["table.weight"].dtype)


def _build_table(vocab, context, dtype):
    return torch_bigram.TableLM(vocab, context).to(dtype)


def _factored_module(inputs):
    vocab, embed_dim = inputs["embedding.weight"].shape
    context = inputs["output.weight"].shape[1] // embed_dim  # the output reads C concatenated vectors
    return _module(_build_factored, vocab, context, embed_dim, inputs["embedding.weight"].dtype)


def _build_factored(vocab, context, embed_dim, dtype):
    return torch_bigram.FactoredLM(vocab, context, embed_dim).to(dtype)


TABLE_LM = _bigram("table_lm", np_bigram.table_lm_forward, np_bigram.table_lm_backward, _table_module)
FACTORED_LM = _bigram("factored_lm", np_bigram.factored_lm_forward, np_bigram.factored_lm_backward, _factored_module)
