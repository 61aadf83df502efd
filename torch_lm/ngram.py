"""Count n-gram (Markov) language models in torch: add-k, interpolated Kneser-Ney, modified KN.

The twin of ``numpy_ref/ngram.py`` (read its docstring for the math): the same interpolation
chain P_m(w | h) = alpha_m(hw) + gamma_m(h) P_lower(w | h') down to uniform 1/V, the same base-V
int64 n-gram codes, counted with ``torch.unique`` and looked up with ``torch.searchsorted``, on
CPU or CUDA. The pure-Python pieces (argument checks, Chen & Goodman discount estimation) are
imported from the reference so both engines raise the same errors and pick the same discounts.
Probabilities are float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from numpy_ref.ngram import DEFAULT_DISCOUNT, DEFAULT_K, check_fit_args, check_start, level_discounts
from numpy_ref.validation import check_index_range, check_integer_dtype, check_ndim, check_positive_int, fail

_INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def _check_ids(where: str, name: str, ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """``ids`` as a 1-D int64 tensor with every value in [0, vocab_size)."""
    check_ndim(where, name, tuple(ids.shape), (1,))
    check_integer_dtype(where, name, ids.dtype in _INTEGER_DTYPES, ids.dtype)
    if ids.numel():
        check_index_range(where, name, int(ids.min()), int(ids.max()), vocab_size)
    return ids.long()


def ngram_codes(ids: torch.Tensor, order: int, vocab_size: int) -> list[torch.Tensor]:
    """Codes of every m-gram for m = 1..order: ids (T,) -> entry m-1 is (T - m + 1,) int64."""
    codes = [ids]
    for m in range(2, order + 1):
        # extend each (m-1)-gram by the token after it: shift left one base-V digit, add it
        codes.append(codes[-1][:-1] * vocab_size + ids[m - 1 :])  # (T - m + 1,)
    return codes


def continuation_counts(longer_keys: torch.Tensor, order: int, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """N1+(. g) for the order-``order`` grams g, from the distinct (order+1)-gram codes (K,).

    Returns (sorted distinct g codes (G,), their counts (G,) int64).
    """
    return torch.unique(longer_keys % vocab_size**order, sorted=True, return_counts=True)


def count_of_counts(counts: torch.Tensor) -> tuple[int, int, int, int]:
    """(n1, n2, n3, n4): how many types have count exactly 1, 2, 3, 4. counts (K,) int64."""
    tally = torch.bincount(counts.clamp(max=5), minlength=6)
    return tuple(int(n) for n in tally[1:5])


def _contexts(keys: torch.Tensor, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted m-gram codes (K,) -> (distinct context codes (H,), inverse (K,) context index)."""
    context_keys, inverse = torch.unique_consecutive(keys // vocab_size, return_inverse=True)
    return context_keys, inverse


def _tally(inverse: torch.Tensor, n_contexts: int, values: torch.Tensor) -> torch.Tensor:
    """Per-context sums of values (K,) grouped by inverse (K,) -> (H,), in values' dtype."""
    return torch.zeros(n_contexts, dtype=values.dtype, device=values.device).index_add_(0, inverse, values)


@dataclass(frozen=True, eq=False)
class NGramLevel:
    """One order m: P_m(w | h) = alpha[h w] + gamma[h] * P_lower(w | h').

    keys (K,) int64 sorted m-gram codes, alpha (K,) float64; context_keys (H,) int64 sorted,
    gamma (H,) float64; ``discounts`` = (D1, D2, D3+) used (zeros for add-k).
    """

    order: int
    keys: torch.Tensor
    alpha: torch.Tensor
    context_keys: torch.Tensor
    gamma: torch.Tensor
    discounts: tuple[float, float, float]


def addk_level(order: int, keys: torch.Tensor, counts: torch.Tensor, k: float, vocab_size: int) -> NGramLevel:
    """Add-k as interpolation with uniform: (c + k)/(d + kV) = c/(d + kV) + kV/(d + kV) * 1/V."""
    context_keys, inverse = _contexts(keys, vocab_size)
    totals = _tally(inverse, len(context_keys), counts).double()  # (H,) d = sum_w c(hw)
    smoothed = totals + k * vocab_size
    return NGramLevel(
        order, keys, counts.double() / smoothed[inverse], context_keys, k * vocab_size / smoothed, (0.0, 0.0, 0.0)
    )


def kneser_ney_level(
    order: int, keys: torch.Tensor, counts: torch.Tensor, discounts: tuple[float, float, float], vocab_size: int
) -> NGramLevel:
    """Absolute discounting of one order: alpha = (c - D(c))/d, gamma = sum_types D(c) / d."""
    d1, d2, d3 = discounts
    context_keys, inverse = _contexts(keys, vocab_size)
    n_contexts = len(context_keys)
    totals = _tally(inverse, n_contexts, counts).double()  # (H,)
    # types per context with count 1, 2, >= 3: integer tallies (exact on every device), then
    # float64, since a Python float times an int64 tensor would give the float32 default dtype
    n1 = _tally(inverse, n_contexts, (counts == 1).long()).double()
    n2 = _tally(inverse, n_contexts, (counts == 2).long()).double()
    n3 = _tally(inverse, n_contexts, (counts >= 3).long()).double()
    # D(c) by table lookup, counts >= 1 (a Python scalar in torch.where would come out float32)
    table = torch.tensor([0.0, d1, d2, d3], dtype=torch.float64, device=counts.device)
    discount = table[counts.clamp(max=3)]  # (K,)
    alpha = (counts.double() - discount) / totals[inverse]
    gamma = (d1 * n1 + d2 * n2 + d3 * n3) / totals
    return NGramLevel(order, keys, alpha, context_keys, gamma, discounts)


def build_levels(
    ids: torch.Tensor, order: int, vocab_size: int, smoothing: str, k: float, discount: float
) -> tuple[NGramLevel, ...]:
    """The levels 1..order of a model fitted on ids (T,) int64 (entry m-1 is order m)."""
    distinct = [torch.unique(codes, sorted=True, return_counts=True) for codes in ngram_codes(ids, order, vocab_size)]
    if smoothing == "addk":
        return tuple(addk_level(m, keys, counts, k, vocab_size) for m, (keys, counts) in enumerate(distinct, start=1))
    levels = []
    for m in range(1, order + 1):
        # the highest order keeps raw counts; lower orders count distinct left neighbours
        keys, counts = distinct[m - 1] if m == order else continuation_counts(distinct[m][0], m, vocab_size)
        discounts = level_discounts(smoothing, discount, count_of_counts(counts))
        levels.append(kneser_ney_level(m, keys, counts, discounts, vocab_size))
    return tuple(levels)


def _lookup(keys: torch.Tensor, values: torch.Tensor, queries: torch.Tensor, default: float) -> torch.Tensor:
    """values[j] where keys[j] == query, else ``default``. keys (K,) sorted; queries any shape."""
    index = torch.searchsorted(keys, queries).clamp(max=len(keys) - 1)
    return torch.where(keys[index] == queries, values[index], default)


def _contains(keys: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """Whether each query is one of ``keys``: keys (K,) sorted; queries any shape -> bool, same shape."""
    if len(keys) == 0:
        return torch.zeros(queries.shape, dtype=torch.bool, device=queries.device)
    index = torch.searchsorted(keys, queries).clamp(max=len(keys) - 1)
    return keys[index] == queries


def _encode(
    columns: Sequence[torch.Tensor], vocab_size: int, shape: tuple[int, ...], device: torch.device
) -> torch.Tensor:
    """Code of token sequences given column by column (oldest first); no columns -> code 0."""
    code = torch.zeros(shape, dtype=torch.int64, device=device)
    for column in columns:
        code = code * vocab_size + column
    return code


def interpolate(
    chain: Sequence[NGramLevel], history: torch.Tensor, tokens: torch.Tensor, vocab_size: int
) -> torch.Tensor:
    """P(tokens | history) through ``chain`` (lowest order first), from uniform upwards.

    history and tokens broadcast ((N, 1) with (1, V) -> (N, V); (M,) with (M,) -> (M,)).
    """
    shape = torch.broadcast_shapes(history.shape, tokens.shape)
    prob = torch.full(shape, 1.0 / vocab_size, dtype=torch.float64, device=history.device)
    for level in chain:
        context = history % vocab_size ** (level.order - 1)  # the last order-1 tokens
        alpha = _lookup(level.keys, level.alpha, context * vocab_size + tokens, 0.0)
        gamma = _lookup(level.context_keys, level.gamma, context, 1.0)
        prob = alpha + gamma * prob
    return prob


@dataclass(frozen=True, eq=False)
class NGramLM:
    """A fitted count n-gram model on ``device``. Build it with ``NGramLM.fit``.

    ``levels[m - 1]`` is order m (``kn``/``mkn`` chain all of them; ``addk`` uses the level
    matching the history length, interpolated with uniform).
    """

    order: int
    vocab_size: int
    smoothing: str
    k: float
    discount: float
    levels: tuple[NGramLevel, ...]
    device: torch.device

    @classmethod
    def fit(
        cls,
        train_ids: torch.Tensor,
        order: int,
        vocab_size: int,
        smoothing: str = "kn",
        k: float = DEFAULT_K,
        discount: float = DEFAULT_DISCOUNT,
    ) -> NGramLM:
        """Count the n-grams of train_ids (T,) int (on its device) and build the smoothed model.

        ``k`` is used by ``addk`` only; ``discount`` by ``kn`` and as the ``mkn`` fallback.
        Raises ValueError for bad hyperparameters, ids outside [0, vocab_size), or T < order.
        """
        where = "NGramLM.fit"
        order, vocab_size, smoothing, k, discount = check_fit_args(where, order, vocab_size, smoothing, k, discount)
        ids = _check_ids(where, "train_ids", train_ids, vocab_size)
        if len(ids) < order:
            fail(where, f"train_ids has {len(ids)} tokens, fewer than order={order}: no n-gram to count")
        return cls(
            order,
            vocab_size,
            smoothing,
            k,
            discount,
            build_levels(ids, order, vocab_size, smoothing, k, discount),
            ids.device,
        )

    def chain(self, history_length: int) -> tuple[NGramLevel, ...]:
        """Levels used for a history of ``history_length`` <= order - 1 tokens, lowest first."""
        if self.smoothing == "addk":
            return (self.levels[history_length],)
        return self.levels[: history_length + 1]

    def prob_table(self, contexts: torch.Tensor) -> torch.Tensor:
        """Next-token distributions: contexts (N, C) int -> (N, V) float64, rows sum to 1.

        Only the last n-1 columns are used; a shorter history uses the order-(C+1) distribution
        (as in ``numpy_ref.ngram.NGramLM.prob_table``).
        """
        contexts = self._check_contexts("NGramLM.prob_table", contexts)
        n_rows, n_columns = contexts.shape
        length = min(n_columns, self.order - 1)
        columns = [contexts[:, n_columns - length + j] for j in range(length)]
        history = _encode(columns, self.vocab_size, (n_rows,), self.device)
        tokens = torch.arange(self.vocab_size, device=self.device)
        return interpolate(self.chain(length), history[:, None], tokens[None, :], self.vocab_size)  # (N, V)

    def seen_context_length(self, contexts: torch.Tensor) -> torch.Tensor:
        """How many of the last tokens of each context the model has counted as a context.

        contexts (N, C) int -> (N,) int64 on the model's device, in [0, min(C, order - 1)]: the
        largest m such that the row's last m tokens are a context of level m + 1 (as in
        ``numpy_ref.ngram.NGramLM.seen_context_length``, which says which counts that means).
        """
        contexts = self._check_contexts("NGramLM.seen_context_length", contexts)
        n_rows, n_columns = contexts.shape
        seen = torch.zeros(n_rows, dtype=torch.int64, device=self.device)
        for m in range(1, min(n_columns, self.order - 1) + 1):
            columns = [contexts[:, n_columns - m + j] for j in range(m)]
            code = _encode(columns, self.vocab_size, (n_rows,), self.device)
            seen = torch.where(_contains(self.levels[m].context_keys, code), m, seen)
        return seen

    def _check_contexts(self, where: str, contexts: torch.Tensor) -> torch.Tensor:
        """``contexts`` as int64 on the model's device, refused unless 2-D integers in [0, vocab_size)."""
        check_ndim(where, "contexts", tuple(contexts.shape), (2,))
        check_integer_dtype(where, "contexts", contexts.dtype in _INTEGER_DTYPES, contexts.dtype)
        if contexts.numel():
            check_index_range(where, "contexts", int(contexts.min()), int(contexts.max()), self.vocab_size)
        return contexts.to(self.device, torch.int64)

    def token_probs(self, ids: torch.Tensor, start: int) -> torch.Tensor:
        """p(ids[i] | ids[i-n+1:i]) for i = start..T-1: ids (T,) -> (T - start,) float64."""
        where = "NGramLM.score"
        ids = _check_ids(where, "ids", ids, self.vocab_size).to(self.device)
        start = check_start(where, start, self.order, len(ids))
        length = self.order - 1
        end = len(ids)
        # column j holds, for every scored i, the token j places into its history ids[i-L:i]
        columns = [ids[start - length + j : end - length + j] for j in range(length)]
        history = _encode(columns, self.vocab_size, (end - start,), self.device)
        return interpolate(self.chain(length), history, ids[start:], self.vocab_size)

    def score(self, ids: torch.Tensor, start: int) -> float:
        """Held-out protocol (docs/DESIGN.md §3): mean -ln p(ids[i] | ids[i-n+1:i]) over i >= start, nats.

        ids (T,) = train + val, start = len(train). ``inf`` if a token has probability 0.
        """
        return float(-torch.log(self.token_probs(ids, start)).mean())

    def sample(
        self, length: int, generator: torch.Generator | None = None, prompt: torch.Tensor | Sequence[int] = ()
    ) -> torch.Tensor:
        """Draw ``length`` tokens one at a time after ``prompt`` (P,) int; returns (length,) int64.

        The history is the prompt plus what was drawn so far, shortened to n-1 tokens.
        ``generator`` must live on the model's device (``torch.multinomial`` requires it).
        """
        length = check_positive_int("NGramLM.sample", "length", length)
        prompt = torch.as_tensor(prompt)
        if prompt.numel() == 0:
            prompt = prompt.long()  # () or [] arrive as float32; empty is a valid prompt
        history = _check_ids("NGramLM.sample", "prompt", prompt, self.vocab_size).tolist()
        drawn = []
        for _ in range(length):
            window = history[len(history) - min(len(history), self.order - 1) :]
            probs = self.prob_table(torch.tensor([window], dtype=torch.int64))[0]  # (V,)
            token = int(torch.multinomial(probs, 1, generator=generator))
            drawn.append(token)
            history.append(token)
        return torch.tensor(drawn, dtype=torch.int64)
