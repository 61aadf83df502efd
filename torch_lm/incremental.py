"""Incremental NeuralLM (PyTorch): next-character logits one position at a time from cached
fusion-level outputs, for a ``NeuralLM`` module.

The same computation as ``numpy_ref/incremental.py`` (its docstring has the picture): each fusion
level keeps its last (g_i - 1) * d_i + 1 inputs and runs its own ``model.hidden[i]`` once per step
on one fused row, then the model's head gives the logits. The stream starts as C = context copies
of ``PAD_ID``, so the logits after n steps are ``model(window)`` of the last C stream ids, and
``step(PAD_ID)`` right after ``reset`` gives the prediction of the first character without
changing the state.

The model is used as it is, never copied: its parameters may change in place between steps
(dynamic evaluation), and what is computed from the next ``reset``/``step`` on uses them; outputs
already cached keep the values they were computed with. Everything runs on the model's device and
in its dtype, under ``torch.no_grad()``. A model in training mode is refused: its dropout would
make every step's prediction random, and switching it to eval here would change the caller's model
behind its back.

Twin: ``numpy_ref/incremental.py``; proof: ``parity_tests/test_incremental.py``.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import torch

from numpy_ref.incremental import PAD_ID, check_feed_ids, check_step_ids, level_dilations, level_spans
from numpy_ref.validation import check_positive_int, fail
from torch_lm._checks import check_ids_in_range, is_integer_dtype
from torch_lm.neural_lm import NeuralLM


def numpy_views(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """A CPU model's parameters as NumPy arrays sharing their memory, keyed like ``state_dict()``:
    the twin (``numpy_ref.incremental``) predicts from them, and an in-place update of a parameter
    (dynamic evaluation) is seen by both."""
    return {name: p.detach().numpy() for name, p in model.named_parameters()}


class IncrementalLM:
    """Next-character logits one position at a time from a ``NeuralLM``'s cached fusion-level outputs."""

    def __init__(self, model: NeuralLM) -> None:
        self.model = model
        self.config = model.config
        self.batch: int | None = None  # set by reset
        self._dilations = level_dilations(self.config)
        self._spans = level_spans(self.config)
        self._rings: list[deque] = []  # per level: (tap-0 input, later-tap input) of its last span positions
        self._previous: torch.Tensor | None = None  # (B,) the last id times V: its pairs' first row

    @torch.no_grad()
    def reset(self, batch: int = 1) -> None:
        """Start a stream of ``batch`` rows: fill every level's ring with the all-pad stream's inputs."""
        where = "IncrementalLM.reset"
        batch = check_positive_int(where, "batch", batch)
        self._check_eval(where)
        pad = torch.full((batch,), PAD_ID, dtype=torch.long, device=self.model.embedding.weight.device)  # (B,)
        self._previous = pad * self.config.vocab_size
        bare, later = self._embed(pad)  # (B, E) each
        self._rings = []
        for i, span in enumerate(self._spans):
            ring = deque([(bare, later)] * span, maxlen=span)  # a constant stream: one input everywhere
            self._rings.append(ring)
            if i + 1 < len(self._spans):  # the next level's constant input
                bare = later = self._level(i, ring)  # (B, H)
        self.batch = batch

    @torch.no_grad()
    def step(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B,) integers in [0, V), on the model's device -> logits (B, V) of the character
        after them: ``model(window)`` of the last C stream ids."""
        where = "IncrementalLM.step"
        check_step_ids(where, self.batch, tuple(ids.shape), is_integer_dtype(ids.dtype), ids.dtype)
        self._check_ids(where, ids)
        return self._advance(ids.long())

    @torch.no_grad()
    def feed(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, T >= 1): ``step`` through the columns in order; returns the last logits (B, V)."""
        where = "IncrementalLM.feed"
        check_feed_ids(where, self.batch, tuple(ids.shape), is_integer_dtype(ids.dtype), ids.dtype)
        self._check_ids(where, ids)
        ids = ids.long()
        for t in range(ids.shape[1]):
            logits = self._advance(ids[:, t])
        return logits

    # ------------------------------------------------------------------------- internals
    def _check_eval(self, where: str) -> None:
        """Refuse a model in training mode (see the module docstring)."""
        if self.model.training:
            fail(
                where,
                "the model is in training mode, where dropout would make every prediction random; call model.eval()",
            )

    def _check_ids(self, where: str, ids: torch.Tensor) -> None:
        """The ids' device and range (their shape and dtype are the reference's checks), and eval mode."""
        device = self.model.embedding.weight.device
        if ids.device != device:
            fail(where, f"ids must be on the model's device {device}, got {ids.device}")
        check_ids_in_range(where, "ids", ids, self.config.vocab_size)
        self._check_eval(where)

    def _advance(self, ids: torch.Tensor) -> torch.Tensor:
        """One stream position for checked int64 ids (B,) -> logits (B, V)."""
        bare, later = self._embed(ids)  # (B, E) each
        for i, ring in enumerate(self._rings):
            ring.append((bare, later))  # the oldest input falls out of the ring
            bare = later = self._level(i, ring)  # (B, H)
        logits, _ = self.model._head(bare, None, {}, None)  # (B, V): residual blocks, output Linear
        return logits

    def _embed(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Level 0's input at the position of ids (B,): the bare vector (tap 0) and what taps
        k >= 1 read, ``x + pair(previous id, id)`` with pair embeddings (else x itself), each (B, E).

        The tables' rows are read directly (``index_select``): the ids were checked once, where
        the modules' forwards would check them again on every call."""
        x = self.model.embedding.weight.index_select(0, ids)  # (B, E)
        if not self.config.pair_embed:
            return x, x
        pair = self.model.pair_embedding.weight.index_select(0, self._previous + ids)  # (B, E): row previous * V + id
        # A fresh product, never the caller's tensor: reusing its buffer for the next ids cannot change this pair.
        self._previous = ids * self.config.vocab_size
        return x, x + pair

    def _level(self, i: int, ring: deque) -> torch.Tensor:
        """Level i's output at the ring's newest position: its g_i taps side by side (B, g_i * D),
        D = E at level 0 and H above, -> hidden.i -> (B, H)."""
        g, d = self.config.groups[i], self._dilations[i]
        # Tap 0 is the oldest input (ring[0]), tap k sits k*d positions later; taps k >= 1 read the
        # later input (at level 0 the one with the pair), as in the sequence forward.
        fused = torch.cat([ring[0][0], *(ring[k * d][1] for k in range(1, g))], dim=-1)  # (B, g * D)
        return self.model.hidden[i](fused)
