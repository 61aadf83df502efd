"""Embedding: numpy_ref against torch_lm, with F.embedding as the third witness, repeated ids
(the gradient must accumulate), central differences, torch.autograd.gradcheck, initialisation
and the errors for bad input.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from numpy_ref.embedding import embedding_backward, embedding_forward
from torch_lm.embedding import Embedding, embedding
from torch_lm.parity import (
    Case,
    assert_central_differences,
    assert_gradcheck,
    assert_parity,
    assert_refused_alike,
    assert_same,
    run_numpy,
    state_of,
    to_numpy,
)
from torch_lm.parity.components import EMBEDDING

TOLERANCE = 1e-7  # docs/DESIGN.md §2: rel_error bound for central differences in float64
# `dtypes` is an immutable (numpy dtype, torch dtype) pair, safe to share across examples.
SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

idx_shapes = st.lists(st.integers(1, 6), max_size=3).map(tuple)  # (), (1,), (B, T), ... batch 1 included
seeds = st.integers(0, 2**32 - 1)


def embedding_function(inputs: dict, fixed: dict) -> dict:
    """The torch side as the function ``embedding`` rather than the module ``Embedding``."""
    return {"out": embedding(fixed["idx"], inputs["weight"])}


# The function's own refusals: EMBEDDING's torch side unpacks (V, E) from the weight's shape to build
# its module, so a weight that is not 2-D fails there, before the function checks it.
EMBEDDING_FUNCTION = replace(EMBEDDING, name="embedding", torch_forward=embedding_function)
# F.embedding takes int32 and int64 ids only: the witness gets them widened, the component its own.
EMBEDDING_ANY_IDS = replace(EMBEDDING, witness=lambda t, f: {"out": F.embedding(f["idx"].long(), t["weight"])})


def lookup_case(idx: np.ndarray, weight: np.ndarray, dout: np.ndarray | None = None) -> Case:
    """Differentiated weight (V, E), fixed ids, upstream gradient (*idx.shape, E) when given."""
    upstream = None if dout is None else {"out": dout}
    return Case({"weight": weight}, fixed={"idx": idx}, upstream=upstream, label=f"ids {idx.shape}, {weight.shape}")


# ---------------------------------------------------------------- parity: numpy vs torch vs F


@SETTINGS
@given(idx_shape=idx_shapes, vocab=st.integers(1, 9), dim=st.integers(1, 7), seed=seeds)
def test_embedding_matches_torch_and_builtin(dtypes, idx_shape, vocab, dim, seed):
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, vocab, idx_shape)  # small vocabularies: repeated ids are the rule
    weight = rng.standard_normal((vocab, dim))
    dout = rng.standard_normal(idx_shape + (dim,))
    assert_parity(EMBEDDING, lookup_case(idx, weight, dout), dtypes)


# ---------------------------------------------------------------- repeated ids accumulate


def test_repeated_ids_accumulate_their_gradients(dtypes, rng):
    idx = np.array([[2, 0, 2], [2, 4, 0]])  # id 2 three times, id 0 twice, 1 and 3 never
    weight = rng.standard_normal((5, 3)).astype(dtypes[0])
    dout = rng.standard_normal((2, 3, 3)).astype(dtypes[0])
    dweight = assert_parity(EMBEDDING, lookup_case(idx, weight, dout), dtypes).grads["weight"]
    assert_same(dweight[2], dout[0, 0] + dout[0, 2] + dout[1, 0])
    assert_same(dweight[0], dout[0, 1] + dout[1, 2])
    assert_same(dweight[4], dout[1, 1])
    assert_same(dweight[[1, 3]], np.zeros((2, 3), dtypes[0]))


def test_one_id_repeated_everywhere_sums_every_gradient(dtypes):
    idx = np.full((4, 8), 3)
    case = lookup_case(idx, np.zeros((5, 2)), np.ones((4, 8, 2)))
    dweight = assert_parity(EMBEDDING, case, dtypes).grads["weight"]
    assert_same(dweight, np.array([[0, 0], [0, 0], [0, 0], [32, 32], [0, 0]], dtypes[0]))


@pytest.mark.parametrize("id_dtype", [np.int8, np.uint8, np.int16, np.int32, np.int64])
def test_every_integer_id_dtype_is_accepted(id_dtype, rng):
    # ids up to 127 times E = 3 overflow int8/uint8 if the scatter-add computed cells in that dtype
    idx = np.array([[0, 127, 127], [100, 0, 127]], dtype=id_dtype)
    weight, dout = rng.standard_normal((128, 3)), rng.standard_normal((2, 3, 3))
    dweight = assert_parity(EMBEDDING_ANY_IDS, lookup_case(idx, weight, dout)).grads["weight"]
    expected = run_numpy(EMBEDDING, lookup_case(idx.astype(np.int64), weight, dout)).grads["weight"]
    assert_same(dweight, expected)
    assert_same(expected[127], dout[0, 1] + dout[0, 2] + dout[1, 2])


def test_empty_batch_looks_up_nothing(dtypes):
    case = lookup_case(np.zeros((0, 5), dtype=np.int64), np.ones((4, 3)))
    run = assert_parity(EMBEDDING, case, dtypes)
    assert run.outputs["out"].shape == (0, 5, 3)
    assert_same(run.grads["weight"], np.zeros((4, 3), dtypes[0]))


# ---------------------------------------------------------------- gradients: central differences, gradcheck


@pytest.mark.parametrize(
    "idx", [np.array([0]), np.array([[1, 1, 3], [3, 0, 1]]), np.array([[[2]], [[2]]])], ids=["single", "repeats", "3-D"]
)
def test_numpy_backward_matches_central_differences(idx, rng):
    weight = rng.standard_normal((4, 3))
    dout = rng.standard_normal(idx.shape + (3,))
    assert_central_differences(EMBEDDING, lookup_case(idx, weight, dout), bound=TOLERANCE)


def test_torch_embedding_and_module_pass_gradcheck(rng):
    case = lookup_case(np.array([[1, 1, 3], [3, 0, 1]]), rng.standard_normal((4, 3)))
    assert_gradcheck(EMBEDDING_FUNCTION, case)
    assert_gradcheck(EMBEDDING, case)


# ---------------------------------------------------------------- initialisation and state


def test_state_dict_keys_and_shapes_match_nn_embedding():
    ours, builtin = Embedding(7, 5), torch.nn.Embedding(7, 5)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in builtin.state_dict().items()}


def test_weight_is_standard_normal():
    module = Embedding(500, 200)
    module.reset_parameters(torch.Generator().manual_seed(0))
    weight = to_numpy(module.weight).astype(np.float64)
    # 100,000 draws: the mean's standard error is 0.003, the std's 0.0022; allow 5 of them.
    assert abs(weight.mean()) < 0.016
    assert abs(weight.std() - 1.0) < 0.011


def test_generator_makes_initialisation_reproducible():
    first, second, other = Embedding(6, 4), Embedding(6, 4), Embedding(6, 4)
    first.reset_parameters(torch.Generator().manual_seed(7))
    second.reset_parameters(torch.Generator().manual_seed(7))
    other.reset_parameters(torch.Generator().manual_seed(8))
    assert_same(state_of(first), state_of(second), rtol=0, atol=0)
    assert not np.array_equal(to_numpy(first.weight), to_numpy(other.weight))


# ---------------------------------------------------------------- bad input -> ValueError on both sides

W = np.zeros((5, 3))

BAD_INPUT = [
    (np.array([0, 5]), W, r"idx must lie in \[0, 5\), got values in \[0, 5\]"),
    (np.array([[-1, 2]]), W, r"idx must lie in \[0, 5\), got values in \[-1, 2\]"),
    (np.array([0.0, 1.0]), W, r"idx must hold integers, got dtype .*float64"),
    (np.array([True, False]), W, r"idx must hold integers, got dtype .*bool"),
    (np.array([0, 1]), np.zeros((5, 3), dtype=np.int64), r"weight must be a floating-point array, got dtype .*int64"),
    (np.array([0, 1]), np.zeros(5), r"weight must be 2-D, got shape \(5,\)"),
    (np.array([0, 1]), np.zeros((5, 3, 1)), r"weight must be 2-D, got shape \(5, 3, 1\)"),
]


@pytest.mark.parametrize("idx, weight, message", BAD_INPUT)
def test_bad_input_raises_on_both_sides(idx, weight, message):
    assert_refused_alike(EMBEDDING_FUNCTION, lookup_case(idx, weight), message)


def test_module_rejects_out_of_range_ids():
    case = lookup_case(np.array([[1, 4]]), np.zeros((4, 2)))
    assert_refused_alike(EMBEDDING, case, r"idx must lie in \[0, 4\), got values in \[1, 4\]")


@pytest.mark.parametrize(
    "args, message",
    [
        ((0, 3), r"Embedding: num_embeddings must be a positive integer, got 0"),
        ((4, -1), r"Embedding: embedding_dim must be a positive integer, got -1"),
        ((4.0, 3), r"Embedding: num_embeddings must be a positive integer, got 4.0"),
    ],
)
def test_module_rejects_bad_sizes(args, message):
    with pytest.raises(ValueError, match=message):
        Embedding(*args)


def test_numpy_backward_rejects_upstream_gradient_of_wrong_shape():
    _, cache = embedding_forward(np.array([[0, 1]]), W)
    with pytest.raises(ValueError, match=r"dout has shape \(1, 2, 4\) but the forward output has shape \(1, 2, 3\)"):
        embedding_backward(np.zeros((1, 2, 4)), cache)
