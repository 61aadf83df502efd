"""Pair embedding: numpy_ref against torch_lm, with F.embedding of the pair ids as the third
witness; repeated pairs (the gradient must accumulate), group starts (zeros, no gradient), central
differences, torch.autograd.gradcheck, initialisation and the errors for bad input.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from numpy_ref.pair_embedding import pair_embedding_backward, pair_embedding_forward, pair_positions
from torch_lm.pair_embedding import PairEmbedding, pair_embedding
from torch_lm.parity import (
    Case,
    assert_central_differences,
    assert_gradcheck,
    assert_parity,
    assert_refused_alike,
    assert_same,
    run_numpy,
    state_of,
)
from torch_lm.parity.components import PAIR_EMBEDDING

TOLERANCE = 1e-7  # docs/DESIGN.md §2: rel_error bound for central differences in float64
# `dtypes` is an immutable (numpy dtype, torch dtype) pair, safe to share across examples.
SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def pair_function(inputs: dict, fixed: dict) -> dict:
    """The torch side as the function ``pair_embedding`` rather than the module ``PairEmbedding``."""
    return {"out": pair_embedding(fixed["idx"], inputs["weight"], fixed["group"])}


# The function's own refusals: PAIR_EMBEDDING's torch side reads (V*V, E) from the weight's shape to
# build its module, so a weight that is not 2-D fails there, before the function checks it.
PAIR_FUNCTION = replace(PAIR_EMBEDDING, torch_forward=pair_function)


def lookup_case(idx: np.ndarray, weight: np.ndarray, group: int, dout: np.ndarray | None = None) -> Case:
    """Differentiated weight (V*V, E), fixed ids and group, upstream (*idx.shape, E) when given."""
    upstream = None if dout is None else {"out": dout}
    label = f"ids {idx.shape}, weight {weight.shape}, group {group}"
    return Case({"weight": weight}, fixed={"idx": idx, "group": group}, upstream=upstream, label=label)


# ---------------------------------------------------------------- parity: numpy vs torch vs F.embedding


@SETTINGS
@given(
    lead=st.lists(st.integers(1, 4), max_size=2).map(tuple),
    n=st.integers(1, 9),
    vocab=st.integers(1, 4),
    dim=st.integers(1, 4),
    group=st.integers(1, 10),
    seed=st.integers(0, 2**32 - 1),
)
def test_pair_embedding_matches_torch_and_builtin(dtypes, lead, n, vocab, dim, group, seed):
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, vocab, lead + (n,))  # small vocabularies: repeated pairs are the rule
    weight = rng.standard_normal((vocab * vocab, dim))
    dout = rng.standard_normal(lead + (n, dim))
    assert_parity(PAIR_EMBEDDING, lookup_case(idx, weight, group, dout), dtypes)


def test_golden_lookup_zeros_at_group_starts(dtypes):
    # V = 3: pair (p, c) is row 3p + c. Groups of 2: positions 0 and 2 start a group.
    weight = np.arange(9 * 2, dtype=np.float64).reshape(9, 2)
    run = assert_parity(PAIR_EMBEDDING, lookup_case(np.array([0, 1, 2, 0]), weight, 2), dtypes)
    assert_same(run.outputs["out"], np.array([[0, 0], weight[0 * 3 + 1], [0, 0], weight[2 * 3 + 0]], dtypes[0]))


@pytest.mark.parametrize(
    "n, group, positions", [(1, 1, []), (5, 1, []), (5, 2, [1, 3]), (6, 3, [1, 2, 4, 5]), (4, 9, [1, 2, 3])]
)
def test_pair_positions_skip_every_group_start(n, group, positions):
    assert pair_positions(n, group) == positions


# ---------------------------------------------------------------- repeated pairs accumulate


def test_repeated_pairs_accumulate_their_gradients(dtypes, rng):
    # V = 3, one group: (1, 2) at positions 1, 3, 5 and (2, 1) at 2, 4; no pair at position 0.
    idx = np.array([[1, 2, 1, 2, 1, 2]])
    weight = rng.standard_normal((9, 3)).astype(dtypes[0])
    dout = rng.standard_normal((1, 6, 3)).astype(dtypes[0])
    dweight = assert_parity(PAIR_EMBEDDING, lookup_case(idx, weight, 6, dout), dtypes).grads["weight"]
    assert_same(dweight[1 * 3 + 2], dout[0, 1] + dout[0, 3] + dout[0, 5])
    assert_same(dweight[2 * 3 + 1], dout[0, 2] + dout[0, 4])
    others = [r for r in range(9) if r not in (5, 7)]
    assert_same(dweight[others], np.zeros((7, 3), dtypes[0]))


def test_group_starts_get_no_gradient(dtypes, rng):
    # Groups of 2 over the same ids: only positions 1, 3, 5 read a pair, each (1, 2).
    idx = np.array([[1, 2, 1, 2, 1, 2]])
    dout = rng.standard_normal((1, 6, 3)).astype(dtypes[0])
    dweight = assert_parity(PAIR_EMBEDDING, lookup_case(idx, np.ones((9, 3)), 2, dout), dtypes).grads["weight"]
    assert_same(dweight[1 * 3 + 2], dout[0, 1] + dout[0, 3] + dout[0, 5])
    assert_same(dweight[2 * 3 + 1], np.zeros(3, dtypes[0]))


def test_one_pair_repeated_everywhere_sums_every_gradient(dtypes):
    case = lookup_case(np.full((4, 8), 3), np.zeros((25, 2)), 8, np.ones((4, 8, 2)))
    dweight = assert_parity(PAIR_EMBEDDING, case, dtypes).grads["weight"]
    expected = np.zeros((25, 2), dtypes[0])
    expected[3 * 5 + 3] = 4 * 7  # 4 rows of 7 positions with a predecessor
    assert_same(dweight, expected)


@pytest.mark.parametrize("id_dtype", [np.int8, np.uint8, np.int16, np.int32, np.int64])
def test_every_integer_id_dtype_is_accepted(id_dtype, rng):
    # pair ids up to 127 * 128 + 127 overflow int8/uint8/int16 if computed in the ids' dtype
    idx = np.array([[0, 127, 127], [100, 0, 127]], dtype=id_dtype)
    weight, dout = rng.standard_normal((128 * 128, 2)), rng.standard_normal((2, 3, 2))
    dweight = assert_parity(PAIR_EMBEDDING, lookup_case(idx, weight, 3, dout)).grads["weight"]
    expected = run_numpy(PAIR_EMBEDDING, lookup_case(idx.astype(np.int64), weight, 3, dout)).grads["weight"]
    assert_same(dweight, expected)
    assert_same(expected[127 * 128 + 127], dout[0, 2])


def test_empty_batch_looks_up_nothing(dtypes):
    run = assert_parity(PAIR_EMBEDDING, lookup_case(np.zeros((0, 5), dtype=np.int64), np.ones((4, 3)), 5), dtypes)
    assert run.outputs["out"].shape == (0, 5, 3)
    assert_same(run.grads["weight"], np.zeros((4, 3), dtypes[0]))


# ---------------------------------------------------------------- gradients: central differences, gradcheck


@pytest.mark.parametrize(
    "idx, group",
    [(np.array([0, 2]), 2), (np.array([[1, 1, 1, 2], [2, 1, 1, 1]]), 4), (np.array([[[2, 0, 2, 0]]]), 2)],
    ids=["single", "repeats", "3-D"],
)
def test_numpy_backward_matches_central_differences(idx, group, rng):
    weight = rng.standard_normal((9, 3))
    dout = rng.standard_normal(idx.shape + (3,))
    assert_central_differences(PAIR_EMBEDDING, lookup_case(idx, weight, group, dout), bound=TOLERANCE)


def test_torch_function_and_module_pass_gradcheck(rng):
    case = lookup_case(np.array([[1, 1, 1, 2], [2, 1, 1, 1]]), rng.standard_normal((9, 3)), 4)
    assert_gradcheck(PAIR_FUNCTION, case)
    assert_gradcheck(PAIR_EMBEDDING, case)


# ---------------------------------------------------------------- initialisation and state


def test_state_is_one_zero_row_per_pair():
    module = PairEmbedding(7, 5)
    module.reset_parameters(torch.Generator().manual_seed(0))
    assert {k: tuple(v.shape) for k, v in module.state_dict().items()} == {"weight": (49, 5)}
    assert_same(state_of(module), {"weight": np.zeros((49, 5), np.float32)}, rtol=0, atol=0)


def test_reset_draws_nothing_from_the_generator():
    generator = torch.Generator().manual_seed(3)
    PairEmbedding(4, 2).reset_parameters(generator)
    assert_same(torch.rand(3, generator=generator), torch.rand(3, generator=torch.Generator().manual_seed(3)))


# ---------------------------------------------------------------- bad input -> ValueError on both sides

W = np.zeros((9, 2))  # V = 3

BAD_INPUT = [
    (np.array([0, 3]), W, 2, r"idx must lie in \[0, 3\), got values in \[0, 3\]"),
    (np.array([[-1, 2]]), W, 2, r"idx must lie in \[0, 3\), got values in \[-1, 2\]"),
    (np.array([0.0, 1.0]), W, 2, r"idx must hold integers, got dtype .*float64"),
    (np.array([True, False]), W, 2, r"idx must hold integers, got dtype .*bool"),
    (np.array(1), W, 2, r"idx must have at least one axis \(the positions\), got shape \(\)"),
    (
        np.array([0, 1]),
        np.zeros((9, 2), dtype=np.int64),
        2,
        r"weight must be a floating-point array, got dtype .*int64",
    ),
    (np.array([0, 1]), np.zeros(9), 2, r"weight must be 2-D, got shape \(9,\)"),
    (
        np.array([0, 1]),
        np.zeros((8, 2)),
        2,
        r"weight must have V\*V rows \(one per pair of ids, V >= 1\), got shape \(8, 2\)",
    ),
    (np.array([0, 1]), np.zeros((0, 2)), 2, r"weight must have V\*V rows"),
    (np.array([0, 1]), W, 0, r"group must be a positive integer, got 0"),
    (np.array([0, 1]), W, 1.5, r"group must be a positive integer, got 1\.5"),
]


@pytest.mark.parametrize("idx, weight, group, message", BAD_INPUT)
def test_bad_input_raises_on_both_sides(idx, weight, group, message):
    assert_refused_alike(PAIR_FUNCTION, lookup_case(idx, weight, group), message)


def test_module_rejects_out_of_range_ids():
    case = lookup_case(np.array([[1, 4]]), np.zeros((16, 2)), 2)
    assert_refused_alike(PAIR_EMBEDDING, case, r"idx must lie in \[0, 4\), got values in \[1, 4\]")


@pytest.mark.parametrize(
    "args, message",
    [
        ((0, 3), r"PairEmbedding: num_embeddings must be a positive integer, got 0"),
        ((4, -1), r"PairEmbedding: embedding_dim must be a positive integer, got -1"),
    ],
)
def test_module_rejects_bad_sizes(args, message):
    with pytest.raises(ValueError, match=message):
        PairEmbedding(*args)


def test_numpy_backward_rejects_upstream_gradient_of_wrong_shape():
    _, cache = pair_embedding_forward(np.array([[0, 1]]), W, 2)
    with pytest.raises(ValueError, match=r"dout has shape \(1, 2, 4\) but the forward output has shape \(1, 2, 2\)"):
        pair_embedding_backward(np.zeros((1, 2, 4)), cache)
