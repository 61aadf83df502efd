"""Neural bigram/trigram parity: ``numpy_ref.bigram`` (hand-derived backward) vs ``torch_lm.bigram``.

Logits and every gradient of the table form (V**C x V) and the factored form (Embedding ->
Linear) agree in float64 and float32 for contexts 1 and 2; the NumPy backward matches central
differences and the torch modules pass ``gradcheck``; the count trick is exact (the
count-weighted loss and its gradient equal the mean over every window, ``F.cross_entropy``
witnessing); the count tables agree with a plain Python count; and the convergence fact holds:
trained on a small text, the table form's train loss reaches the count model's to 1e-3, the
factored form's too once E >= V - 1. Both engines reject the same bad input.
"""

from __future__ import annotations

import collections

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from numpy_ref.bigram import (
    count_cross_entropy,
    count_mle_loss,
    count_table,
    factored_lm_backward,
    factored_lm_forward,
    init_factored_params,
    init_table_params,
    table_lm_backward,
    table_lm_forward,
)
from numpy_ref.cross_entropy import cross_entropy
from numpy_ref.gradcheck import numerical_gradient, rel_error
from numpy_ref.ngram import NGramLM
from parity_tests.conftest import assert_close, grads_to_numpy, to_torch
from torch_lm import bigram as tb

V = 6


def markov_text(n: int = 3000, seed: int = 0) -> np.ndarray:
    """Ids (n,) from a random order-2 Markov chain over V tokens with some impossible transitions,
    so bigram and trigram counts have zeros, repeats and different row totals."""
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(V, 0.5), size=(V, V))  # (V, V, V): p(c | a, b)
    probs[rng.random((V, V, V)) < 0.2] = 0
    probs[..., 0] += 1e-3  # every row stays usable
    probs /= probs.sum(axis=-1, keepdims=True)
    ids = [0, 1]
    for _ in range(n - 2):
        ids.append(int(rng.choice(V, p=probs[ids[-2], ids[-1]])))
    return np.array(ids, dtype=np.int64)


def random_params(form: str, context: int, rng, dtype, embed_dim: int = 3) -> dict[str, np.ndarray]:
    if form == "table":
        params = init_table_params(V, context, dtype)
        return {k: rng.standard_normal(p.shape).astype(dtype) for k, p in params.items()}
    return {
        k: (p + 0.3 * rng.standard_normal(p.shape)).astype(dtype)
        for k, p in init_factored_params(V, context, embed_dim, rng, dtype).items()
    }


def numpy_forward(form: str, params, idx):
    return (table_lm_forward if form == "table" else factored_lm_forward)(params, idx)


def numpy_backward(form: str, dlogits, cache):
    return (table_lm_backward if form == "table" else factored_lm_backward)(dlogits, cache)


def torch_model(form: str, context: int, params, dtype) -> torch.nn.Module:
    """The torch module holding exactly ``params`` (strict load: the keys must match)."""
    if form == "table":
        model = tb.TableLM(V, context)
    else:
        model = tb.FactoredLM(V, context, params["embedding.weight"].shape[1])
    model = model.to(dtype)
    model.load_state_dict({k: to_torch(p) for k, p in params.items()})
    return model


FORMS = [("table", 1), ("table", 2), ("factored", 1), ("factored", 2)]
FORM_IDS = [f"{form}-context{c}" for form, c in FORMS]


# ----------------------------------------------------------------------------- parity
@pytest.mark.parametrize("batch", [1, 7])
@pytest.mark.parametrize("form, context", FORMS, ids=FORM_IDS)
def test_logits_loss_and_every_gradient_match(form, context, batch, dtypes, rng):
    np_dtype, torch_dtype = dtypes
    params = random_params(form, context, rng, np_dtype)
    idx, targets = rng.integers(0, V, (batch, context)), rng.integers(0, V, batch)
    logits, cache = numpy_forward(form, params, idx)
    loss, dlogits = cross_entropy(logits, targets)
    grads = numpy_backward(form, dlogits, cache)
    assert logits.dtype == np_dtype and all(g.dtype == np_dtype for g in grads.values())

    model = torch_model(form, context, params, torch_dtype)
    t_logits, t_loss = model(to_torch(idx), to_torch(targets))
    t_loss.backward()
    assert_close(logits, t_logits)
    assert_close(loss, t_loss)
    assert_close(grads, grads_to_numpy(model))


def test_table_form_is_a_row_lookup_by_context_code(rng):
    """context 2: row a*V + b of the table gives the logits after (a, b); the bigram: row prev."""
    params = random_params("table", 2, rng, np.float64)
    logits, _ = table_lm_forward(params, np.array([[2, 5], [5, 2]]))
    assert np.array_equal(logits, params["table.weight"][[2 * V + 5, 5 * V + 2]])
    bigram = random_params("table", 1, rng, np.float64)
    assert np.array_equal(table_lm_forward(bigram, np.array([[4]]))[0], bigram["table.weight"][[4]])


@pytest.mark.parametrize("form, context", FORMS, ids=FORM_IDS)
def test_count_trick_equals_the_mean_over_every_window(form, context, dtypes, rng):
    """Count-weighted loss and gradients == mean cross-entropy over all T - C windows, in both
    engines, with F.cross_entropy over the windows as the third witness."""
    np_dtype, torch_dtype = dtypes
    ids = markov_text(400)
    params = random_params(form, context, rng, np_dtype)
    contexts, counts = count_table(ids, context, V)
    windows = np.lib.stride_tricks.sliding_window_view(ids[:-1], context)
    targets = ids[context:]

    logits, cache = numpy_forward(form, params, contexts)
    loss, dlogits = count_cross_entropy(logits, counts)
    grads = numpy_backward(form, dlogits, cache)
    w_logits, w_cache = numpy_forward(form, params, windows)
    w_loss, w_dlogits = cross_entropy(w_logits, targets)
    assert_close(loss, w_loss)
    assert_close(grads, numpy_backward(form, w_dlogits, w_cache))

    model = torch_model(form, context, params, torch_dtype)
    t_loss = tb.count_cross_entropy(model(to_torch(contexts))[0], to_torch(counts))
    t_loss.backward()
    assert_close(loss, t_loss)
    assert_close(grads, grads_to_numpy(model))
    witness = F.cross_entropy(model(to_torch(windows))[0], to_torch(targets))
    assert_close(t_loss, witness)


@pytest.mark.parametrize("context", [1, 2, 3])
def test_count_tables_agree_with_a_python_count(context):
    ids = markov_text(500)
    expected = collections.Counter((tuple(ids[i - context : i]), ids[i]) for i in range(context, len(ids)))
    contexts, counts = count_table(ids, context, V)
    found = {(tuple(c), b): int(n) for c, row in zip(contexts, counts) for b, n in enumerate(row) if n}
    assert found == dict(expected)
    assert counts.sum() == len(ids) - context and (counts.sum(axis=1) > 0).all()
    t_contexts, t_counts = tb.count_table(to_torch(ids), context, V)
    assert torch.equal(t_contexts, to_torch(contexts)) and torch.equal(t_counts, to_torch(counts))


@pytest.mark.parametrize("context", [1, 2])
def test_count_mle_loss_is_the_unsmoothed_ngram_train_loss(context):
    """Witness: numpy_ref.ngram's add-k with k = 0, scored on the train text itself."""
    ids = markov_text(800)
    _, counts = count_table(ids, context, V)
    expected = NGramLM.fit(ids, context + 1, V, "addk", k=0.0).score(ids, context)
    assert count_mle_loss(counts) == pytest.approx(expected, rel=1e-12)
    assert tb.count_mle_loss(to_torch(counts)) == pytest.approx(expected, rel=1e-12)


# ----------------------------------------------------------------------------- gradient checks
def richardson_gradient(f, x, h=1e-3):
    """(4 D(h) - D(2h)) / 3 from two central differences: truncation O(h^4), so h can be large
    enough (1e-3) that rounding noise stays ~1e-13 even on the small gradients of rare contexts."""
    return (4 * numerical_gradient(f, x, h) - numerical_gradient(f, x, 2 * h)) / 3


@pytest.mark.parametrize("form, context", FORMS, ids=FORM_IDS)
def test_numpy_backward_matches_central_differences(form, context):
    rng = np.random.default_rng(1)
    params = random_params(form, context, rng, np.float64)
    contexts, counts = count_table(markov_text(300), context, V)
    _, cache = numpy_forward(form, params, contexts)
    grads = numpy_backward(form, count_cross_entropy(numpy_forward(form, params, contexts)[0], counts)[1], cache)

    def loss(_):
        return count_cross_entropy(numpy_forward(form, params, contexts)[0], counts)[0]

    errors = {k: rel_error(richardson_gradient(loss, params[k]), grads[k]) for k in params}
    assert max(errors.values()) <= 1e-7, errors


@pytest.mark.parametrize("form, context", FORMS, ids=FORM_IDS)
def test_torch_gradcheck_with_parameters_as_inputs(form, context, rng):
    params = random_params(form, context, rng, np.float64, embed_dim=2)
    model = torch_model(form, context, params, torch.float64)
    contexts, counts = (to_torch(a) for a in count_table(markov_text(200), context, V))
    names = list(params)
    values = tuple(to_torch(params[k], requires_grad=True) for k in names)

    def loss(*weights):
        logits, _ = functional_call(model, dict(zip(names, weights)), (contexts,))
        return tb.count_cross_entropy(logits, counts)

    assert torch.autograd.gradcheck(loss, values)


# ----------------------------------------------------------------------------- convergence
@pytest.mark.parametrize("context", [1, 2])
def test_trained_table_reaches_the_count_models_train_loss(context):
    """The MLE of a free softmax table is the count model: gradient training gets there (1e-3)."""
    ids = markov_text()
    contexts, counts = tb.count_table(to_torch(ids), context, V)
    target = NGramLM.fit(ids, context + 1, V, "addk", k=0.0).score(ids, context)
    model = tb.TableLM(V, context).double()
    history = tb.fit_counts(model, contexts, counts, steps=300, lr=1.0)
    assert history[0] == pytest.approx(np.log(V))  # the zero table is uniform
    assert -1e-12 < history[-1] - target < 1e-3  # never below the MLE
    windows = to_torch(np.lib.stride_tricks.sliding_window_view(ids[:-1], context))
    with torch.no_grad():
        assert float(model(windows, to_torch(ids[context:]))[1]) == pytest.approx(history[-1], abs=1e-12)


def test_factored_bigram_needs_embed_dim_v_minus_1():
    """E = V - 1 represents the count bigram (reaches it to 1e-3); E = 1 is a rank-1 logit matrix
    and stays measurably above it."""
    ids = markov_text()
    contexts, counts = tb.count_table(to_torch(ids), 1, V)
    target = tb.count_mle_loss(counts)
    gaps = {}
    for embed_dim in (1, V - 1):
        model = tb.FactoredLM(V, 1, embed_dim).double()
        model.reset_parameters(torch.Generator().manual_seed(0))
        gaps[embed_dim] = tb.fit_counts(model, contexts, counts, steps=500, lr=0.1)[-1] - target
    assert -1e-12 < gaps[V - 1] < 1e-3  # never below the MLE
    assert gaps[1] > 1e-2


def test_fit_counts_is_deterministic_and_l2_smooths():
    ids = to_torch(markov_text(600))
    contexts, counts = tb.count_table(ids, 1, V)
    runs = []
    for l2 in (0.0, 0.0, 30.0):
        model = tb.TableLM(V).double()
        runs.append((tb.fit_counts(model, contexts, counts, steps=50, lr=0.5, l2=l2), model.table.weight.detach()))
    assert runs[0][0] == runs[1][0] and torch.equal(runs[0][1], runs[1][1])
    assert runs[2][0][-1] > runs[0][0][-1]  # the prior costs train loss
    assert runs[2][1].abs().max() < runs[0][1].abs().max()  # and keeps logits finite-sized


# ----------------------------------------------------------------------------- bad input
BAD_IDX = {  # label: (idx, message), models of context 2 over V = 6
    "wrong context": (np.zeros((3, 1), np.int64), r"idx must have shape \(B, 2\)"),
    "1-D": (np.zeros(2, np.int64), "idx must be 2-D"),
    "empty batch": (np.zeros((0, 2), np.int64), r"idx must have shape \(B, 2\) with B >= 1"),
    "float ids": (np.zeros((2, 2)), "idx must hold integers"),
    "id V": (np.array([[0, V]]), r"idx must lie in \[0, 6\)"),
    "id -1": (np.array([[-1, 0]]), r"idx must lie in \[0, 6\)"),
}


@pytest.mark.parametrize("form", ["table", "factored"])
@pytest.mark.parametrize("label", BAD_IDX)
def test_both_engines_reject_bad_idx(form, label):
    idx, message = BAD_IDX[label]
    params = random_params(form, 2, np.random.default_rng(0), np.float64)
    with pytest.raises(ValueError, match=message):
        numpy_forward(form, params, idx)
    with pytest.raises(ValueError, match=message):
        torch_model(form, 2, params, torch.float64)(to_torch(idx))


BAD_COUNTS = {  # label: (logits, counts, message)
    "shape": (np.zeros((2, 3)), np.ones((2, 4), np.int64), "counts has shape"),
    "negative": (np.zeros((2, 3)), np.array([[1, -1, 0], [0, 0, 1]]), "counts must be >= 0"),
    "all zero": (np.zeros((2, 3)), np.zeros((2, 3), np.int64), "add up to more than 0"),
    "bool counts": (np.zeros((2, 3)), np.ones((2, 3), bool), "counts must hold integers or floats"),
    "int logits": (np.zeros((2, 3), np.int64), np.ones((2, 3), np.int64), "logits must be a floating-point"),
    "1-D logits": (np.zeros(3), np.ones(3, np.int64), "logits must be 2-D"),
}


@pytest.mark.parametrize("label", BAD_COUNTS)
def test_both_engines_reject_bad_counts(label):
    logits, counts, message = BAD_COUNTS[label]
    with pytest.raises(ValueError, match=message):
        count_cross_entropy(logits, counts)
    with pytest.raises(ValueError, match=message):
        tb.count_cross_entropy(to_torch(logits), to_torch(counts))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda e: e.count_table(np.array([1, 2]), 2, V), "needs at least 3"),
        (lambda e: e.count_table(np.array([1, 9, 2]), 1, V), r"ids must lie in \[0, 6\)"),
        (lambda e: e.count_table(np.array([1, 2, 3]), 0, V), "context must be a positive integer"),
    ],
    ids=["too short", "id out of range", "context 0"],
)
def test_both_engines_reject_bad_count_table_args(call, message):
    import numpy_ref.bigram as nb

    class TorchEngine:  # count_table with a torch tensor, same arguments otherwise
        @staticmethod
        def count_table(ids, context, vocab_size):
            return tb.count_table(to_torch(ids), context, vocab_size)

    for engine in (nb, TorchEngine):
        with pytest.raises(ValueError, match=message):
            call(engine)


def test_oversized_tables_and_bad_training_args_are_refused():
    with pytest.raises(ValueError, match="use the factored form"):
        init_table_params(65, 4)
    with pytest.raises(ValueError, match="use the factored form"):
        tb.TableLM(65, 4)
    contexts, counts = tb.count_table(to_torch(markov_text(50)), 1, V)
    for kwargs, message in (({"steps": 0}, "steps"), ({"steps": 2, "lr": 0.0}, "lr"), ({"steps": 2, "l2": -1.0}, "l2")):
        with pytest.raises(ValueError, match=message):
            tb.fit_counts(tb.TableLM(V), contexts, counts, **kwargs)
