"""Embedding: numpy_ref against torch_lm, with F.embedding as the third witness, repeated ids
(the gradient must accumulate), central differences, torch.autograd.gradcheck, initialisation
and the errors for bad input.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from numpy_ref.embedding import embedding_backward, embedding_forward
from numpy_ref.gradcheck import numerical_gradient_array, rel_error
from parity_tests.conftest import assert_close, grads_to_numpy, state_dict_to_numpy, to_numpy, to_torch
from torch_lm.embedding import Embedding, embedding

TOLERANCE = 1e-7  # docs/DESIGN.md §2: rel_error bound for central differences in float64
# `dtypes` is an immutable (numpy dtype, torch dtype) pair, safe to share across examples.
SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

idx_shapes = st.lists(st.integers(1, 6), max_size=3).map(tuple)  # (), (1,), (B, T), ... batch 1 included
seeds = st.integers(0, 2**32 - 1)


def torch_module_forward_backward(idx: np.ndarray, weight: np.ndarray, dout: np.ndarray, torch_dtype):
    """Our Embedding module holding ``weight``; returns (out, grads keyed like state_dict)."""
    module = Embedding(*weight.shape).to(torch_dtype)
    module.load_state_dict({"weight": to_torch(weight)})
    out = module(to_torch(idx))
    out.backward(to_torch(dout, torch_dtype))
    return out, grads_to_numpy(module)


def builtin_forward_backward(idx: np.ndarray, weight: np.ndarray, dout: np.ndarray, torch_dtype):
    """F.embedding, the third witness; returns (out, dweight)."""
    w = to_torch(weight, torch_dtype, requires_grad=True)
    out = F.embedding(to_torch(idx), w)
    out.backward(to_torch(dout, torch_dtype))
    return out, w.grad


def check_all_three_agree(idx: np.ndarray, weight: np.ndarray, dout: np.ndarray, dtypes) -> np.ndarray:
    """numpy vs torch_lm vs F.embedding, forward and dweight; returns the numpy dweight."""
    np_dtype, torch_dtype = dtypes
    out, cache = embedding_forward(idx, weight)
    dweight = embedding_backward(dout, cache)
    assert out.dtype == np_dtype and dweight.dtype == np_dtype  # no silent upcast
    assert out.shape == idx.shape + weight.shape[1:] and dweight.shape == weight.shape

    torch_out, torch_grads = torch_module_forward_backward(idx, weight, dout, torch_dtype)
    assert_close(out, torch_out)
    assert_close({"weight": dweight}, torch_grads)
    witness_out, witness_dweight = builtin_forward_backward(idx, weight, dout, torch_dtype)
    assert_close(torch_out, witness_out)
    assert_close(torch_grads["weight"], witness_dweight)
    return dweight


# ---------------------------------------------------------------- parity: numpy vs torch vs F


@SETTINGS
@given(idx_shape=idx_shapes, vocab=st.integers(1, 9), dim=st.integers(1, 7), seed=seeds)
def test_embedding_matches_torch_and_builtin(dtypes, idx_shape, vocab, dim, seed):
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, vocab, idx_shape)  # small vocabularies: repeated ids are the rule
    weight = rng.standard_normal((vocab, dim)).astype(dtypes[0])
    dout = rng.standard_normal(idx_shape + (dim,)).astype(dtypes[0])
    check_all_three_agree(idx, weight, dout, dtypes)


# ---------------------------------------------------------------- repeated ids accumulate


def test_repeated_ids_accumulate_their_gradients(dtypes, rng):
    idx = np.array([[2, 0, 2], [2, 4, 0]])  # id 2 three times, id 0 twice, 1 and 3 never
    weight = rng.standard_normal((5, 3)).astype(dtypes[0])
    dout = rng.standard_normal((2, 3, 3)).astype(dtypes[0])
    dweight = check_all_three_agree(idx, weight, dout, dtypes)
    assert_close(dweight[2], dout[0, 0] + dout[0, 2] + dout[1, 0])
    assert_close(dweight[0], dout[0, 1] + dout[1, 2])
    assert_close(dweight[4], dout[1, 1])
    assert_close(dweight[[1, 3]], np.zeros((2, 3), dtypes[0]))


def test_one_id_repeated_everywhere_sums_every_gradient(dtypes):
    idx = np.full((4, 8), 3)
    dout = np.ones((4, 8, 2), dtypes[0])
    dweight = check_all_three_agree(idx, np.zeros((5, 2), dtypes[0]), dout, dtypes)
    assert_close(dweight, np.array([[0, 0], [0, 0], [0, 0], [32, 32], [0, 0]], dtypes[0]))


@pytest.mark.parametrize("id_dtype", [np.int8, np.uint8, np.int16, np.int32, np.int64])
def test_every_integer_id_dtype_is_accepted(id_dtype, rng):
    # ids up to 127 times E = 3 overflow int8/uint8 if the scatter-add computed cells in that dtype
    idx = np.array([[0, 127, 127], [100, 0, 127]], dtype=id_dtype)
    weight, dout = rng.standard_normal((128, 3)), rng.standard_normal((2, 3, 3))
    out, cache = embedding_forward(idx, weight)
    assert_close(out, embedding(torch.from_numpy(idx), to_torch(weight)))
    expected = embedding_backward(dout, embedding_forward(idx.astype(np.int64), weight)[1])
    assert_close(embedding_backward(dout, cache), expected)
    assert_close(expected[127], dout[0, 1] + dout[0, 2] + dout[1, 2])


def test_empty_batch_looks_up_nothing(dtypes):
    weight = np.ones((4, 3), dtypes[0])
    idx = np.zeros((0, 5), dtype=np.int64)
    out, cache = embedding_forward(idx, weight)
    assert out.shape == (0, 5, 3)
    assert_close(embedding_backward(np.zeros((0, 5, 3), dtypes[0]), cache), np.zeros((4, 3), dtypes[0]))
    assert tuple(embedding(to_torch(idx), to_torch(weight, dtypes[1])).shape) == (0, 5, 3)


# ---------------------------------------------------------------- gradients: central differences, gradcheck


@pytest.mark.parametrize(
    "idx", [np.array([0]), np.array([[1, 1, 3], [3, 0, 1]]), np.array([[[2]], [[2]]])], ids=["single", "repeats", "3-D"]
)
def test_numpy_backward_matches_central_differences(idx, rng):
    weight = rng.standard_normal((4, 3))
    dout = rng.standard_normal(idx.shape + (3,))
    dweight = embedding_backward(dout, embedding_forward(idx, weight)[1])
    numeric = numerical_gradient_array(lambda w: embedding_forward(idx, w)[0], weight, dout)
    assert rel_error(dweight, numeric) <= TOLERANCE


def test_torch_embedding_and_module_pass_gradcheck(rng):
    idx = to_torch(np.array([[1, 1, 3], [3, 0, 1]]))
    weight = to_torch(rng.standard_normal((4, 3)), requires_grad=True)
    assert torch.autograd.gradcheck(lambda w: embedding(idx, w), (weight,))
    module = Embedding(4, 3).to(torch.float64)
    # gradcheck differentiates inputs, so pass the module's weight through functional_call.
    assert torch.autograd.gradcheck(lambda w: torch.func.functional_call(module, {"weight": w}, (idx,)), (weight,))


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
    assert_close(state_dict_to_numpy(first), state_dict_to_numpy(second), rtol=0, atol=0)
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
    with pytest.raises(ValueError, match=message):
        embedding_forward(idx, weight)
    with pytest.raises(ValueError, match=message):
        embedding(torch.from_numpy(idx), torch.from_numpy(weight))


def test_module_rejects_out_of_range_ids():
    with pytest.raises(ValueError, match=r"idx must lie in \[0, 4\), got values in \[1, 4\]"):
        Embedding(4, 2)(torch.tensor([[1, 4]]))


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
