"""torch_lm/training/batches.py: the split of docs/DESIGN.md §3 and the batch sampler."""

from __future__ import annotations

import re

import pytest
import torch
from conftest import TINY_SHAKESPEARE, needs_tiny_shakespeare

from torch_lm.training.batches import BatchSampler, check_split_fits, split_ids, step_seed
from torch_lm.training.text import DataError, read_text
from torch_lm.training.vocab import CharVocab


# ----------------------------------------------------------------------------- split
@needs_tiny_shakespeare
def test_real_text_split_and_vocabulary():
    text = read_text(TINY_SHAKESPEARE)
    vocab = CharVocab.from_text(text)
    train, val = split_ids(vocab.encode(text))
    assert len(text) == 1_115_394 and len(vocab) == 65
    assert (len(train), len(val)) == (1_003_854, 111_540)
    assert vocab.decode(val[:20]) == text[1_003_854:1_003_874]


def test_too_short_text_is_refused():
    check_split_fits(n_train=9, n_val=1, context=8)  # one window + its target, one val char
    with pytest.raises(DataError, match="too short"):
        check_split_fits(n_train=8, n_val=1, context=8)
    with pytest.raises(DataError, match="too short"):
        check_split_fits(n_train=100, n_val=0, context=8)


def test_the_reported_minimum_length_is_exact():
    with pytest.raises(DataError, match=r"\((\d+) characters in all\)") as error:
        check_split_fits(n_train=3, n_val=1, context=8)
    need = int(re.search(r"\((\d+) characters in all\)", str(error.value)).group(1))
    for n_chars, fits in ((need, True), (need - 1, False)):
        train, val = split_ids(torch.arange(n_chars))
        assert (len(train) >= 9 and len(val) >= 1) == fits, n_chars


def test_split_is_the_first_ninety_percent_and_the_rest():
    ids = torch.arange(1000)
    train, val = split_ids(ids)
    assert torch.equal(train, ids[:900]) and torch.equal(val, ids[900:])
    with pytest.raises(ValueError, match="train_fraction"):
        split_ids(ids, 1.0)


# ----------------------------------------------------------------------------- batches
def position_ids(n: int) -> torch.Tensor:
    """ids == positions, so every window reveals where it was cut from."""
    return torch.arange(n, dtype=torch.int64)


def test_batch_shapes_and_targets_follow_each_window():
    T, B = 6, 64
    sampler = BatchSampler(position_ids(500), context=T, batch_size=B, seed=3)
    x, y = sampler.batch(0)
    assert x.shape == (B, T) and y.shape == (B,) and x.dtype == y.dtype == torch.int64
    start = x[:, 0]
    assert torch.equal(x, start[:, None] + torch.arange(T))  # contiguous windows
    assert torch.equal(y, start + T)  # the character after each window
    assert int(start.min()) >= 0 and int(y.max()) <= 499


def test_sequence_rows_hold_consecutive_targets_with_their_contexts():
    T, P, B = 6, 5, 64
    sampler = BatchSampler(position_ids(500), context=T, batch_size=B, seed=3, targets_per_row=P)
    x, y = sampler.batch(0)
    assert x.shape == (B, T + P - 1) and y.shape == (B, P) and sampler.targets_per_step == B * P
    start = x[:, :1]
    assert torch.equal(x, start + torch.arange(T + P - 1))
    assert torch.equal(y, start + T + torch.arange(P))  # target j follows the window x[:, j:j+T]
    assert int(y.max()) <= 499
    # The same offsets as the window batch of the same (seed, step) wherever both can start.
    windows = BatchSampler(position_ids(500 - P + 1), context=T, batch_size=B, seed=3)
    assert torch.equal(windows.batch(0)[0][:, 0], x[:, 0])


def test_every_sequence_row_can_be_drawn():
    # 12 ids, context 3, 4 targets per row: rows start at 0..5 and the last target is id 11.
    sampler = BatchSampler(position_ids(12), context=3, batch_size=256, seed=0, targets_per_row=4)
    rows = [sampler.batch(s) for s in range(4)]
    assert set(torch.cat([x[:, 0] for x, _ in rows]).tolist()) == set(range(6))
    assert max(int(y.max()) for _, y in rows) == 11


def test_every_window_can_be_drawn():
    # 12 ids, context 3: windows start at 0..8 and the last target is id 11.
    sampler = BatchSampler(position_ids(12), context=3, batch_size=256, seed=0)
    starts = torch.cat([sampler.batch(s)[0][:, 0] for s in range(4)])
    assert set(starts.tolist()) == set(range(9))


def test_batch_is_a_pure_function_of_seed_and_step():
    ids = position_ids(10_000)
    a = BatchSampler(ids, context=8, batch_size=32, seed=7)
    b = BatchSampler(ids, context=8, batch_size=32, seed=7)
    later_first = [b.batch(s)[0] for s in (5, 2, 9)]  # order of calls must not matter
    assert all(torch.equal(a.batch(s)[0], x) for s, x in zip((5, 2, 9), later_first))
    assert not torch.equal(a.batch(2)[0], a.batch(3)[0])
    assert not torch.equal(a.batch(2)[0], BatchSampler(ids, 8, 32, seed=8).batch(2)[0])


def test_step_seeds_do_not_collide_for_neighbouring_seeds():
    seeds = {step_seed(seed, step) for seed in range(20) for step in range(200)}
    assert len(seeds) == 20 * 200
    assert step_seed(1, 0) != step_seed(0, 1) and step_seed(0, 0, "batch") != step_seed(0, 0, "sample")


@pytest.mark.parametrize("world_size", [2, 4])
def test_rank_slices_concatenate_to_the_global_batch(world_size):
    ids, B = position_ids(5000), 32
    whole = BatchSampler(ids, context=5, batch_size=B, seed=11)
    for step in (0, 17):
        parts = [BatchSampler(ids, 5, B, seed=11, rank=r, world_size=world_size).batch(step) for r in range(world_size)]
        assert all(x.shape == (B // world_size, 5) for x, _ in parts)
        x, y = whole.batch(step)
        assert torch.equal(torch.cat([p[0] for p in parts]), x)
        assert torch.equal(torch.cat([p[1] for p in parts]), y)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(batch_size=30, world_size=4), "divisible"),
        (dict(rank=2, world_size=2), "rank"),
        (dict(context=0), "context"),
        (dict(ids=position_ids(8), context=8), "at least 9"),
        (dict(ids=position_ids(10), context=4, targets_per_row=7), "at least 11"),
        (dict(targets_per_row=0), "targets_per_row"),
        (dict(ids=torch.arange(100.0)), "int64"),
    ],
)
def test_bad_sampler_arguments(kwargs, message):
    args = dict(ids=position_ids(100), context=4, batch_size=8, seed=0) | kwargs
    with pytest.raises(ValueError, match=message):
        BatchSampler(**args)
