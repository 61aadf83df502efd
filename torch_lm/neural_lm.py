"""NeuralLM (PyTorch): the whole ``ModelConfig`` family, built from the project's own modules.

    idx (B, T) ─ embedding ─> (B, T, E)  [+ pair_embedding (B, T, E), zero at first-level group starts]
    fusion level i:  (B, n, d) -> (B, n/g, g*d) -> hidden.i -> (B, n/g, H)
    squeeze -> (B, H)
    residual block j:  x = x + blocks.j(x)                                  (B, H)
    output Linear -> logits (B, V);  mean cross-entropy against targets (B,)

A hidden layer (``HiddenLayer``) is Linear -> [LayerNorm] -> activation -> Dropout (the Linear
and LayerNorm 2H wide before the gated activation, which halves them back to H), so
``state_dict()`` keys are exactly the ``numpy_ref.neural_lm`` parameter names. Autograd gives
the gradients the reference chains by hand.

Twin: ``numpy_ref/neural_lm.py``; proof: ``parity_tests/test_neural_lm.py``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from numpy_ref.config import ModelConfig
from numpy_ref.incremental import PAD_ID as PAD_ID  # the stream's padding id, defined once (beside its reason)
from numpy_ref.neural_lm import (
    OUTPUT_INIT_SCALE,
    check_idx,
    check_mask_names,
    check_sequence_idx,
    check_sequence_targets,
    check_targets,
    hidden_fan_ins,
    hidden_layer_names,
    layer_names,
    linear_out_features,
)
from torch_lm._checks import is_integer_dtype
from torch_lm.activations import make_activation
from torch_lm.cross_entropy import cross_entropy
from torch_lm.dropout import Dropout
from torch_lm.embedding import Embedding
from torch_lm.layernorm import LayerNorm
from torch_lm.linear import Linear
from torch_lm.pair_embedding import PairEmbedding


class HiddenLayer(nn.Module):
    """Linear -> [LayerNorm] -> activation -> Dropout: (..., in_features) -> (..., hidden_dim).

    The Linear is He-initialised before a ReLU, Xavier before a tanh or a gated unit (whose
    Linear and LayerNorm are 2 * hidden_dim wide: the filter and the gate).
    """

    def __init__(self, in_features: int, config: ModelConfig) -> None:
        super().__init__()
        init = "he_normal" if config.activation == "relu" else "xavier_normal"
        width = linear_out_features(config)
        self.linear = Linear(in_features, width, init=init)
        self.norm = LayerNorm(width, eps=config.layernorm_eps) if config.norm else None
        self.act = make_activation(config.activation)
        self.dropout = Dropout(config.dropout)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """x (..., in_features) -> (..., H); ``mask``/``generator`` only matter in training mode."""
        x = self.linear(x)
        if self.norm is not None:
            x = self.norm(x)
        return self.dropout(self.act(x), mask=mask, generator=generator)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Linear: He / Xavier weight, zero bias; LayerNorm: weight 1, bias 0."""
        self.linear.reset_parameters(generator)
        if self.norm is not None:
            self.norm.reset_parameters()


class NeuralLM(nn.Module):
    """Character language model: ``forward(idx (B, T), targets (B,) | None) -> (logits (B, V), loss)``."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = Embedding(config.vocab_size, config.embed_dim)
        if config.pair_embed:  # absent otherwise, so the default model's state_dict is unchanged
            self.pair_embedding = PairEmbedding(config.vocab_size, config.embed_dim)
        fan_ins = list(hidden_fan_ins(config).values())  # fusion levels first, then blocks
        levels = len(config.groups)
        self.hidden = nn.ModuleList(HiddenLayer(f, config) for f in fan_ins[:levels])
        self.blocks = nn.ModuleList(HiddenLayer(f, config) for f in fan_ins[levels:])
        self.output = Linear(config.hidden_dim, config.vocab_size)
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """embedding N(0, 1); pair embedding 0 (``PairEmbedding`` says why); hidden He (relu) /
        Xavier (tanh, gated) with zero bias; LayerNorm 1, 0; output OUTPUT_INIT_SCALE x Xavier
        with zero bias, so the initial loss is ~ln V (see ``numpy_ref.neural_lm.OUTPUT_INIT_SCALE``
        for why). Same distributions as ``init_params``."""
        self.embedding.reset_parameters(generator)
        if self.config.pair_embed:
            self.pair_embedding.reset_parameters(generator)
        for _, layer in self.hidden_layers():
            layer.reset_parameters(generator)
        self.output.reset_parameters(generator)
        with torch.no_grad():
            self.output.weight.mul_(OUTPUT_INIT_SCALE)

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        masks: dict[str, torch.Tensor] | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits and mean cross-entropy loss.

        idx (B, T) integer ids in [0, V) with T == config.context; targets (B,) ids or None.
        In training mode, dropout uses ``masks[layer_name]`` (boolean keep-mask of that layer's
        output shape) where given, else draws from ``generator`` (the default generator if None).
        Returns logits (B, V) and a 0-d loss (None without targets).
        """
        self._check_inputs(idx, targets, masks)
        masks = masks or {}
        x = self.embedding(idx)  # (B, T, E)
        if self.config.pair_embed:  # zero at every first-level group start: no pair crosses a group's edge
            x = x + self.pair_embedding(idx, self.config.groups[0])  # (B, T, E)
        for i, (g, layer) in enumerate(zip(self.config.groups, self.hidden)):
            B, n, d = x.shape
            x = layer(x.reshape(B, n // g, g * d), masks.get(f"hidden.{i}"), generator)  # (B, n/g, H)
        return self._head(x.squeeze(1), targets, masks, generator)  # (B, 1, H) -> (B, H)

    def _head(self, x, targets, masks, generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Residual blocks, output Linear and mean loss on x (..., H): logits (..., V) and the loss
        over every row (None without targets); ``numpy_ref.neural_lm._head_forward``."""
        for j, block in enumerate(self.blocks):
            x = x + block(x, masks.get(f"blocks.{j}"), generator)  # residual, (..., H)
        logits = self.output(x)  # (..., V)
        if targets is None:
            return logits, None
        return logits, cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))

    def forward_sequence(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        masks: dict[str, torch.Tensor] | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits at every position of a sequence that has a full context, and their mean loss.

        idx (B, L) ids with L >= context -> logits (B, L - context + 1, V): row j is what the
        window ``idx[:, j:j + context]`` predicts; targets (B, L - context + 1) or None. Each fusion
        level is a causal dilated convolution (``numpy_ref.neural_lm.neural_lm_sequence_forward``):
        its output at a position fuses the g inputs at that position and before it, spaced by the
        product of the earlier groups. Dropout masks, where given, have the sequence's shapes.
        With pair embeddings a first-level unit's taps after the first read ``x + pair``.
        """
        self._check_sequence(idx, targets, masks)
        masks = masks or {}
        x, dilation = self.embedding(idx), 1  # (B, L, E)
        paired = x  # what the taps after the first of a first-level unit read
        if self.config.pair_embed:  # row 0 has no predecessor, but only a tap 0 ever reads it
            paired = x + self.pair_embedding(idx, idx.shape[1])  # (B, L, E)
        for i, (g, layer) in enumerate(zip(self.config.groups, self.hidden)):
            length = x.shape[1] - (g - 1) * dilation
            later = paired if i == 0 else x  # a group's first position (tap 0) reads no pair
            fused = torch.cat(
                [(later if k else x)[:, k * dilation : k * dilation + length] for k in range(g)], dim=-1
            )  # (B, length, g*d)
            x = layer(fused, masks.get(f"hidden.{i}"), generator)  # (B, length, H)
            dilation *= g
        return self._head(x, targets, masks, generator)  # (B, P, V)

    def _check_sequence(self, idx, targets, masks) -> None:
        """The errors of ``numpy_ref.neural_lm.neural_lm_sequence_forward`` (ids: the embedding)."""
        where = "NeuralLM.forward_sequence"
        check_sequence_idx(where, self.config, tuple(idx.shape), is_integer_dtype(idx.dtype), idx.dtype)
        if targets is not None:
            shape, dtype = tuple(targets.shape), targets.dtype
            check_sequence_targets(where, self.config, tuple(idx.shape), shape, is_integer_dtype(dtype), dtype)
        check_mask_names(where, self.config, masks or {})

    def _check_inputs(self, idx, targets, masks) -> None:
        """Shape and dtype errors, shared with ``neural_lm_forward`` (ids: see the components)."""
        where = "NeuralLM.forward"
        check_idx(where, self.config, tuple(idx.shape), is_integer_dtype(idx.dtype), idx.dtype)
        if targets is not None:
            check_targets(where, tuple(idx.shape), tuple(targets.shape), is_integer_dtype(targets.dtype), targets.dtype)
        if masks:  # no masks (every training step) cannot hold an unknown name
            check_mask_names(where, self.config, masks)

    # ------------------------------------------------------------------------- introspection
    def hidden_layers(self) -> list[tuple[str, HiddenLayer]]:
        """(name, layer) of every hidden layer: "hidden.0".. then "blocks.0".."""
        return list(zip(hidden_layer_names(self.config), [*self.hidden, *self.blocks]))

    def layer_names(self) -> list[str]:
        """["embedding", ("pair_embedding",) "hidden.0", ..., "blocks.0", ..., "output"]: the
        diagnostics' layers."""
        return layer_names(self.config)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @contextlib.contextmanager
    def capture_activations(self) -> Iterator[dict[str, torch.Tensor]]:
        """Record every hidden layer's post-activation (pre-dropout) output, detached.

        ``with model.capture_activations() as acts: model(idx)`` fills ``acts`` (name -> tensor
        of that layer's output shape, from the last forward inside the block). Forward hooks on
        the activation modules are added on entry and removed on exit, so nothing is paid
        otherwise; the recorded tensors are detached views, not copies.
        """
        acts: dict[str, torch.Tensor] = {}

        def recorder(name):
            def hook(module, inputs, output):
                acts[name] = output.detach()

            return hook

        handles = [layer.act.register_forward_hook(recorder(name)) for name, layer in self.hidden_layers()]
        try:
            yield acts
        finally:
            for handle in handles:
                handle.remove()
