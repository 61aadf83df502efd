"""``ModelConfig``: the NeuralLM's hyperparameters, shared by both engines.

Pure Python (no NumPy, no torch) so that ``numpy_ref`` and ``torch_lm`` build the same
architecture from the same object, and a checkpoint can store it as a plain dict. It has no
torch twin on purpose: ``torch_lm`` imports it from here (one definition, not two to keep equal);
its checks are exercised by ``parity_tests/test_neural_lm.py`` and ``test_cli.py``.

The architecture family (docs/DESIGN.md §1, NeuralLM; Bengio et al. 2003, with makemore's
WaveNet-style hierarchical fusion and optional residual blocks)::

    idx (B, T) ─ embedding ─> (B, T, E)
    [+ pair_embedding of (idx[t-1], idx[t]) at every t with t % groups[0] != 0]   # pair_embed
    for g in groups:                       # groups = fusion, or (T,) for the flat MLP
        reshape (B, n, d) -> (B, n/g, g*d) # fuse g neighbouring vectors
        Linear -> [LayerNorm] -> act -> [Dropout]          # (B, n/g, H)
    squeeze -> (B, H)
    repeat n_blocks:  x = x + Dropout(act(LayerNorm(Linear(x))))   # residual, (B, H)
    Linear -> logits (B, V)

``activation="gated"`` is WaveNet's gated unit: the Linear (and LayerNorm) of a hidden layer is
2H wide, and act(z) = tanh(z[..., :H]) * sigmoid(z[..., H:]) brings it back to H.
``pair_embed=True`` adds a second table of V*V vectors, one per exact character pair, to the
character vectors, only where the previous character is in the same first-level fusion group: a
first-level unit then reads the same inputs in every window that contains it (a group's first
character has no predecessor in the first window), so the sequence forward, which computes each
unit once for all windows, stays equal to the window forward.

``fusion=()`` is the flat Bengio MLP: the whole context is concatenated and fed to one
hidden layer. ``fusion=(2, 2, 2)`` with ``context=8`` fuses pairs, then pairs of pairs, ...
``fusion=None`` (the default) means ``default_fusion(context)``: ``(2, 2, 2, 2)`` at the default
context of 16 — pairs, pairs of pairs, and so on up to the whole context.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from numpy_ref.validation import check_nonnegative_int, check_positive_int, check_probability, fail

ACTIVATIONS = ("tanh", "relu", "gated")


def default_fusion(context: int) -> tuple[int, ...]:
    """The fusion used when none is given: pairs at every level, ``(2,) * log2(context)``, for a
    context that is a power of two above 1 — ``(2, 2, 2, 2)`` for the default context of 16, a
    WaveNet-style tree — and the flat MLP ``()`` otherwise.

    So ``--context 32`` alone keeps the default's shape, five levels of pairs, and a context that
    is not a power of two gives the plain Bengio MLP rather than an error.
    """
    if isinstance(context, int) and not isinstance(context, bool) and context > 1 and not context & (context - 1):
        return (2,) * (context.bit_length() - 1)
    return ()


@dataclass(frozen=True)
class ModelConfig:
    """Hyperparameters of the character NeuralLM (see the module docstring for the shapes)."""

    # The defaults are the recipe that won the search recorded in docs/EXPERIMENTS.md.
    vocab_size: int = 65
    context: int = 16  # T: characters of context
    embed_dim: int = 32  # E: size of each character vector
    hidden_dim: int = 384  # H: width of every hidden layer
    fusion: tuple[int, ...] | None = None  # group sizes per level, product == context; () = flat
    # MLP; None = default_fusion(context), (2, 2, 2, 2) here
    n_blocks: int = 0  # residual H -> H blocks after the fusion levels
    activation: str = "gated"  # "tanh", "relu" or "gated" (tanh(a) * sigmoid(b) of a Linear to 2H)
    norm: bool = True  # LayerNorm after each hidden Linear, before the activation
    dropout: float = 0.1  # inverted dropout after each hidden activation
    layernorm_eps: float = 1e-5
    pair_embed: bool = False  # add an exact (previous, current) pair vector inside first-level groups

    def __post_init__(self) -> None:
        where = "ModelConfig"
        for name in ("vocab_size", "context", "embed_dim", "hidden_dim"):
            check_positive_int(where, name, getattr(self, name))
        check_nonnegative_int(where, "n_blocks", self.n_blocks)
        if self.activation not in ACTIVATIONS:
            fail(where, f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        check_probability(where, "dropout", self.dropout)
        if not isinstance(self.pair_embed, bool):
            fail(where, f"pair_embed must be True or False, got {self.pair_embed!r}")
        fusion = default_fusion(self.context) if self.fusion is None else tuple(self.fusion)
        object.__setattr__(self, "fusion", fusion)
        for g in self.fusion:
            check_positive_int(where, "every fusion group size", g)
        if self.fusion and math.prod(self.fusion) != self.context:
            fail(
                where,
                f"fusion {self.fusion} multiplies to {math.prod(self.fusion)}, "
                f"but context is {self.context}; the product must equal the context",
            )

    @property
    def groups(self) -> tuple[int, ...]:
        """Group size of every fusion level: ``fusion``, or ``(context,)`` for the flat MLP."""
        return self.fusion or (self.context,)

    def to_dict(self) -> dict:
        """A plain dict (lists, not tuples) for checkpoints, JSON and TensorBoard hparams."""
        d = asdict(self)
        d["fusion"] = list(self.fusion)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        """Inverse of ``to_dict``; unknown keys are an error, so a stale checkpoint says so."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            fail("ModelConfig", f"unknown keys {unknown}; known keys are {sorted(known)}")
        fusion = d.get("fusion")
        return cls(**{**d, "fusion": None if fusion is None else tuple(fusion)})
