"""Count n-gram LMs: numpy_ref.ngram vs torch_lm.ngram, hand-computed values, a naive witness.

Tokens in the hand-checked corpora are letters: a=0, b=1, c=2, d=3. Fractions in the comments
are the arithmetic the expected values come from.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from fractions import Fraction as F
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_SHAKESPEARE, needs_tiny_shakespeare

from numpy_ref import ngram as ref
from torch_lm import ngram as tlm
from torch_lm.parity import Case, Component, assert_parity, assert_same, to_torch

REPO = Path(__file__).resolve().parents[1]
# (label, smoothing, k, discount) covering every smoothing, and add-k both unsmoothed and smoothed
SETTINGS = [("mle", "addk", 0.0, 0.75), ("addk", "addk", 0.3, 0.75), ("kn", "kn", 1.0, 0.6), ("mkn", "mkn", 1.0, 0.75)]
SETTING_IDS = [s[0] for s in SETTINGS]
ENGINES = [(ref.NGramLM, np.asarray), (tlm.NGramLM, torch.as_tensor)]
ENGINE_IDS = ["numpy", "torch"]


def ids_of(text: str) -> np.ndarray:
    """Letters a, b, c, d -> ids 0, 1, 2, 3."""
    return np.array([ord(ch) - ord("a") for ch in text], dtype=np.int64)


def markov_text(rng: np.random.Generator, vocab_size: int, length: int) -> np.ndarray:
    """A sample of a random sparse first-order Markov chain: skewed counts, many unseen n-grams."""
    cumulative = np.cumsum(rng.dirichlet(np.full(vocab_size, 0.3), size=vocab_size), axis=1)
    uniforms = rng.random(length)
    ids = [0]
    for u in uniforms[1:]:  # inverse-CDF draw from the row of the previous token
        ids.append(min(int(np.searchsorted(cumulative[ids[-1]], u)), vocab_size - 1))
    return np.array(ids, dtype=np.int64)


def contexts_for(ids: np.ndarray, width: int, rng: np.random.Generator, vocab_size: int) -> np.ndarray:
    """Every context of ``width`` tokens seen in ids, plus 100 random ones (mostly unseen)."""
    random = rng.integers(0, vocab_size, size=(100, width), dtype=np.int64)
    if width == 0:
        return random
    seen = np.stack([ids[j : len(ids) - width + j] for j in range(width)], axis=1)  # (T - width, width)
    return np.concatenate([np.unique(seen, axis=0), random])


def fractions(values) -> list[float]:
    return [float(v) for v in values]


# ------------------------------------------------------------------ the two engines as components


def count_model(name: str, quantities) -> Component:
    """An outputs-only Component (counts have no gradient): each engine fits its ``NGramLM`` on
    ``fixed["train"]`` with the settings ``fixed["fit"]`` and returns ``quantities(model, fixed)``."""

    def fitted(engine, fixed):
        return engine.fit(fixed["train"], **fixed["fit"])

    return Component(
        name,
        lambda inputs, fixed: (quantities(fitted(ref.NGramLM, fixed), fixed), None),
        lambda inputs, fixed: quantities(fitted(tlm.NGramLM, fixed), fixed),
    )


def probabilities_and_score(model, fixed) -> dict:
    """The next-token table for every ``fixed["contexts"]`` (keyed by history width), the
    held-out probability of every token of ``fixed["ids"]`` from ``fixed["start"]`` on, and the
    score: a Python float in both engines, made a float64 scalar so that it is held to float64's
    tolerance (two plain floats are compared exactly)."""
    outputs = {f"prob_table[width {w}]": model.prob_table(c) for w, c in fixed["contexts"].items()}
    outputs["token_probs"] = model.token_probs(fixed["ids"], fixed["start"])
    outputs["score"] = np.float64(model.score(fixed["ids"], fixed["start"]))
    return outputs


NGRAM = count_model("ngram", probabilities_and_score)
# How much of each context the model has counted: integers, equal on both engines.
SEEN_CONTEXTS = count_model(
    "ngram seen context lengths",
    lambda model, fixed: {
        f"seen_context_length[width {w}]": model.seen_context_length(c) for w, c in fixed["contexts"].items()
    },
)
# (D1, D2, D3+) of every level: both engines estimate them with numpy_ref's level_discounts from
# count-of-counts tallied in integers, so they agree bit for bit.
DISCOUNTS = count_model(
    "ngram discounts", lambda model, fixed: {"discounts": np.array([lv.discounts for lv in model.levels])}
)


# ------------------------------------------------------------------ naive witness (dicts, loops)


def naive_prob(ids, order, vocab_size, smoothing, k, discount, history, token) -> float:
    """P(token | history) straight from the definitions, with Counters; history has order-1 ids."""
    text = [int(t) for t in ids]
    raw = {m: Counter(tuple(text[i : i + m]) for i in range(len(text) - m + 1)) for m in range(1, order + 1)}

    def counts(m):  # raw at the top (and for add-k), else distinct left neighbours of each m-gram
        if m == order or smoothing == "addk":
            return raw[m]
        return Counter(gram[1:] for gram in raw[m + 1])

    def prob(m, h, w):
        if m == 0:
            return 1.0 / vocab_size
        table = counts(m)
        row = {x: table[h + (x,)] for x in range(vocab_size) if table[h + (x,)] > 0}
        total = sum(row.values())
        if smoothing == "addk":
            return (row.get(w, 0) + k) / (total + k * vocab_size) if total + k > 0 else 1.0 / vocab_size
        lower = prob(m - 1, h[1:], w)
        if total == 0:
            return lower
        tally = Counter(min(c, 5) for c in table.values())
        d1, d2, d3 = ref.level_discounts(smoothing, discount, [tally[c] for c in (1, 2, 3, 4)])
        d = lambda c: d1 if c == 1 else d2 if c == 2 else d3  # noqa: E731
        gamma = sum(d(c) for c in row.values()) / total
        return (row[w] - d(row[w])) / total + gamma * lower if w in row else gamma * lower

    return prob(order, tuple(int(t) for t in history), int(token))


# ------------------------------------------------------------------ hand-computed values


def test_addk_by_hand():
    """'aabab', V=3: bigrams aa:1 ab:2 ba:1; context a has 3 bigrams, b has 1, c none."""
    train = ids_of("aabab")
    model = ref.NGramLM.fit(train, 2, 3, "addk", k=0.5)
    # (c + k) / (total + kV), kV = 1.5:  a -> (1.5, 2.5, 0.5) / 4.5;  b -> (1.5, 0.5, 0.5) / 2.5
    # c unseen: (0 + .5) / (0 + 1.5) = 1/3 each
    expected = [[1 / 3, 5 / 9, 1 / 9], [0.6, 0.2, 0.2], [1 / 3, 1 / 3, 1 / 3]]
    assert_same(model.prob_table(np.array([[0], [1], [2]])), np.array(expected))
    # k = 0, unsmoothed: a -> (1, 2, 0) / 3, b -> (1, 0, 0); unseen context c -> uniform 1/V
    mle = ref.NGramLM.fit(train, 2, 3, "addk", k=0.0)
    expected = [[1 / 3, 2 / 3, 0.0], [1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]]
    assert_same(mle.prob_table(np.array([[0], [1], [2]])), np.array(expected))
    # unigram, k = 1: counts (3, 2, 0) + 1 over 5 + 3
    unigram = ref.NGramLM.fit(train, 1, 3, "addk", k=1.0)
    assert_same(unigram.prob_table(np.zeros((1, 0), dtype=np.int64)), np.array([[4 / 8, 3 / 8, 1 / 8]]))


# 'aabab', V=3, D=0.75. Continuation unigram from the bigram types {aa, ab, ba}: a is preceded by
# {a, b} -> 2, b by {a} -> 1, total 3 types; gamma = .75 * 2 types / 3 = 0.5:
#   P1 = ((2-.75)/3 + .5/3, (1-.75)/3 + .5/3, .5/3) = (7/12, 1/4, 1/6)
KN_P1 = [F(7, 12), F(1, 4), F(1, 6)]


def test_kneser_ney_bigram_by_hand():
    model = ref.NGramLM.fit(ids_of("aabab"), 2, 3, "kn", discount=0.75)
    # raw bigrams: a -> aa:1 ab:2 (total 3, 2 types, gamma = .75*2/3 = .5); b -> ba:1 (gamma = .75)
    # P(.|a) = (.25/3 + .5*7/12, 1.25/3 + .5*1/4, .5*1/6) = (3/8, 13/24, 1/12)
    # P(.|b) = (.25 + .75*7/12, .75*1/4, .75*1/6) = (11/16, 3/16, 1/8);  P(.|c) unseen = P1
    expected = [[F(3, 8), F(13, 24), F(1, 12)], [F(11, 16), F(3, 16), F(1, 8)], KN_P1]
    assert_same(model.prob_table(np.array([[0], [1], [2]])), np.array([fractions(r) for r in expected]))
    # an empty history is the unigram level the recursion backs off to
    assert_same(model.prob_table(np.zeros((1, 0), dtype=np.int64)), np.array([fractions(KN_P1)]))
    assert all(level.discounts == (0.75, 0.75, 0.75) for level in model.levels)


def test_kneser_ney_trigram_by_hand():
    model = ref.NGramLM.fit(ids_of("aabab"), 3, 3, "kn", discount=0.75)
    # raw trigrams aab, aba, bab (1 each): contexts aa, ab, ba each have alpha .25, gamma .75.
    # Continuation bigrams from those types: ab preceded by {a, b} -> 2, ba by {a} -> 1; aa only
    # opens the text, has no left neighbour and drops out. Context a: ab:2 -> alpha 1.25/2,
    # gamma .75/2; context b: ba:1 -> alpha .25, gamma .75. With P1 as for the bigram:
    #   P2(.|a) = (.375*7/12, .625 + .375/4, .375/6) = (7/32, 23/32, 1/16)
    #   P2(.|b) = (.25 + .75*7/12, .75/4, .75/6)     = (11/16, 3/16, 1/8)
    p2_a = [F(7, 32), F(23, 32), F(1, 16)]
    p2_b = [F(11, 16), F(3, 16), F(1, 8)]
    # P3(.|aa) = (.75*7/32, .25 + .75*23/32, .75/16) = (21/128, 101/128, 6/128)
    # P3(.|ab) = (.25 + .75*11/16, .75*3/16, .75/8)  = (49/64, 9/64, 6/64)
    # bb is an unseen context -> P2(.|b); ca unseen -> P2(.|a)
    expected = [[F(21, 128), F(101, 128), F(6, 128)], [F(49, 64), F(9, 64), F(6, 64)], p2_b, p2_a]
    contexts = np.array([[0, 0], [0, 1], [1, 1], [2, 0]])
    assert_same(model.prob_table(contexts), np.array([fractions(r) for r in expected]))


def test_modified_kneser_ney_by_hand():
    """'aaaaabababc', V=4 (d never occurs), fallback discount 0.5."""
    model = ref.NGramLM.fit(ids_of("aaaaabababc"), 2, 4, "mkn", discount=0.5)
    # raw bigrams aa:4 ab:3 ba:2 bc:1 -> n1=n2=n3=n4=1, Y = 1/(1+2) = 1/3,
    #   D1 = 1 - 2/3 = 1/3, D2 = 2 - 3(1/3)(1/1) = 1, D3+ = 3 - 4(1/3)(1/1) = 5/3
    assert_same(np.array(model.levels[1].discounts), np.array([1 / 3, 1.0, 5 / 3]))
    # continuation unigrams: a <- {a, b}: 2, b <- {a}: 1, c <- {b}: 1 -> n3 = 0, closed form
    # undefined -> fallback D = .5 for all. Total 4 types, gamma = .5 * 3 types / 4 = 3/8:
    #   P1 = (1.5/4 + 3/32, .5/4 + 3/32, .5/4 + 3/32, 3/32) = (15, 7, 7, 3) / 32
    assert model.levels[0].discounts == (0.5, 0.5, 0.5)
    p1 = [F(15, 32), F(7, 32), F(7, 32), F(3, 32)]
    # context a (total 7, counts 4 and 3 both take D3+ = 5/3): alpha(aa) = (7/3)/7 = 1/3,
    #   alpha(ab) = (4/3)/7 = 4/21, gamma = 2(5/3)/7 = 10/21
    #   P(.|a) = (1/3 + 10/21*15/32, 4/21 + 10/21*7/32, 10/21*7/32, 10/21*3/32) = (187, 99, 35, 15)/336
    # context b (total 3): alpha(ba) = (2-1)/3 = 1/3, alpha(bc) = (1-1/3)/3 = 2/9, gamma = (1 + 1/3)/3 = 4/9
    #   P(.|b) = (1/3 + 4/9*15/32, 4/9*7/32, 2/9 + 4/9*7/32, 4/9*3/32) = (39, 7, 23, 3)/72
    # contexts c and d are unseen -> P1
    expected = [[F(n, 336) for n in (187, 99, 35, 15)], [F(n, 72) for n in (39, 7, 23, 3)], p1, p1]
    assert_same(model.prob_table(np.array([[0], [1], [2], [3]])), np.array([fractions(r) for r in expected]))


@pytest.mark.parametrize(
    "smoothing, expected",
    [
        # order 2 of Kneser-Ney counts continuations: d starts the text, no token comes before it
        ("kn", [2, 0, 1, 2, 0, 1]),
        ("addk", [2, 1, 1, 2, 1, 1]),  # raw counts at every order: d was followed by a
    ],
)
@pytest.mark.parametrize("engine,convert", ENGINES, ids=ENGINE_IDS)
def test_seen_context_length_by_hand(engine, convert, smoothing, expected):
    """'dabcab', order 3: the trigram contexts are da, ab, bc, ca; order 2's are a, b, c (and d
    with raw counts). Rows da and ab are trigram contexts; of cd and dd only d is left; bb and cc
    end in a counted b and c."""
    model = engine.fit(convert(ids_of("dabcab")), 3, 4, smoothing)
    contexts = ids_of("dacdbbabddcc").reshape(6, 2)
    expected = np.array(expected, dtype=np.int64)
    assert_same(np.asarray(model.seen_context_length(convert(contexts))), expected)
    assert_same(np.asarray(model.seen_context_length(convert(contexts[:, 1:]))), np.minimum(expected, 1))
    assert_same(np.asarray(model.seen_context_length(convert(contexts[:, :0]))), np.zeros(6, dtype=np.int64))


def test_modified_kn_discount_formula():
    # (n1..n4) = (10, 4, 2, 1): Y = 10/18 = 5/9; D1 = 1 - 2(5/9)(4/10) = 5/9,
    # D2 = 2 - 3(5/9)(2/4) = 7/6, D3+ = 3 - 4(5/9)(1/2) = 17/9
    assert_same(np.array(ref.modified_kn_discounts((10, 4, 2, 1), 0.75)), np.array([5 / 9, 7 / 6, 17 / 9]))
    assert ref.modified_kn_discounts((5, 3, 0, 0), 0.75) == (0.75, 0.75, 0.75)  # n3 = 0: undefined
    # (1, 1, 10, 0): Y = 1/3, D2 = 2 - 3(1/3)(10/1) = -8 < 0 -> fallback
    assert ref.modified_kn_discounts((1, 1, 10, 0), 0.4) == (0.4, 0.4, 0.4)


# ------------------------------------------------------------------ held-out protocol


def test_first_val_positions_take_history_from_train():
    train, val = ids_of("aabab"), ids_of("ba")
    both = np.concatenate([train, val])  # a a b a b | b a
    bigram = ref.NGramLM.fit(train, 2, 3, "kn")
    # P(b | b), the b ending train, = 3/16; then P(a | b) = 11/16 (hand values above)
    assert math.isclose(bigram.score(both, len(train)), -(math.log(3 / 16) + math.log(11 / 16)) / 2)
    trigram = ref.NGramLM.fit(train, 3, 3, "kn")
    # P(b | ab) = 9/64 with both history tokens from train; P(a | bb), bb unseen -> P2(a|b) = 11/16
    assert math.isclose(trigram.score(both, len(train)), -(math.log(9 / 64) + math.log(11 / 16)) / 2)


@pytest.mark.parametrize("label,smoothing,k,discount", SETTINGS, ids=SETTING_IDS)
def test_score_agrees_with_prob_table(label, smoothing, k, discount, rng):
    """The per-position path of ``score`` and the table path of ``prob_table`` are one model."""
    ids = markov_text(rng, 5, 600)
    model = ref.NGramLM.fit(ids[:500], 3, 5, smoothing, k=k, discount=discount)
    contexts = np.stack([ids[498:598], ids[499:599]], axis=1)  # (100, 2) history of positions 500..599
    table = model.prob_table(contexts)
    assert_same(model.token_probs(ids, 500), table[np.arange(100), ids[500:600]])
    with np.errstate(divide="ignore"):
        expected = -np.log(model.token_probs(ids, 500)).mean()
    assert model.score(ids, 500) == expected


# ------------------------------------------------------------------ parity, normalisation, witness


@pytest.mark.parametrize("order", [1, 3, 5])
@pytest.mark.parametrize("label,smoothing,k,discount", SETTINGS, ids=SETTING_IDS)
def test_numpy_torch_parity(order, label, smoothing, k, discount, rng):
    ids = markov_text(rng, 6, 1500)
    train = ids[:1200]
    fixed = {
        "train": train,
        "fit": dict(order=order, vocab_size=6, smoothing=smoothing, k=k, discount=discount),
        "contexts": {width: contexts_for(train, width, rng, 6) for width in range(order)},  # every history width
        "ids": ids,
        "start": 1200,
    }
    case = Case({}, fixed, label=f"order {order}, {label}")
    assert_parity(DISCOUNTS, case, rtol=0.0, atol=0.0)
    assert_parity(NGRAM, case)
    assert_parity(SEEN_CONTEXTS, case, rtol=0.0, atol=0.0)


@pytest.mark.parametrize("engine,convert", ENGINES, ids=ENGINE_IDS)
@pytest.mark.parametrize("label,smoothing,k,discount", SETTINGS, ids=SETTING_IDS)
def test_every_distribution_sums_to_one(engine, convert, label, smoothing, k, discount, rng):
    ids = markov_text(rng, 7, 800)
    model = engine.fit(convert(ids), 4, 7, smoothing, k=k, discount=discount)
    for width in (0, 2, 3, 6):  # short, full (3) and longer-than-needed histories
        table = np.asarray(model.prob_table(convert(contexts_for(ids, width, rng, 7))))
        np.testing.assert_allclose(table.sum(axis=1), 1.0, rtol=0, atol=1e-12)
        if smoothing == "addk" and k == 0:
            assert (table >= 0).all()
        else:  # smoothing reaches down to 1/V: nothing is impossible
            assert (table > 0).all()


def test_longer_contexts_use_their_last_order_minus_one_tokens(rng):
    ids = markov_text(rng, 5, 400)
    model = ref.NGramLM.fit(ids, 3, 5, "mkn")
    contexts = rng.integers(0, 5, size=(50, 6))
    assert_same(model.prob_table(contexts), model.prob_table(contexts[:, -2:]))


@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("label,smoothing,k,discount", SETTINGS, ids=SETTING_IDS)
def test_matches_naive_dictionary_counts(order, label, smoothing, k, discount, rng):
    """The vectorised counting (codes, unique, searchsorted) against Counters over tuples."""
    ids = markov_text(rng, 4, 300)
    model = ref.NGramLM.fit(ids, order, 4, smoothing, k=k, discount=discount)
    histories = list(itertools.product(range(4), repeat=order - 1))  # all of them, seen or not
    table = model.prob_table(np.array(histories, dtype=np.int64).reshape(len(histories), order - 1))
    expected = [[naive_prob(ids, order, 4, smoothing, k, discount, h, w) for w in range(4)] for h in histories]
    assert_same(table, np.array(expected))


# ------------------------------------------------------------------ sampling


@pytest.mark.parametrize("engine,convert", ENGINES, ids=ENGINE_IDS)
def test_sampling_is_deterministic_where_the_model_is(engine, convert):
    # unsmoothed trigram of (abc)*: after "ab" only c, after "bc" only a, ...
    model = engine.fit(convert(ids_of("abc" * 20)), 3, 4, "addk", k=0.0)
    generator = np.random.default_rng(0) if engine is ref.NGramLM else torch.Generator().manual_seed(0)
    drawn = model.sample(7, generator, prompt=convert(ids_of("ab")))
    assert np.asarray(drawn).tolist() == ids_of("cabcabc").tolist()


def test_sampling_numpy_reproducible_in_vocabulary_and_calibrated():
    model = ref.NGramLM.fit(ids_of("aab" * 30), 1, 4, "addk", k=0.0)  # P = (2/3, 1/3, 0, 0)
    first = model.sample(1000, np.random.default_rng(7))
    assert first.tolist() == model.sample(1000, np.random.default_rng(7)).tolist()
    assert first.tolist() != model.sample(1000, np.random.default_rng(8)).tolist()
    assert set(first.tolist()) <= {0, 1}
    assert abs((first == 0).mean() - 2 / 3) < 0.05  # 3 standard errors of a 1000-draw frequency


def test_sampling_torch_reproducible_in_vocabulary_and_calibrated():
    model = tlm.NGramLM.fit(to_torch(ids_of("aab" * 30)), 1, 4, "addk", k=0.0)
    first = model.sample(1000, torch.Generator().manual_seed(7))
    assert torch.equal(first, model.sample(1000, torch.Generator().manual_seed(7)))
    assert not torch.equal(first, model.sample(1000, torch.Generator().manual_seed(8)))
    assert set(first.tolist()) <= {0, 1}
    assert abs((first == 0).double().mean().item() - 2 / 3) < 0.05


@pytest.mark.parametrize("engine,convert", ENGINES, ids=ENGINE_IDS)
def test_sampling_from_short_prompt_stays_in_vocabulary(engine, convert, rng):
    model = engine.fit(convert(markov_text(rng, 5, 500)), 4, 6, "kn")  # id 5 never occurs
    generator = np.random.default_rng(1) if engine is ref.NGramLM else torch.Generator().manual_seed(1)
    drawn = np.asarray(model.sample(200, generator, prompt=convert(np.array([2], dtype=np.int64))))
    assert drawn.shape == (200,) and drawn.min() >= 0 and drawn.max() < 6


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("engine,convert", ENGINES, ids=ENGINE_IDS)
@pytest.mark.parametrize(
    "kwargs,ids,argument",
    [
        (dict(order=0), "abab", "order"),
        (dict(order=2, vocab_size=0), "abab", "vocab_size"),
        (dict(order=12, vocab_size=65), "abab", "vocab_size"),  # 65**12 overflows int64 codes
        (dict(order=2, smoothing="witten-bell"), "abab", "smoothing"),
        (dict(order=2, smoothing="addk", k=-0.1), "abab", "k"),
        (dict(order=2, smoothing="kn", discount=0.0), "abab", "discount"),
        (dict(order=2, smoothing="kn", discount=1.0), "abab", "discount"),
        (dict(order=2, smoothing="mkn", discount=1.5), "abab", "discount"),
        (dict(order=2), "abe", "train_ids"),  # e = id 4, outside V = 4
        (dict(order=5), "abab", "train_ids"),  # 4 tokens, fewer than the order
    ],
)
def test_bad_fit_arguments(engine, convert, kwargs, ids, argument):
    kwargs = {"vocab_size": 4, **kwargs}
    with pytest.raises(ValueError, match=argument):
        engine.fit(convert(ids_of(ids)), **kwargs)


@pytest.mark.parametrize("engine,convert", ENGINES, ids=ENGINE_IDS)
def test_bad_ids_arrays(engine, convert):
    with pytest.raises(ValueError, match="train_ids"):
        engine.fit(convert(np.array([-1, 0, 1])), 2, 4)
    with pytest.raises(ValueError, match="train_ids"):
        engine.fit(convert(np.array([0.0, 1.0, 2.0])), 2, 4)
    with pytest.raises(ValueError, match="train_ids"):
        engine.fit(convert(np.zeros((2, 3), dtype=np.int64)), 2, 4)
    model = engine.fit(convert(ids_of("abcab")), 3, 4)
    with pytest.raises(ValueError, match="contexts"):
        model.prob_table(convert(np.array([[0, 4]])))
    with pytest.raises(ValueError, match="contexts"):
        model.prob_table(convert(np.array([0, 1])))
    with pytest.raises(ValueError, match=r"seen_context_length: contexts must lie in \[0, 4\)"):
        model.seen_context_length(convert(np.array([[0, 4]])))
    with pytest.raises(ValueError, match="seen_context_length: contexts must be 2-D"):
        model.seen_context_length(convert(np.array([0, 1])))
    with pytest.raises(ValueError, match="start"):
        model.score(convert(ids_of("abcab")), 1)  # position 1 lacks a 2-token history
    with pytest.raises(ValueError, match="start"):
        model.score(convert(ids_of("abcab")), 5)  # nothing left to score
    with pytest.raises(ValueError, match="ids"):
        model.score(convert(ids_of("abcae")), 2)
    with pytest.raises(ValueError, match="prompt"):
        model.sample(3, None, prompt=convert(np.array([7])))
    with pytest.raises(ValueError, match="length"):
        model.sample(0, None)


# ------------------------------------------------------------------ reference figures (full data)

# docs/DESIGN.md §5 figures: (order, smoothing, k, val loss in nats/char), reproduced to ±0.002
REFERENCE_FIGURES = [
    (1, "addk", 0.0, 3.347),
    (4, "addk", 0.1, 1.784),
    (3, "kn", 1.0, 2.041),
    (6, "kn", 1.0, 1.539),
    (7, "mkn", 1.0, 1.516),
]


def tiny_shakespeare_ids() -> np.ndarray:
    """The full text as ids into its sorted character set: (1,115,394,) int64, V = 65."""
    text = TINY_SHAKESPEARE.read_text(encoding="utf-8")
    vocab = np.array([ord(ch) for ch in sorted(set(text))])
    ids = np.searchsorted(vocab, np.array([ord(ch) for ch in text]))
    assert (len(ids), len(vocab)) == (1_115_394, 65)
    return ids


@pytest.mark.slow
@needs_tiny_shakespeare
def test_reference_figures_on_tiny_shakespeare():
    """Every count-model figure of docs/DESIGN.md §5 with the NumPy engine (about 2 s)."""
    ids = tiny_shakespeare_ids()
    n_train = 1_003_854
    for order, smoothing, k, figure in REFERENCE_FIGURES:
        loss = ref.NGramLM.fit(ids[:n_train], order, 65, smoothing, k=k).score(ids, n_train)
        assert abs(loss - figure) <= 0.002, (order, smoothing, loss, figure)
    bigram = ref.NGramLM.fit(ids[:n_train], 2, 65, "addk", k=0.0)
    assert abs(bigram.score(ids[:n_train], 1) - 2.452) <= 0.002  # in-sample: every train bigram was seen
    assert bigram.score(ids, n_train) == math.inf  # val has bigrams train never saw


@pytest.mark.slow
@needs_tiny_shakespeare
def test_reference_figure_torch_modified_kn():
    """The best count model, 7-gram modified KN, with the torch engine (the rest is parity)."""
    ids = to_torch(tiny_shakespeare_ids())
    loss = tlm.NGramLM.fit(ids[:1_003_854], 7, 65, "mkn").score(ids, 1_003_854)
    assert abs(loss - 1.516) <= 0.002
