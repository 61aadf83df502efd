"""NeuralLM in NumPy: the whole ``ModelConfig`` family, forward and hand-chained backward.

    idx (B, T) ─ embedding ─> (B, T, E)  [+ pair_embedding (B, T, E), zero at first-level group starts]
    fusion level i:  (B, n, d) -> (B, n/g, g*d) -> hidden.i -> (B, n/g, H)
    squeeze -> (B, H)
    residual block j:  x = x + blocks.j(x)                                  (B, H)
    output Linear -> logits (B, V);  mean cross-entropy against targets (B,)

where a hidden layer is Linear -> [LayerNorm] -> activation -> Dropout (the Linear and LayerNorm
2H wide for the gated activation, which halves them back to H). Parameters and gradients
are dicts keyed exactly like ``torch_lm.neural_lm.NeuralLM.state_dict()``. The cache is a dict of
the component caches (cs231n style), so ``neural_lm_backward`` is the component backward
functions called in reverse order; ``layer_shapes`` and ``hidden_activations`` read it for the
diagnostics. Everything is computed in the parameters' dtype (float64 or float32).

``neural_lm_sequence_forward`` / ``neural_lm_sequence_backward`` compute the same model at every
position of a sequence at once, each fusion level a causal dilated convolution computed once per
position: ids (B, L) -> logits (B, L - C + 1, V), row j equal to the window logits of
``idx[:, j:j + C]``. With ``pair_embed`` a first-level unit reads the pair vectors at its taps
1..g-1 and the bare character vector at its tap 0, as a window's group does at its positions.
"""

from __future__ import annotations

import numpy as np

from numpy_ref.activations import activation_backward, activation_forward
from numpy_ref.config import ModelConfig
from numpy_ref.cross_entropy import cross_entropy
from numpy_ref.dropout import dropout_backward, dropout_forward
from numpy_ref.embedding import embedding_backward, embedding_forward
from numpy_ref.init import he_normal, xavier_normal
from numpy_ref.layernorm import layernorm_backward, layernorm_forward
from numpy_ref.linear import linear_backward, linear_forward
from numpy_ref.pair_embedding import pair_embedding_backward, pair_embedding_forward
from numpy_ref.validation import check_integer_dtype, check_ndim, check_same_shape, fail

# The output layer starts at 0.1 x its Xavier weights (and zero bias): logits near 0 mean a
# near-uniform prediction, so the initial loss is ~ln V. Full-size Xavier logits would be confidently
# wrong at random, costing the first hundreds of steps just to squash them (the "hockey stick").
OUTPUT_INIT_SCALE = 0.1


# ----------------------------------------------------------------------------- structure
def hidden_layer_names(config: ModelConfig) -> list[str]:
    """Names of the layers with an activation: "hidden.0".. (fusion levels), then "blocks.0".."""
    levels = [f"hidden.{i}" for i in range(len(config.groups))]
    return levels + [f"blocks.{j}" for j in range(config.n_blocks)]


def layer_names(config: ModelConfig) -> list[str]:
    """Every parameterised layer in forward order: "embedding", ["pair_embedding"], hidden layers, "output"."""
    inputs = ["embedding", "pair_embedding"] if config.pair_embed else ["embedding"]
    return [*inputs, *hidden_layer_names(config), "output"]


def linear_out_features(config: ModelConfig) -> int:
    """out_features of every hidden layer's Linear: 2H for "gated" (filter and gate halves), else H."""
    return 2 * config.hidden_dim if config.activation == "gated" else config.hidden_dim


def hidden_fan_ins(config: ModelConfig) -> dict[str, int]:
    """in_features of every hidden layer's Linear: g*d for a fusion level, H for a block."""
    fan_ins, d = {}, config.embed_dim
    for i, g in enumerate(config.groups):
        fan_ins[f"hidden.{i}"] = g * d
        d = config.hidden_dim
    return fan_ins | {f"blocks.{j}": config.hidden_dim for j in range(config.n_blocks)}


def init_params(config: ModelConfig, rng: np.random.Generator, dtype=np.float64) -> dict[str, np.ndarray]:
    """Fresh parameters, keyed and ordered like ``NeuralLM.state_dict()``.

    embedding N(0, 1); pair embedding 0 (``torch_lm.pair_embedding.PairEmbedding`` says why);
    hidden weights He-normal for relu, Xavier-normal for tanh and gated, zero biases; LayerNorm
    weight 1, bias 0; output weight OUTPUT_INIT_SCALE x Xavier-normal, zero bias.
    """
    hidden_init = he_normal if config.activation == "relu" else xavier_normal
    V, E, H = config.vocab_size, config.embed_dim, config.hidden_dim
    width = linear_out_features(config)  # H, or 2H for gated units
    params = {"embedding.weight": rng.standard_normal((V, E)).astype(dtype)}
    if config.pair_embed:
        params["pair_embedding.weight"] = np.zeros((V * V, E), dtype)  # draws nothing from rng
    for name, fan_in in hidden_fan_ins(config).items():
        params[f"{name}.linear.weight"] = hidden_init(width, fan_in, rng, dtype=dtype)
        params[f"{name}.linear.bias"] = np.zeros(width, dtype)
        if config.norm:
            params[f"{name}.norm.weight"] = np.ones(width, dtype)
            params[f"{name}.norm.bias"] = np.zeros(width, dtype)
    params["output.weight"] = OUTPUT_INIT_SCALE * xavier_normal(V, H, rng, dtype=dtype)
    params["output.bias"] = np.zeros(V, dtype)
    return params


# ----------------------------------------------------------------------------- input checks
# Pure Python on shapes and dtypes, so NeuralLM.forward raises the same errors (it imports these).
# Id ranges are checked by the components (embedding for idx, cross_entropy for targets).
def check_idx(where: str, config: ModelConfig, shape: tuple, is_integer: bool, dtype: object) -> None:
    """idx must be an integer array of shape (B, config.context) with B >= 1."""
    check_integer_dtype(where, "idx", is_integer, dtype)
    check_ndim(where, "idx", shape, (2,))
    if shape[0] < 1 or shape[1] != config.context:
        fail(
            where,
            f"idx must have shape (B, {config.context}) with B >= 1 "
            f"(T must equal config.context), got shape {tuple(shape)}",
        )


def check_targets(where: str, idx_shape: tuple, shape: tuple, is_integer: bool, dtype: object) -> None:
    """targets must be an integer array of shape (B,), one next-token id per row of idx."""
    check_integer_dtype(where, "targets", is_integer, dtype)
    check_same_shape(where, "targets", shape, "idx.shape[:1]", tuple(idx_shape[:1]))


def check_sequence_idx(where: str, config: ModelConfig, shape: tuple, is_integer: bool, dtype: object) -> None:
    """idx must be an integer array of shape (B, L) with B >= 1 and L >= config.context."""
    check_integer_dtype(where, "idx", is_integer, dtype)
    check_ndim(where, "idx", shape, (2,))
    if shape[0] < 1 or shape[1] < config.context:
        fail(
            where, f"idx must have shape (B, L) with B >= 1 and L >= context {config.context}, got shape {tuple(shape)}"
        )


def check_sequence_targets(
    where: str, config: ModelConfig, idx_shape: tuple, shape: tuple, is_integer: bool, dtype: object
) -> None:
    """targets must be integers of shape (B, L - context + 1): one per position with a full context."""
    check_integer_dtype(where, "targets", is_integer, dtype)
    expected = (idx_shape[0], idx_shape[1] - config.context + 1)
    if tuple(shape) != expected:
        fail(where, f"targets must have shape (B, L - context + 1) = {expected}, got {tuple(shape)}")


def check_mask_names(where: str, config: ModelConfig, names) -> None:
    """Every dropout-mask name must be a hidden layer (a typo would silently draw a fresh mask)."""
    unknown = sorted(set(names) - set(hidden_layer_names(config)))
    if unknown:
        fail(where, f"masks has unknown layer names {unknown}; hidden layers are {hidden_layer_names(config)}")


# ----------------------------------------------------------------------------- hidden layer
def hidden_layer_forward(x, params, name, config, train=False, rng=None, mask=None):
    """Linear -> [LayerNorm] -> activation -> Dropout of layer ``name``: x (..., D_in) -> (..., H)
    (through (..., 2H) before a gated activation).

    The cache keeps the activation's input ``z`` and output ``a`` (post-activation, pre-dropout)
    for the diagnostics and for checking that a ReLU test stays away from the kink.
    """
    z, linear_cache = linear_forward(x, params[f"{name}.linear.weight"], params[f"{name}.linear.bias"])
    norm_cache = None
    if config.norm:
        z, norm_cache = layernorm_forward(
            z, params[f"{name}.norm.weight"], params[f"{name}.norm.bias"], config.layernorm_eps
        )
    a, act_cache = activation_forward(config.activation, z)
    out, dropout_cache = dropout_forward(a, config.dropout, rng=rng, mask=mask, train=train)
    cache = {
        "name": name,
        "activation": config.activation,
        "linear": linear_cache,
        "norm": norm_cache,
        "act": act_cache,
        "dropout": dropout_cache,
        "z": z,
        "a": a,
    }
    return out, cache


def hidden_layer_backward(dout, cache):
    """Gradients of ``hidden_layer_forward``: returns (dx, grads keyed "<name>.linear.weight"...)."""
    name, grads = cache["name"], {}
    da = dropout_backward(dout, cache["dropout"])
    dz = activation_backward(cache["activation"], da, cache["act"])
    if cache["norm"] is not None:
        dz, grads[f"{name}.norm.weight"], grads[f"{name}.norm.bias"] = layernorm_backward(dz, cache["norm"])
    dx, grads[f"{name}.linear.weight"], grads[f"{name}.linear.bias"] = linear_backward(dz, cache["linear"])
    return dx, grads


# ----------------------------------------------------------------------------- model
def neural_lm_forward(params, idx, config, targets=None, train=False, rng=None, masks=None):
    """Logits and loss of the NeuralLM.

    idx: (B, T) integer ids in [0, V), T == config.context; targets: (B,) ids in [0, V) or None.
    train: apply dropout, with ``masks[layer_name]`` (boolean keep-mask of that layer's output
    shape) where given, else a mask drawn from ``rng``.
    Returns logits (B, V), loss (0-d array, mean cross-entropy; None without targets), cache.
    """
    where = "neural_lm_forward"
    idx = np.asarray(idx)
    check_idx(where, config, idx.shape, np.issubdtype(idx.dtype, np.integer), idx.dtype)
    if targets is not None:
        targets = np.asarray(targets)
        check_targets(where, idx.shape, targets.shape, np.issubdtype(targets.dtype, np.integer), targets.dtype)
    masks = masks or {}
    check_mask_names(where, config, masks)

    x, embedding_cache = embedding_forward(idx, params["embedding.weight"])  # (B, T, E)
    shapes, levels, pair_cache = [("embedding", x.shape)], [], None
    if config.pair_embed:  # zero at every first-level group start: no pair crosses a group's edge
        pair, pair_cache = pair_embedding_forward(idx, params["pair_embedding.weight"], config.groups[0])  # (B, T, E)
        x = x + pair
        shapes.append(("pair_embedding", pair.shape))
    for i, g in enumerate(config.groups):
        name = f"hidden.{i}"
        B, n, d = x.shape
        fused = x.reshape(B, n // g, g * d)  # (B, n/g, g*d): g neighbours side by side
        x, layer_cache = hidden_layer_forward(fused, params, name, config, train, rng, masks.get(name))  # (B, n/g, H)
        levels.append(((B, n, d), layer_cache))  # backward un-fuses to (B, n, d)
        shapes.append((name, x.shape))
    x = x.reshape(x.shape[0], config.hidden_dim)  # (B, H): one group left
    logits, loss, cache = _head_forward(x, params, config, targets, train, rng, masks, shapes)
    return logits, loss, cache | {"embedding": embedding_cache, "pair": pair_cache, "levels": levels}


def _head_forward(x, params, config, targets, train, rng, masks, shapes):
    """Residual blocks, output Linear and loss on x (..., H): (logits (..., V), loss, cache)."""
    blocks = []
    for j in range(config.n_blocks):
        name = f"blocks.{j}"
        h, layer_cache = hidden_layer_forward(x, params, name, config, train, rng, masks.get(name))
        x = x + h  # residual
        blocks.append(layer_cache)
        shapes.append((name, h.shape))
    logits, output_cache = linear_forward(x, params["output.weight"], params["output.bias"])  # (..., V)
    shapes.append(("output", logits.shape))
    loss = dlogits = None
    if targets is not None:  # mean over every position: the logits' rows
        loss, dlogits = cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        dlogits = dlogits.reshape(logits.shape)
    return logits, loss, {"blocks": blocks, "output": output_cache, "dlogits": dlogits, "shapes": shapes}


def neural_lm_backward(cache) -> dict[str, np.ndarray]:
    """Gradient of the mean loss w.r.t. every parameter, keyed like the params dict.

    The loss gradient starts from cross_entropy's dlogits (so the forward needs targets).
    """
    dx, grads = _head_backward("neural_lm_backward", cache)  # (B, H)
    dx = dx.reshape(dx.shape[0], 1, dx.shape[1])  # (B, 1, H): undo the squeeze
    for in_shape, layer_cache in reversed(cache["levels"]):
        dfused, layer_grads = hidden_layer_backward(dx, layer_cache)  # (B, n/g, g*d)
        dx = dfused.reshape(in_shape)  # (B, n, d): undo the fusion
        grads |= layer_grads
    grads["embedding.weight"] = embedding_backward(dx, cache["embedding"])
    if cache["pair"] is not None:  # x = embedding + pair: the same gradient reaches both
        grads["pair_embedding.weight"] = pair_embedding_backward(dx, cache["pair"])
    return grads


def _head_backward(where: str, cache):
    """Gradients of ``_head_forward`` from the loss: (dx (..., H), grads of the blocks and output)."""
    if cache["dlogits"] is None:
        fail(where, "the forward pass was run without targets, so there is no loss to differentiate; pass targets")
    grads = {}
    dx, grads["output.weight"], grads["output.bias"] = linear_backward(cache["dlogits"], cache["output"])
    for layer_cache in reversed(cache["blocks"]):
        dh, layer_grads = hidden_layer_backward(dx, layer_cache)
        dx = dx + dh  # identity path plus the block's branch
        grads |= layer_grads
    return dx, grads


# ----------------------------------------------------------------------------- every position at once
def neural_lm_sequence_forward(params, idx, config, targets=None, train=False, rng=None, masks=None):
    """Logits at every position of a sequence that has a full context, and their mean loss.

    idx (B, L) integer ids, L >= C = config.context -> logits (B, P, V), P = L - C + 1: row j is
    what the window ``idx[:, j:j + C]`` predicts, the character after it. targets (B, P) or None.
    A fusion level is a causal dilated convolution: its output at a position fuses its input at
    that position and the g - 1 before it spaced by the dilation s (the product of the earlier
    groups), so each level runs once per position and every window above it reuses the result.
    Dropout masks, where given, have the sequence's shapes: (B, L_i, H) for level i, (B, P, H)
    for a block. Returns logits, loss (None without targets) and the cache.
    """
    where = "neural_lm_sequence_forward"
    idx = np.asarray(idx)
    check_sequence_idx(where, config, idx.shape, np.issubdtype(idx.dtype, np.integer), idx.dtype)
    if targets is not None:
        targets = np.asarray(targets)
        check_sequence_targets(
            where, config, idx.shape, targets.shape, np.issubdtype(targets.dtype, np.integer), targets.dtype
        )
    masks = masks or {}
    check_mask_names(where, config, masks)

    x, embedding_cache = embedding_forward(idx, params["embedding.weight"])  # (B, L, E)
    shapes, levels, dilation = [("embedding", x.shape)], [], 1
    paired, pair_cache = x, None  # what the taps after the first of a first-level unit read
    if config.pair_embed:
        pair, pair_cache = pair_embedding_forward(idx, params["pair_embedding.weight"], idx.shape[1])  # (B, L, E)
        paired = x + pair  # row 0 has no predecessor, but only a tap 0 ever reads it
        shapes.append(("pair_embedding", pair.shape))
    for i, g in enumerate(config.groups):
        name = f"hidden.{i}"
        taps = dilation * np.arange(g)  # input offsets of one output, oldest first
        length = x.shape[1] - int(taps[-1])
        later = paired if i == 0 else x  # a group's first position (tap 0) reads no pair
        fused = np.concatenate(
            [(later if k else x)[:, tap : tap + length] for k, tap in enumerate(taps)], axis=-1
        )  # (B, length, g*d)
        in_shape = x.shape
        x, layer_cache = hidden_layer_forward(
            fused, params, name, config, train, rng, masks.get(name)
        )  # (B, length, H)
        levels.append((in_shape, taps, length, layer_cache))
        shapes.append((name, x.shape))
        dilation *= g
    logits, loss, cache = _head_forward(x, params, config, targets, train, rng, masks, shapes)  # (B, P, V)
    return logits, loss, cache | {"embedding": embedding_cache, "pair": pair_cache, "levels": levels}


def neural_lm_sequence_backward(cache) -> dict[str, np.ndarray]:
    """Gradient of the sequence forward's mean loss w.r.t. every parameter, keyed like the params.

    A level's input position feeds up to g outputs (one per tap), so its gradient is the sum of
    the shifted slices of the fused gradient: a scatter-add, not an assignment. With pair
    embeddings the first level's taps after the first read ``x + pair``: their slices also make
    the pair table's gradient.
    """
    dx, grads = _head_backward("neural_lm_sequence_backward", cache)  # (B, P, H)
    paired = cache["pair"] is not None
    for i in reversed(range(len(cache["levels"]))):
        in_shape, taps, length, layer_cache = cache["levels"][i]
        dfused, layer_grads = hidden_layer_backward(dx, layer_cache)  # (B, length, g*d)
        d = in_shape[-1]
        dx = np.zeros(in_shape, dtype=dfused.dtype)  # (B, L_in, d)
        dlater = np.zeros_like(dx) if paired and i == 0 else dx  # the gradient of x + pair
        for k, tap in enumerate(taps):
            (dlater if k else dx)[:, tap : tap + length] += dfused[..., k * d : (k + 1) * d]
        grads |= layer_grads
    if paired:
        grads["pair_embedding.weight"] = pair_embedding_backward(dlater, cache["pair"])
        dx = dx + dlater
    grads["embedding.weight"] = embedding_backward(dx, cache["embedding"])
    return grads


# ----------------------------------------------------------------------------- diagnostics hooks
def layer_shapes(cache) -> list[tuple[str, tuple[int, ...]]]:
    """(layer name, output shape) in forward order; a block's shape is its branch's (B, H)."""
    return [(name, tuple(shape)) for name, shape in cache["shapes"]]


def hidden_activations(cache) -> dict[str, np.ndarray]:
    """Post-activation (pre-dropout) output of every hidden layer, keyed by layer name."""
    layer_caches = [level[-1] for level in cache["levels"]] + cache["blocks"]  # the layer cache is last
    return {c["name"]: c["a"] for c in layer_caches}


def hidden_preactivations(cache) -> dict[str, np.ndarray]:
    """Input of every hidden layer's activation (after LayerNorm when config.norm)."""
    layer_caches = [level[-1] for level in cache["levels"]] + cache["blocks"]  # the layer cache is last
    return {c["name"]: c["z"] for c in layer_caches}
