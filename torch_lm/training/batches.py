"""The train/val split and the training batches.

The split is nanoGPT's (the first 90 % of the characters train, the rest is val; docs/DESIGN.md
§3). Batches are a pure function of ``(seed, step)`` — see ``BatchSampler`` — so a resumed run needs
no sampler state and data-parallel ranks can each take their slice of the same global batch.
"""

from __future__ import annotations

import hashlib

import torch

from numpy_ref.validation import check_positive_int
from torch_lm.training.text import DataError

TRAIN_FRACTION = 0.9


def split_ids(ids: torch.Tensor, train_fraction: float = TRAIN_FRACTION) -> tuple[torch.Tensor, torch.Tensor]:
    """``(train, val)``: the first ``int(train_fraction * N)`` ids and the rest (nanoGPT's split).

    On Tiny Shakespeare: 1,003,854 train and 111,540 val characters (docs/DESIGN.md §3).
    """
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"split_ids: train_fraction must lie in (0, 1), got {train_fraction!r}")
    n_train = int(train_fraction * len(ids))
    return ids[:n_train], ids[n_train:]


def _split_fits(n_chars: int, context: int) -> bool:
    n_train = int(TRAIN_FRACTION * n_chars)
    return n_train >= context + 1 and n_chars - n_train >= 1


def check_split_fits(n_train: int, n_val: int, context: int) -> None:
    """Raise ``DataError`` unless the split leaves a training window and a held-out character.

    Training needs ``context + 1`` characters for one (window, target) pair, and the held-out
    evaluation reaches ``context`` characters back into the train text.
    """
    if n_train < context + 1 or n_val < 1:
        need = context + 2
        while not _split_fits(need, context):
            need += 1
        raise DataError(
            f"the text is too short: {n_train + n_val} characters split into "
            f"{n_train} train / {n_val} val, but context {context} needs at least "
            f"{context + 1} train characters and 1 val character ({need} characters "
            f"in all)"
        )


# ---------------------------------------------------------------------------------------------
# Batches
# ---------------------------------------------------------------------------------------------


def step_seed(seed: int, step: int, stream: str = "batch") -> int:
    """A 63-bit seed that is a pure function of ``(seed, step, stream)``.

    A hash rather than ``seed + step``, so that nearby seeds do not replay each other's batches
    shifted by a few steps, and different streams (batches, samples) are independent.
    """
    digest = hashlib.blake2b(f"{stream}:{seed}:{step}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class BatchSampler:
    """Random training rows whose content is a pure function of ``(seed, step)``.

    A row is ``targets_per_row`` consecutive targets with their contexts: the ids
    ``ids[o : o + context + P - 1]`` and the P characters that follow each full context,
    ``ids[o + context : o + context + P]`` (``NeuralLM.forward_sequence`` scores all of them at
    once). ``targets_per_row=1`` is the window batch: ``x`` (B, T) windows, ``y`` (B,) the
    character after each.

    The batch of step ``s`` is drawn by a fresh ``torch.Generator`` seeded with
    ``step_seed(seed, s)``: ``batch_size`` start offsets uniformly (with replacement) from the
    ``len(ids) - context - P + 1`` rows, gathered in one call from strided views
    (``ids.unfold(0, context + P - 1, 1)``, whose row ``o`` starts at ``ids[o]``: no index tensor of
    the batch's size and no Python loop over examples; reports/BENCH.md, "Implementation choices,
    measured", compares it with fancy indexing). Consequences:

    * resuming at step ``s`` needs no sampler state: the step number is enough;
    * data parallelism: every rank draws the same *global* batch and keeps rows
      ``[rank * B/K, (rank + 1) * B/K)``, so K ranks of ``B/K`` rows together see exactly the batch
      one process of ``B`` rows sees (``batch_size`` is the global batch size).

    The offsets are drawn on the CPU (B integers; identical on every device) and the gather runs
    where ``ids`` lives, so keep ``ids`` on the training device.
    """

    def __init__(
        self,
        ids: torch.Tensor,
        context: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        targets_per_row: int = 1,
    ):
        where = "BatchSampler"
        check_positive_int(where, "context", context)
        check_positive_int(where, "batch_size", batch_size)
        check_positive_int(where, "world_size", world_size)
        check_positive_int(where, "targets_per_row", targets_per_row)
        if ids.ndim != 1 or ids.dtype != torch.int64:
            raise ValueError(
                f"{where}: ids must be a 1-D int64 tensor, got shape {tuple(ids.shape)} and dtype {ids.dtype}"
            )
        if len(ids) < context + targets_per_row:
            raise ValueError(
                f"{where}: ids has {len(ids)} elements; context {context} and {targets_per_row} targets "
                f"per row need at least {context + targets_per_row}"
            )
        if batch_size % world_size:
            raise ValueError(
                f"{where}: batch_size {batch_size} must be divisible by world_size "
                f"{world_size}, so every rank gets the same number of rows"
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"{where}: rank must lie in [0, {world_size}), got {rank}")
        self.ids = ids
        self.context = context
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.targets_per_row = targets_per_row
        self.n_rows = len(ids) - context - targets_per_row + 1  # row o's first target is ids[o+T]
        self._inputs = ids.unfold(0, context + targets_per_row - 1, 1)  # (N - T - P + 2, T + P - 1) view
        self._targets = ids[context:].unfold(0, targets_per_row, 1)  # (N - T - P + 1, P) view

    @property
    def local_batch_size(self) -> int:
        """Rows this rank receives per step: ``batch_size / world_size``."""
        return self.batch_size // self.world_size

    @property
    def targets_per_step(self) -> int:
        """Targets of one global batch: ``batch_size * targets_per_row``."""
        return self.batch_size * self.targets_per_row

    def offsets(self, step: int) -> torch.Tensor:
        """This rank's row start offsets for ``step``: int64 ``(B/K,)`` on the CPU."""
        generator = torch.Generator().manual_seed(step_seed(self.seed, step))
        offsets = torch.randint(self.n_rows, (self.batch_size,), generator=generator)  # (B,)
        rows = self.local_batch_size
        return offsets[self.rank * rows : (self.rank + 1) * rows]  # (B/K,)

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` (B/K, T + P - 1) int64 ids and ``y`` (B/K, P) their targets; with one target per
        row, ``x`` (B/K, T) windows and ``y`` (B/K,) the character after each."""
        offsets = self.offsets(step).to(self.ids.device, non_blocking=True)
        x = self._inputs.index_select(0, offsets)  # (B/K, T + P - 1)
        y = self._targets.index_select(0, offsets)  # (B/K, P)
        return x, (y.squeeze(1) if self.targets_per_row == 1 else y)
