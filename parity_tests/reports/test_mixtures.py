"""Context-dependent mixtures and the growing count model (torch_lm/reports/mixtures.py): every
mixture is a distribution, no feature sees the character being predicted, matched orders agree
with a brute-force search, and the growing model is the static one refitted on what was scored."""

from __future__ import annotations

import pytest
import torch

from torch_lm.ngram import NGramLM
from torch_lm.reports.mixtures import (
    ContextWeights,
    growing_kn,
    matched_order,
    static_kn,
)
from torch_lm.reports.tuning import mixture_weight
from torch_lm.training.heldout import heldout_stream, target_contexts

V, ORDER = 5, 4


def ids_of(n: int, seed: int) -> torch.Tensor:
    return torch.randint(V, (n,), generator=torch.Generator().manual_seed(seed))


def seen_as_context(history: list[int], suffix: list[int]) -> bool:
    """Brute force: did ``suffix`` occur followed by a character, where the model counts it?
    The highest order counts every n-gram; lower orders count continuations, n-grams with a
    character before them."""
    m = len(suffix)
    first = 0 if m + 1 == ORDER else 1
    return any(history[i : i + m] == suffix for i in range(first, len(history) - m))


def test_matched_order_is_the_longest_seen_suffix():
    history, targets = ids_of(300, 0), ids_of(200, 1)
    ngram = NGramLM.fit(history, ORDER, V, "mkn")
    contexts = target_contexts(heldout_stream(history, targets, ORDER - 1), ORDER - 1)
    matched = matched_order(ngram, contexts)
    assert len(set(matched.tolist())) > 1  # the text exercises several orders
    for row, m in zip(contexts.tolist(), matched.tolist()):
        expected = max([k for k in range(1, ORDER) if seen_as_context(history.tolist(), row[ORDER - 1 - k :])] or [0])
        assert m == expected


def test_growing_model_predicts_each_block_from_what_precedes_it():
    history, targets = ids_of(300, 2), ids_of(50, 3)
    grown = growing_kn(history, targets, ORDER, V, block=20)
    for start in (0, 20, 40):
        seen = torch.cat([history, targets[:start]])
        expected = static_kn(NGramLM.fit(seen, ORDER, V, "mkn"), seen, targets[start : start + 20])
        torch.testing.assert_close(grown.probs[start : start + 20], expected.probs, rtol=0, atol=0)
        assert torch.equal(grown.matched[start : start + 20], expected.matched)
    whole = static_kn(NGramLM.fit(history, ORDER, V, "mkn"), history, targets)
    torch.testing.assert_close(growing_kn(history, targets, ORDER, V, block=50).probs, whole.probs, rtol=0, atol=0)


def test_the_growing_model_never_counts_the_character_it_predicts():
    history, targets = ids_of(300, 4), ids_of(60, 5)
    before = growing_kn(history, targets, ORDER, V, block=7)
    for j in (0, 6, 7, 13, 14, 33):  # the first target, blocks' last (6, 13) and first (7, 14), one inside
        changed = targets.clone()
        changed[j] = (changed[j] + 1) % V
        after = growing_kn(history, changed, ORDER, V, block=7)
        assert torch.equal(after.probs[: j + 1], before.probs[: j + 1])
        assert torch.equal(after.matched[: j + 1], before.matched[: j + 1])


def distributions(n: int, seed: int, sharpness: float) -> torch.Tensor:
    logits = sharpness * torch.randn(n, V, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return torch.softmax(logits, dim=1)


def test_a_context_mixture_is_a_distribution_at_every_position():
    a, b = distributions(400, 6, 3.0), distributions(400, 7, 1.0)
    matched = torch.randint(ORDER, (400,), generator=torch.Generator().manual_seed(8))
    weights = ContextWeights(torch.tensor([2.0, -1.0, 0.5, 30.0, -4.0, 3.0], dtype=torch.float64), ORDER)
    mixed = weights.mix(a, b, matched)
    lam = weights.lam(a, b, matched)
    assert bool(((lam > 0) & (lam < 1)).all())
    torch.testing.assert_close(mixed.sum(dim=1), torch.ones(400, dtype=torch.float64), rtol=0, atol=1e-14)
    assert bool((mixed > 0).all())


@pytest.mark.parametrize("bias", [0.0, 800.0, -800.0])
def test_one_row_in_numpy_is_the_batch_mix(bias):
    """``mix_row`` (the compressor's, one position at a time) agrees with ``mix`` to rounding,
    also where the weight saturates (a logit of +-800 overflows a naive exp)."""
    a, b = distributions(200, 6, 3.0), distributions(200, 7, 1.0)
    matched = torch.randint(ORDER, (200,), generator=torch.Generator().manual_seed(8))
    weights = ContextWeights(torch.tensor([bias, -1.0, 0.5, 3.0, -4.0, 3.0], dtype=torch.float64), ORDER)
    batch = weights.mix(a, b, matched)
    for j in range(200):
        row = weights.mix_row(a[j].numpy(), b[j].numpy(), int(matched[j]))
        torch.testing.assert_close(torch.from_numpy(row), batch[j], rtol=1e-13, atol=1e-15)


def test_fitted_weights_beat_the_best_single_weight_and_follow_the_better_model():
    """In contexts the count model matched fully it is the better one, elsewhere the other is: the
    fitted weight must learn that, and so do at least as well as any single lambda."""
    n = 4000
    targets = torch.randint(V, (n,), generator=torch.Generator().manual_seed(9))
    matched = torch.randint(ORDER, (n,), generator=torch.Generator().manual_seed(10))
    good = torch.full((n, V), 0.05 / (V - 1), dtype=torch.float64).scatter_(1, targets[:, None], 0.95)
    vague = torch.full((n, V), 1.0 / V, dtype=torch.float64)
    full = (matched == ORDER - 1)[:, None]
    a, b = torch.where(full, vague, good), torch.where(full, good, vague)  # b: the count model
    weights = ContextWeights.fit(a, b, matched, targets, ORDER)
    lam = weights.lam(a, b, matched)
    assert lam[matched == ORDER - 1].max() < 0.1 and lam[matched < ORDER - 1].min() > 0.9
    pick = lambda p: p.gather(1, targets[:, None]).squeeze(1)  # noqa: E731
    fitted = float(-torch.log(pick(weights.mix(a, b, matched))).mean())
    _, single = mixture_weight(pick(a), pick(b))
    assert fitted < single - 0.1


def test_mismatched_inputs_are_refused():
    a = distributions(10, 0, 1.0)
    with pytest.raises(ValueError, match="one prediction"):
        ContextWeights.fit(a, a, torch.zeros(9, dtype=torch.int64), torch.zeros(10, dtype=torch.int64), ORDER)
