"""Incremental NeuralLM: next-character logits one position at a time (NumPy reference).

The sequence forward (``numpy_ref.neural_lm.neural_lm_sequence_forward``) computes every fusion
level as a causal dilated convolution: level i's output at stream position p fuses its input at
positions p - (g_i - 1 - k) * d_i for taps k = 0..g_i-1 (oldest first), d_i = g_0 * ... * g_{i-1}.
A decoder that sees one character at a time needs only the newest output of each level, and
every input it reads is an output computed at an earlier step (fast WaveNet generation): each
level keeps its last (g_i - 1) * d_i + 1 inputs, and a step runs each level's hidden layer once
on one fused row, then the head (residual blocks and output Linear), with the reference's
formulas arranged for one row per call (``_layer``)::

    id (B,) ─ embedding ─> x (B, E)   [x + pair(previous id, id): what taps k >= 1 of level 0 read]
    level i:  ring_i.append(input);  its g_i taps side by side (B, g_i * D) -> hidden.i -> (B, H)
    head:     (B, H) -> logits (B, V): the prediction of the character after id

The stream before the first fed id is C = config.context copies of ``PAD_ID``, the padding
sampling puts before a short prompt, so after n steps the logits are the window forward
(``neural_lm_forward``, evaluation) of the last C stream ids, PAD-padded on the left while n < C.
Over that all-pad stream every level's output is one constant, so ``reset`` computes each level
once. The stream stays all-pad when a ``PAD_ID`` is fed first: ``step(PAD_ID)`` right after
``reset`` returns the prediction of the first character (the window of C pads) and leaves the
state as ``reset`` left it.

Twin: ``torch_lm/incremental.py``; proof: ``parity_tests/test_incremental.py`` (the window
forward is the witness).
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from numpy_ref.config import ModelConfig
from numpy_ref.validation import check_index_range, check_integer_dtype, check_ndim, check_positive_int, fail

# Sampling (torch_lm.training.sampling) left-pads prompts shorter than the context with this id, and the
# incremental predictor starts from a stream of it. Ids index the sorted character vocabulary, where id 0 of
# Tiny Shakespeare is "\n": a short prompt then reads as the start of a new line, which is where such
# prompts ("ROMEO:") occur in the text.
PAD_ID = 0
EXP_LIMIT = 80.0  # the largest -b whose exp the gate computes: finite in float32 (exp(88) overflows)


# ----------------------------------------------------------------------------- structure
def level_dilations(config: ModelConfig) -> list[int]:
    """d_i = g_0 * ... * g_{i-1}: the spacing of level i's taps in stream positions (1 for level 0)."""
    return [math.prod(config.groups[:i]) for i in range(len(config.groups))]


def level_spans(config: ModelConfig) -> list[int]:
    """(g_i - 1) * d_i + 1: the inputs level i keeps, its oldest tap to its newest."""
    return [(g - 1) * d + 1 for g, d in zip(config.groups, level_dilations(config))]


# ----------------------------------------------------------------------------- input checks
# Pure Python on shapes and dtypes (both engines); the ids' range is checked beside them with
# ``check_index_range``, on the array's extremes.
def check_step_ids(where: str, batch: int | None, shape: tuple, is_integer: bool, dtype: object) -> None:
    """ids must be integers of shape (batch,), batch the one of the last ``reset``."""
    check_reset(where, batch)
    check_integer_dtype(where, "ids", is_integer, dtype)
    check_ndim(where, "ids", shape, (1,))
    if shape[0] != batch:
        fail(where, f"ids must have shape ({batch},), one id per row of reset(batch={batch}), got shape {tuple(shape)}")


def check_feed_ids(where: str, batch: int | None, shape: tuple, is_integer: bool, dtype: object) -> None:
    """ids must be integers of shape (batch, T) with T >= 1."""
    check_reset(where, batch)
    check_integer_dtype(where, "ids", is_integer, dtype)
    check_ndim(where, "ids", shape, (2,))
    if shape[0] != batch or shape[1] < 1:
        fail(
            where,
            f"ids must have shape ({batch}, T) with T >= 1, one row per row of reset(batch={batch}), "
            f"got shape {tuple(shape)}",
        )


def check_reset(where: str, batch: int | None) -> None:
    """A step needs the caches ``reset`` fills."""
    if batch is None:
        fail(where, "no stream yet; call reset(batch) first")


# ----------------------------------------------------------------------------- predictor
class IncrementalLM:
    """Next-character logits one position at a time from cached fusion-level outputs.

    ``params`` are keyed like ``numpy_ref.neural_lm`` (``NeuralLM.state_dict()`` names) and kept
    by reference, never copied: a caller may update the arrays in place between steps (dynamic
    evaluation), and every output computed from the next ``reset``/``step`` on uses the new values;
    outputs already cached keep the values they were computed with. Computes in the params' dtype,
    in evaluation (no dropout).
    """

    def __init__(self, params: dict[str, np.ndarray], config: ModelConfig) -> None:
        self.params = params
        self.config = config
        self.batch: int | None = None  # set by reset
        self._dilations = level_dilations(config)
        self._spans = level_spans(config)
        self._rings: list[deque] = []  # per level: (tap-0 input, later-tap input) of its last span positions
        self._previous: np.ndarray | None = None  # (B,) the last id times V: its pairs' first row

    def reset(self, batch: int = 1) -> None:
        """Start a stream of ``batch`` rows: fill every level's ring with the all-pad stream's inputs."""
        batch = check_positive_int("IncrementalLM.reset", "batch", batch)
        pad = np.full(batch, PAD_ID, dtype=np.intp)  # (B,)
        self._previous = pad * self.config.vocab_size
        bare, later = self._embed(pad)  # (B, E) each
        self._rings = []
        for i, span in enumerate(self._spans):
            ring = deque([(bare, later)] * span, maxlen=span)  # a constant stream: one input everywhere
            self._rings.append(ring)
            if i + 1 < len(self._spans):  # the next level's constant input
                bare = later = self._level(i, ring)  # (B, H)
        self.batch = batch

    def step(self, ids) -> np.ndarray:
        """ids (B,) integers in [0, V) -> logits (B, V) of the character after them: the window
        forward of the last C stream ids."""
        where = "IncrementalLM.step"
        ids = np.asarray(ids)
        check_step_ids(where, self.batch, ids.shape, ids.dtype.kind in "iu", ids.dtype)
        values = ids.tolist()  # a Python list's extremes cost less than two NumPy reductions at small B
        check_index_range(where, "ids", min(values), max(values), self.config.vocab_size)
        return self._advance(ids.astype(np.intp, copy=False))

    def feed(self, ids) -> np.ndarray:
        """ids (B, T >= 1): ``step`` through the columns in order; returns the last logits (B, V)."""
        where = "IncrementalLM.feed"
        ids = np.asarray(ids)
        check_feed_ids(where, self.batch, ids.shape, ids.dtype.kind in "iu", ids.dtype)
        check_index_range(where, "ids", int(ids.min()), int(ids.max()), self.config.vocab_size)
        ids = ids.astype(np.intp, copy=False)
        for t in range(ids.shape[1]):
            logits = self._advance(ids[:, t])
        return logits

    # ------------------------------------------------------------------------- internals
    def _advance(self, ids: np.ndarray) -> np.ndarray:
        """One stream position for checked ids (B,) intp -> logits (B, V)."""
        bare, later = self._embed(ids)  # (B, E) each
        for i, ring in enumerate(self._rings):
            ring.append((bare, later))  # the oldest input falls out of the ring
            bare = later = self._level(i, ring)  # (B, H)
        for j in range(self.config.n_blocks):
            bare = bare + self._layer(f"blocks.{j}", bare)  # residual, (B, H)
        logits = bare @ self.params["output.weight"].T  # (B, V)
        logits += self.params["output.bias"]
        return logits

    def _embed(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Level 0's input at the position of ids (B,): the bare vector (tap 0) and what taps
        k >= 1 read, ``x + pair(previous id, id)`` with pair embeddings (else x itself), each (B, E)."""
        x = self.params["embedding.weight"][ids]  # (B, E), a fresh array
        if not self.config.pair_embed:
            return x, x
        pair = self.params["pair_embedding.weight"][self._previous + ids]  # (B, E): row previous * V + id
        # A fresh product, never the caller's array: reusing its buffer for the next ids cannot change this pair.
        self._previous = ids * self.config.vocab_size
        return x, x + pair

    def _level(self, i: int, ring: deque) -> np.ndarray:
        """Level i's output at the ring's newest position: its g_i taps side by side (B, g_i * D),
        D = E at level 0 and H above, -> hidden.i -> (B, H)."""
        g, d = self.config.groups[i], self._dilations[i]
        # Tap 0 is the oldest input (ring[0]), tap k sits k*d positions later; taps k >= 1 read the
        # later input (at level 0 the one with the pair), as in the sequence forward.
        fused = np.concatenate([ring[0][0], *(ring[k * d][1] for k in range(1, g))], axis=-1)  # (B, g * D)
        return self._layer(f"hidden.{i}", fused)

    def _layer(self, name: str, x: np.ndarray) -> np.ndarray:
        """Hidden layer ``name`` in evaluation on rows x (B, D_in) -> (B, H): Linear, LayerNorm,
        activation (dropout is the identity), the formulas of ``hidden_layer_forward`` organised
        for one row per call. A step's cost there is per NumPy call, not per number, so every
        operation after the product writes into the product's own fresh array, without the
        reference layers' checks and caches; the parity test holds it to the window forward."""
        p, config = self.params, self.config
        z = x @ p[f"{name}.linear.weight"].T  # (B, width): a fresh array, ours to overwrite
        z += p[f"{name}.linear.bias"]
        if config.norm:
            width = z.shape[-1]
            z -= z.sum(axis=-1, keepdims=True) / width  # centred
            z *= 1 / np.sqrt((z * z).sum(axis=-1, keepdims=True) / width + config.layernorm_eps)
            z *= p[f"{name}.norm.weight"]
            z += p[f"{name}.norm.bias"]
        if config.activation == "relu":
            return np.maximum(z, 0, out=z)
        if config.activation == "tanh":
            return np.tanh(z, out=z)
        h = z.shape[-1] // 2  # gated: tanh(a) * sigmoid(b) = tanh(a) / (1 + exp(-b))
        gate = z[:, h:]
        np.negative(gate, out=gate)
        np.minimum(gate, EXP_LIMIT, out=gate)  # exp stays finite; sigmoid(-80) = 2e-35 is 0 to any sum
        np.exp(gate, out=gate)
        gate += 1
        return np.divide(np.tanh(z[:, :h]), gate)
