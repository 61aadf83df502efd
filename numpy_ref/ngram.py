"""Count n-gram (Markov) language models over integer token ids: add-k, interpolated Kneser-Ney
and modified Kneser-Ney (docs/DESIGN.md §1 "count n-gram LM", the stage-1 baseline).

An order-``n`` model predicts token ``w`` from the ``n - 1`` tokens before it (the history ``h``).
Every smoothing below is one *interpolation chain*: level ``m`` (an order-``m`` table, context of
``m - 1`` tokens) gives

    P_m(w | h) = alpha_m(h w) + gamma_m(h) * P_lower(w | h')

where ``h'`` drops the oldest token of ``h``, ``alpha_m`` is 0 for an unseen ``h w`` and
``gamma_m`` is 1 for an unseen ``h`` (so an unseen context simply hands over to the lower
distribution). The chain bottoms out in the uniform distribution 1/V.

* ``addk`` (one level, lower = uniform): P(w | h) = (c(hw) + k) / (c(h) + kV), i.e.
  alpha = c(hw) / (c(h) + kV), gamma = kV / (c(h) + kV). ``k = 0`` is the unsmoothed maximum
  likelihood estimate. Unseen context with ``k = 0``: uniform 1/V, the k -> 0 limit of add-k
  (gamma = 1). An event never seen after a seen context gets probability 0 under ``k = 0``, so
  a held-out loss can be ``inf`` (it is on Tiny Shakespeare for the bigram: the reference figure
  2.452 is the bigram's loss on the train text itself, where every event was seen).
* ``kn`` (interpolated Kneser-Ney, one discount D in (0, 1)) and ``mkn`` (modified Kneser-Ney,
  Chen & Goodman 1998, discounts D1, D2, D3+ per order): levels n, n-1, ..., 1, then uniform.
  With D(c) the discount for a count c (D1 for 1, D2 for 2, D3+ for >= 3; all D for ``kn``),

      alpha_m(hw) = (c_m(hw) - D(c_m(hw))) / sum_w c_m(hw)
      gamma_m(h)  = (D1 N1(h.) + D2 N2(h.) + D3+ N3+(h.)) / sum_w c_m(hw)

  where ``N_i(h.)`` counts the types after ``h`` with count i. The highest order uses raw counts
  c(hw); every lower order uses continuation counts N1+(. h w) = the number of distinct tokens
  seen before ``h w`` (Kneser & Ney 1995), so the unigram level is the continuation unigram,
  interpolated with 1/V: every token gets probability > 0.
  ``mkn`` estimates its discounts per order from the count-of-counts n1..n4 of that order's
  counts (raw for the highest order, continuation below): Y = n1 / (n1 + 2 n2),
  D1 = 1 - 2Y n2/n1, D2 = 2 - 3Y n3/n2, D3+ = 3 - 4Y n4/n3. The closed form is undefined
  when n1, n2 or n3 is 0 and meaningless when a D_c leaves [0, c] (tiny corpora); that order
  then falls back to the single ``discount`` for all three, as KenLM's ``--discount_fallback``
  does with user-given discounts.

Tokens are packed into int64 codes, base V, oldest token most significant: the m-gram
(x1..xm) is sum_j x_j V^(m-j); its context is code // V and its suffix (oldest token dropped)
code % V^(m-1). Counting is then ``np.unique`` over codes, and every lookup is a binary search
(``np.searchsorted``) in a sorted code array: no per-token Python loops, so a 7-gram on the
full Tiny Shakespeare fits and scores in seconds.

Plain NumPy, float64 probabilities; never imports torch. ``torch_lm/ngram.py`` is the twin and
imports the pure-Python helpers (argument checks, discount estimation) from here.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from numpy_ref.validation import check_index_range, check_integer_dtype, check_ndim, check_positive_int, fail

SMOOTHINGS = ("addk", "kn", "mkn")
DEFAULT_K = 1.0
DEFAULT_DISCOUNT = 0.75


# ---------------------------------------------------------------- pure-Python helpers (shared)


def check_fit_args(
    where: str, order: object, vocab_size: object, smoothing: object, k: object, discount: object
) -> tuple[int, int, str, float, float]:
    """Validate the hyperparameters of ``fit``; return them normalised.

    Raises ``ValueError`` naming the argument: order or vocab_size not a positive int,
    V^order beyond int64 (codes would overflow), unknown smoothing, k not a finite number >= 0,
    discount not in the open interval (0, 1).
    """
    order = check_positive_int(where, "order", order)
    vocab_size = check_positive_int(where, "vocab_size", vocab_size)
    if vocab_size**order > np.iinfo(np.int64).max:
        fail(
            where,
            f"order={order} with vocab_size={vocab_size}: vocab_size**order exceeds int64, "
            "so n-gram codes would overflow",
        )
    if smoothing not in SMOOTHINGS:
        fail(where, f"smoothing must be one of {SMOOTHINGS}, got {smoothing!r}")
    if isinstance(k, bool) or not isinstance(k, numbers.Real) or not 0.0 <= float(k) < math.inf:
        fail(where, f"k must be a finite number >= 0, got {k!r}")
    if isinstance(discount, bool) or not isinstance(discount, numbers.Real) or not 0.0 < float(discount) < 1.0:
        fail(where, f"discount must lie in the open interval (0, 1), got {discount!r}")
    return order, vocab_size, smoothing, float(k), float(discount)


def check_start(where: str, start: object, order: int, length: int) -> int:
    """Validate the first scored position: every scored token needs its full n-1 token history."""
    if isinstance(start, bool) or not isinstance(start, numbers.Integral) or not order - 1 <= start < length:
        fail(where, f"start must be an integer in [order - 1, len(ids)) = [{order - 1}, {length}), got {start!r}")
    return int(start)


def modified_kn_discounts(count_of_counts: Sequence[int], fallback: float) -> tuple[float, float, float]:
    """Chen & Goodman's (D1, D2, D3+) from the count-of-counts (n1, n2, n3, n4) of one order.

    Y = n1/(n1 + 2 n2); D1 = 1 - 2Y n2/n1; D2 = 2 - 3Y n3/n2; D3+ = 3 - 4Y n4/n3. Returns
    ``(fallback,) * 3`` when the closed form divides by zero or gives some D_c outside [0, c]
    (a discount above its count would make a probability negative).
    """
    n1, n2, n3, n4 = (int(n) for n in count_of_counts)
    if n1 == 0 or n2 == 0 or n3 == 0:
        return (fallback, fallback, fallback)
    y = n1 / (n1 + 2 * n2)
    estimate = (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)
    if not all(0.0 <= d <= c for c, d in zip((1, 2, 3), estimate)):
        return (fallback, fallback, fallback)
    return estimate


def level_discounts(smoothing: str, discount: float, count_of_counts: Sequence[int]) -> tuple[float, float, float]:
    """(D1, D2, D3+) of one Kneser-Ney order: D three times for ``kn``, estimated for ``mkn``."""
    if smoothing == "mkn":
        return modified_kn_discounts(count_of_counts, fallback=discount)
    return (discount, discount, discount)


# ---------------------------------------------------------------- counting (NumPy, vectorised)


def _check_ids(where: str, name: str, ids, vocab_size: int) -> np.ndarray:
    """``ids`` as a 1-D int64 array with every value in [0, vocab_size)."""
    ids = np.asarray(ids)
    check_ndim(where, name, ids.shape, (1,))
    check_integer_dtype(where, name, np.issubdtype(ids.dtype, np.integer), ids.dtype)
    if ids.size:
        check_index_range(where, name, int(ids.min()), int(ids.max()), vocab_size)
    return ids.astype(np.int64)


def ngram_codes(ids: np.ndarray, order: int, vocab_size: int) -> list[np.ndarray]:
    """Codes of every m-gram of ``ids`` for m = 1..order.

    ids (T,) int64 -> list whose entry m-1 is (T - m + 1,) int64, entry [i] = code of ids[i:i+m].
    """
    codes = [ids]
    for m in range(2, order + 1):
        # extend each (m-1)-gram by the token after it: shift left one base-V digit, add it
        codes.append(codes[-1][:-1] * vocab_size + ids[m - 1 :])  # (T - m + 1,)
    return codes


def continuation_counts(longer_keys: np.ndarray, order: int, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Kneser-Ney continuation counts N1+(. g) of the order-``order`` grams g.

    longer_keys (K,) are the distinct (order+1)-gram codes; each distinct (x, g) pair is one
    distinct left neighbour x of g, so counting suffixes counts neighbours.
    Returns (sorted distinct g codes (G,), their counts (G,) int64).
    """
    return np.unique(longer_keys % vocab_size**order, return_counts=True)


def count_of_counts(counts: np.ndarray) -> tuple[int, int, int, int]:
    """(n1, n2, n3, n4): how many types have count exactly 1, 2, 3, 4. counts (K,) int."""
    tally = np.bincount(np.minimum(counts, 5), minlength=6)
    return tuple(int(n) for n in tally[1:5])


def _contexts(keys: np.ndarray, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Group sorted m-gram codes by context (code // V).

    keys (K,) sorted -> (context codes (H,) sorted and distinct, inverse (K,) index of each
    key's context). Sorted keys have sorted contexts, so one pass finds the group starts.
    """
    ctx = keys // vocab_size
    starts = np.concatenate(([True], ctx[1:] != ctx[:-1]))
    return ctx[starts], np.cumsum(starts) - 1


@dataclass(frozen=True, eq=False)
class NGramLevel:
    """One order m of the chain: P_m(w | h) = alpha[h w] + gamma[h] * P_lower(w | h').

    keys (K,) int64 sorted codes of the m-grams with a nonzero count, alpha (K,) float64;
    context_keys (H,) int64 sorted codes of the (m-1)-token contexts seen, gamma (H,) float64.
    ``discounts`` = (D1, D2, D3+) used (zeros for add-k).
    """

    order: int
    keys: np.ndarray
    alpha: np.ndarray
    context_keys: np.ndarray
    gamma: np.ndarray
    discounts: tuple[float, float, float]


def addk_level(order: int, keys: np.ndarray, counts: np.ndarray, k: float, vocab_size: int) -> NGramLevel:
    """Add-k as interpolation with uniform: (c + k)/(d + kV) = c/(d + kV) + kV/(d + kV) * 1/V."""
    context_keys, inverse = _contexts(keys, vocab_size)
    totals = np.bincount(inverse, weights=counts)  # (H,) d = sum_w c(hw), exact in float64
    smoothed = totals + k * vocab_size
    return NGramLevel(order, keys, counts / smoothed[inverse], context_keys, k * vocab_size / smoothed, (0.0, 0.0, 0.0))


def kneser_ney_level(
    order: int, keys: np.ndarray, counts: np.ndarray, discounts: tuple[float, float, float], vocab_size: int
) -> NGramLevel:
    """Absolute discounting of one order: alpha = (c - D(c))/d, gamma = sum_types D(c) / d."""
    d1, d2, d3 = discounts
    context_keys, inverse = _contexts(keys, vocab_size)
    n_contexts = len(context_keys)
    totals = np.bincount(inverse, weights=counts, minlength=n_contexts)  # (H,)
    # types per context with count 1, 2, >= 3: integer tallies so both engines agree exactly
    n1 = np.bincount(inverse[counts == 1], minlength=n_contexts)
    n2 = np.bincount(inverse[counts == 2], minlength=n_contexts)
    n3 = np.bincount(inverse[counts >= 3], minlength=n_contexts)
    discount = np.array([0.0, d1, d2, d3])[np.minimum(counts, 3)]  # (K,) D(c), counts >= 1
    alpha = (counts - discount) / totals[inverse]
    gamma = (d1 * n1 + d2 * n2 + d3 * n3) / totals
    return NGramLevel(order, keys, alpha, context_keys, gamma, discounts)


def build_levels(
    ids: np.ndarray, order: int, vocab_size: int, smoothing: str, k: float, discount: float
) -> tuple[NGramLevel, ...]:
    """The levels 1..order of a model fitted on ids (T,) int64 (entry m-1 is order m)."""
    distinct = [np.unique(codes, return_counts=True) for codes in ngram_codes(ids, order, vocab_size)]
    if smoothing == "addk":
        return tuple(addk_level(m, keys, counts, k, vocab_size) for m, (keys, counts) in enumerate(distinct, start=1))
    levels = []
    for m in range(1, order + 1):
        # the highest order keeps raw counts; lower orders count distinct left neighbours
        keys, counts = distinct[m - 1] if m == order else continuation_counts(distinct[m][0], m, vocab_size)
        discounts = level_discounts(smoothing, discount, count_of_counts(counts))
        levels.append(kneser_ney_level(m, keys, counts, discounts, vocab_size))
    return tuple(levels)


# ---------------------------------------------------------------- querying


def _lookup(keys: np.ndarray, values: np.ndarray, queries: np.ndarray, default: float) -> np.ndarray:
    """values[j] where keys[j] == query, else ``default``. keys (K,) sorted; queries any shape."""
    index = np.minimum(np.searchsorted(keys, queries), len(keys) - 1)
    return np.where(keys[index] == queries, values[index], default)


def _contains(keys: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Whether each query is one of ``keys``: keys (K,) sorted; queries any shape -> bool, same shape."""
    if len(keys) == 0:
        return np.zeros(np.shape(queries), dtype=bool)
    index = np.minimum(np.searchsorted(keys, queries), len(keys) - 1)
    return keys[index] == queries


def _encode(columns: Sequence[np.ndarray], vocab_size: int, shape: tuple[int, ...]) -> np.ndarray:
    """Code of token sequences given column by column (oldest first); no columns -> code 0."""
    code = np.zeros(shape, dtype=np.int64)
    for column in columns:
        code = code * vocab_size + column
    return code


def interpolate(chain: Sequence[NGramLevel], history: np.ndarray, tokens: np.ndarray, vocab_size: int) -> np.ndarray:
    """P(tokens | history) through ``chain`` (levels lowest order first), from uniform upwards.

    history: codes of the last len(chain[-1]) - 1 tokens before each prediction; history and
    tokens broadcast against each other ((N, 1) with (1, V) gives a table (N, V); (M,) with (M,)
    gives one probability per position).
    """
    prob = np.full(np.broadcast_shapes(history.shape, tokens.shape), 1.0 / vocab_size)
    for level in chain:
        context = history % vocab_size ** (level.order - 1)  # the last order-1 tokens
        alpha = _lookup(level.keys, level.alpha, context * vocab_size + tokens, 0.0)
        gamma = _lookup(level.context_keys, level.gamma, context, 1.0)
        prob = alpha + gamma * prob
    return prob


# ---------------------------------------------------------------- the model


@dataclass(frozen=True, eq=False)
class NGramLM:
    """A fitted count n-gram model. Build it with ``NGramLM.fit``.

    ``levels[m - 1]`` is order m (for ``kn``/``mkn`` all of them form the chain; ``addk`` uses
    only the level matching the history length, interpolated with uniform).
    """

    order: int
    vocab_size: int
    smoothing: str
    k: float
    discount: float
    levels: tuple[NGramLevel, ...]

    @classmethod
    def fit(
        cls,
        train_ids,
        order: int,
        vocab_size: int,
        smoothing: str = "kn",
        k: float = DEFAULT_K,
        discount: float = DEFAULT_DISCOUNT,
    ) -> NGramLM:
        """Count the n-grams of train_ids (T,) int and build the smoothed model.

        ``k`` is used by ``addk`` only; ``discount`` by ``kn`` and as the ``mkn`` fallback.
        Raises ValueError for bad hyperparameters, ids outside [0, vocab_size), or T < order.
        """
        where = "NGramLM.fit"
        order, vocab_size, smoothing, k, discount = check_fit_args(where, order, vocab_size, smoothing, k, discount)
        ids = _check_ids(where, "train_ids", train_ids, vocab_size)
        if len(ids) < order:
            fail(where, f"train_ids has {len(ids)} tokens, fewer than order={order}: no n-gram to count")
        return cls(
            order, vocab_size, smoothing, k, discount, build_levels(ids, order, vocab_size, smoothing, k, discount)
        )

    def chain(self, history_length: int) -> tuple[NGramLevel, ...]:
        """Levels used for a history of ``history_length`` <= order - 1 tokens, lowest first."""
        if self.smoothing == "addk":
            return (self.levels[history_length],)
        return self.levels[: history_length + 1]

    def prob_table(self, contexts) -> np.ndarray:
        """Next-token distributions: contexts (N, C) int -> (N, V) float64, rows sum to 1.

        Only the last n-1 columns are used. A shorter history (C < n-1, e.g. sampling from a
        short prompt) uses the model's own order-(C+1) distribution: for Kneser-Ney the level its
        recursion backs off to, for add-k the add-k estimate of that order.
        """
        contexts = self._check_contexts("NGramLM.prob_table", contexts)
        n_rows, n_columns = contexts.shape
        length = min(n_columns, self.order - 1)
        columns = [contexts[:, n_columns - length + j].astype(np.int64) for j in range(length)]
        history = _encode(columns, self.vocab_size, (n_rows,))
        tokens = np.arange(self.vocab_size, dtype=np.int64)
        return interpolate(self.chain(length), history[:, None], tokens[None, :], self.vocab_size)  # (N, V)

    def seen_context_length(self, contexts) -> np.ndarray:
        """How many of the last tokens of each context the model has counted as a context.

        contexts (N, C) int -> (N,) int64 in [0, min(C, order - 1)]: the largest m such that the
        row's last m tokens are a context of the order-(m + 1) level, 0 if there is none. With
        raw counts (the highest order, and every order of add-k) a context counts when it occurred
        followed by a token; with Kneser-Ney's continuation counts (its lower orders), when it
        occurred with a token before it and one after. A suffix counted implies every shorter one
        was, so the levels above m know nothing of the context and hand over to the ones below.
        """
        contexts = self._check_contexts("NGramLM.seen_context_length", contexts)
        n_rows, n_columns = contexts.shape
        seen = np.zeros(n_rows, dtype=np.int64)
        for m in range(1, min(n_columns, self.order - 1) + 1):
            columns = [contexts[:, n_columns - m + j].astype(np.int64) for j in range(m)]
            code = _encode(columns, self.vocab_size, (n_rows,))
            seen[_contains(self.levels[m].context_keys, code)] = m
        return seen

    def _check_contexts(self, where: str, contexts) -> np.ndarray:
        """``contexts`` as an array, refused unless 2-D integers in [0, vocab_size)."""
        contexts = np.asarray(contexts)
        check_ndim(where, "contexts", contexts.shape, (2,))
        check_integer_dtype(where, "contexts", np.issubdtype(contexts.dtype, np.integer), contexts.dtype)
        if contexts.size:
            check_index_range(where, "contexts", int(contexts.min()), int(contexts.max()), self.vocab_size)
        return contexts

    def token_probs(self, ids, start: int) -> np.ndarray:
        """p(ids[i] | ids[i-n+1:i]) for i = start..T-1: ids (T,) -> (T - start,) float64."""
        where = "NGramLM.score"
        ids = _check_ids(where, "ids", ids, self.vocab_size)
        start = check_start(where, start, self.order, len(ids))
        length = self.order - 1
        end = len(ids)
        # column j holds, for every scored i, the token j places into its history ids[i-L:i]
        columns = [ids[start - length + j : end - length + j] for j in range(length)]
        history = _encode(columns, self.vocab_size, (end - start,))
        return interpolate(self.chain(length), history, ids[start:], self.vocab_size)

    def score(self, ids, start: int) -> float:
        """Held-out protocol (docs/DESIGN.md §3): mean -ln p(ids[i] | ids[i-n+1:i]) over i >= start, nats.

        ids (T,) is train + val concatenated and start = len(train), so the first val tokens
        take their history from the end of train. ``inf`` if some token has probability 0
        (only possible for add-k with k = 0).
        """
        with np.errstate(divide="ignore"):
            return float(-np.log(self.token_probs(ids, start)).mean())

    def sample(self, length: int, rng: np.random.Generator, prompt=()) -> np.ndarray:
        """Draw ``length`` tokens one at a time after ``prompt`` (P,) int; returns (length,) int64.

        The history is the prompt plus what was drawn so far, shortened to n-1 tokens (shorter
        at the start of an empty or short prompt; see ``prob_table``).
        """
        length = check_positive_int("NGramLM.sample", "length", length)
        prompt = np.asarray(prompt)
        if prompt.size == 0:
            prompt = prompt.astype(np.int64)  # () or [] arrive as float64; empty is a valid prompt
        history = list(_check_ids("NGramLM.sample", "prompt", prompt, self.vocab_size))
        drawn = []
        for _ in range(length):
            window = history[len(history) - min(len(history), self.order - 1) :]
            probs = self.prob_table(np.array([window], dtype=np.int64))[0]  # (V,)
            token = int(rng.choice(self.vocab_size, p=probs))
            drawn.append(token)
            history.append(token)
        return np.array(drawn, dtype=np.int64)
