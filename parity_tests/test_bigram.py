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
import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from numpy_ref.bigram import (
    count_cross_entropy,
    count_mle_loss,
    count_table,
    init_factored_params,
    init_table_params,
)
from numpy_ref.ngram import NGramLM
from torch_lm import bigram as tb
from torch_lm.parity import (
    Case,
    Component,
    assert_central_differences,
    assert_gradcheck,
    assert_parity,
    assert_refused_alike,
    assert_same,
    run_numpy,
    run_torch,
    to_torch,
)
from torch_lm.parity.components import FACTORED_LM, TABLE_LM

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


COMPONENTS = {"table": TABLE_LM, "factored": FACTORED_LM}


def random_params(form: str, context: int, rng, embed_dim: int = 3) -> dict[str, np.ndarray]:
    """The table N(0, 1) (its init is all zeros); the factored form's init plus noise."""
    if form == "table":
        return {k: rng.standard_normal(p.shape) for k, p in init_table_params(V, context).items()}
    return {
        k: p + 0.3 * rng.standard_normal(p.shape) for k, p in init_factored_params(V, context, embed_dim, rng).items()
    }


def loss_only(params, fixed: dict, label: str = "") -> Case:
    """A case whose gradient is the loss's alone (zero upstream on the logits), as in training."""
    upstream = {"logits": np.zeros((len(fixed["idx"]), V)), "loss": np.array(1.0)}
    return Case(params, fixed, upstream=upstream, label=label)


def window_mean_witness(component: Component) -> Component:
    """``component`` on the count table (fixed idx = contexts, counts), witnessed by
    ``F.cross_entropy`` over every window (fixed ``windows``, ``window_targets``): the same loss
    and, from it, the same gradient."""

    def witness(inputs, fixed):
        logits = component.torch_forward(inputs, {"idx": fixed["windows"]})["logits"]
        return {"loss": F.cross_entropy(logits, fixed["window_targets"])}

    return dataclasses.replace(component, name=f"{component.name} counts", witness=witness)


def _count_cross_entropy_numpy(inputs, fixed):
    loss, dlogits = count_cross_entropy(inputs["logits"], fixed["counts"])
    return {"loss": loss}, dlogits


# The count-weighted loss alone (logits in, counts fixed), forward only: for its refusals.
COUNT_CROSS_ENTROPY = Component(
    "count_cross_entropy",
    _count_cross_entropy_numpy,
    lambda t, f: {"loss": tb.count_cross_entropy(t["logits"], f["counts"])},
)

FORMS = [("table", 1), ("table", 2), ("factored", 1), ("factored", 2)]
FORM_IDS = [f"{form}-context{c}" for form, c in FORMS]


# ----------------------------------------------------------------------------- parity
@pytest.mark.parametrize("batch", [1, 7])
@pytest.mark.parametrize("form, context", FORMS, ids=FORM_IDS)
def test_logits_loss_and_every_gradient_match(form, context, batch, dtypes, rng):
    params = random_params(form, context, rng)
    idx, targets = rng.integers(0, V, (batch, context)), rng.integers(0, V, batch)
    assert_parity(COMPONENTS[form], Case(params, {"idx": idx, "targets": targets}), dtypes)


def test_table_form_is_a_row_lookup_by_context_code(rng):
    """context 2: row a*V + b of the table gives the logits after (a, b); the bigram: row prev.
    In both engines, exactly."""
    lookup = dataclasses.replace(TABLE_LM, numpy_backward=None)  # forward only
    params = random_params("table", 2, rng)
    bigram = random_params("table", 1, rng)
    for run in (run_numpy, run_torch):
        logits = run(lookup, Case(params, {"idx": np.array([[2, 5], [5, 2]])})).outputs["logits"]
        assert_same(logits, params["table.weight"][[2 * V + 5, 5 * V + 2]], run.__name__, rtol=0, atol=0)
        logits = run(lookup, Case(bigram, {"idx": np.array([[4]])})).outputs["logits"]
        assert_same(logits, bigram["table.weight"][[4]], run.__name__, rtol=0, atol=0)


@pytest.mark.parametrize("form, context", FORMS, ids=FORM_IDS)
def test_count_trick_equals_the_mean_over_every_window(form, context, dtypes, rng):
    """Count-weighted loss and gradients == mean cross-entropy over all T - C windows, in both
    engines, with F.cross_entropy over the windows as the third witness."""
    ids = markov_text(400)
    params = random_params(form, context, rng)
    contexts, counts = count_table(ids, context, V)
    windows = np.lib.stride_tricks.sliding_window_view(ids[:-1], context)
    targets = ids[context:]

    on_counts = {"idx": contexts, "counts": counts, "windows": windows, "window_targets": targets}
    counted = assert_parity(window_mean_witness(COMPONENTS[form]), loss_only(params, on_counts), dtypes)
    every_window = run_numpy(COMPONENTS[form], loss_only(params, {"idx": windows, "targets": targets}), dtypes[0])
    assert_same(counted.outputs["loss"], every_window.outputs["loss"], "loss")
    assert_same(counted.grads, every_window.grads, "grad")


@pytest.mark.parametrize("context", [1, 2, 3])
def test_count_tables_agree_with_a_python_count(context):
    ids = markov_text(500)
    expected = collections.Counter((tuple(ids[i - context : i]), ids[i]) for i in range(context, len(ids)))
    contexts, counts = count_table(ids, context, V)
    found = {(tuple(c), b): int(n) for c, row in zip(contexts, counts) for b, n in enumerate(row) if n}
    assert found == dict(expected)
    assert counts.sum() == len(ids) - context and (counts.sum(axis=1) > 0).all()
    t_contexts, t_counts = tb.count_table(to_torch(ids), context, V)
    assert_same({"contexts": t_contexts, "counts": t_counts}, {"contexts": contexts, "counts": counts})


@pytest.mark.parametrize("context", [1, 2])
def test_count_mle_loss_is_the_unsmoothed_ngram_train_loss(context):
    """Witness: numpy_ref.ngram's add-k with k = 0, scored on the train text itself."""
    ids = markov_text(800)
    _, counts = count_table(ids, context, V)
    expected = NGramLM.fit(ids, context + 1, V, "addk", k=0.0).score(ids, context)
    assert count_mle_loss(counts) == pytest.approx(expected, rel=1e-12)
    assert tb.count_mle_loss(to_torch(counts)) == pytest.approx(expected, rel=1e-12)


# ----------------------------------------------------------------------------- gradient checks
@pytest.mark.parametrize("form, context", FORMS, ids=FORM_IDS)
def test_numpy_backward_matches_central_differences(form, context):
    """Richardson's (4 D(h) - D(2h)) / 3 from two central differences: truncation O(h^4), so h can
    be large enough (1e-3) that rounding noise stays ~1e-13 even on the small gradients of rare
    contexts."""
    rng = np.random.default_rng(1)
    params = random_params(form, context, rng)
    contexts, counts = count_table(markov_text(300), context, V)
    checked = loss_only(params, {"idx": contexts, "counts": counts}, label=f"context {context}")
    assert_central_differences(COMPONENTS[form], checked, bound=1e-7, h=1e-3, richardson=True)


@pytest.mark.parametrize("form, context", FORMS, ids=FORM_IDS)
def test_torch_gradcheck_with_parameters_as_inputs(form, context, rng):
    params = random_params(form, context, rng, embed_dim=2)
    contexts, counts = count_table(markov_text(200), context, V)
    assert_gradcheck(COMPONENTS[form], Case(params, {"idx": contexts, "counts": counts}))


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
    assert runs[0][0] == runs[1][0]
    assert_same(runs[1][1], runs[0][1], "table", rtol=0, atol=0)
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


def module_holding(params: dict) -> torch.nn.Module:
    """The torch module of the context its parameters hold (the table's V**C rows, the output
    layer's C*E inputs), loaded with them."""
    if "table.weight" in params:
        context = round(math.log(params["table.weight"].shape[0], V))
        module = tb.TableLM(V, context)
    else:
        embed_dim = params["embedding.weight"].shape[1]
        module = tb.FactoredLM(V, params["output.weight"].shape[1] // embed_dim, embed_dim)
    module = module.to(next(iter(params.values())).dtype)
    module.load_state_dict(params)  # strict: the keys must match
    return module


def sized_by_params(component: Component) -> Component:
    """``component`` whose torch side takes the model's context from the parameters, not from
    idx (which the components read it from), so that an idx of the wrong context or rank reaches
    the module's own check."""
    return dataclasses.replace(component, torch_forward=lambda t, f: {"logits": module_holding(t)(f["idx"])[0]})


@pytest.mark.parametrize("form", ["table", "factored"])
@pytest.mark.parametrize("label", BAD_IDX)
def test_both_engines_reject_bad_idx(form, label):
    idx, message = BAD_IDX[label]
    params = random_params(form, 2, np.random.default_rng(0))
    assert_refused_alike(sized_by_params(COMPONENTS[form]), Case(params, {"idx": idx}), message)


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
    assert_refused_alike(COUNT_CROSS_ENTROPY, Case({"logits": logits}, {"counts": counts}), message)


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
