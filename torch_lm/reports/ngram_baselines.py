"""Count n-gram baselines under the held-out protocol: ``run_baselines(BaselineSpec(...))``.

Without ``orders`` / ``smoothings`` it reproduces the reference table of docs/DESIGN.md §5 (uniform,
unigram, unsmoothed bigram, add-k 4-gram, Kneser-Ney 3- and 6-gram, modified KN 7-gram); with
either, it runs every order x smoothing pair asked for. The models are ``numpy_ref.ngram`` and
``torch_lm.ngram``; each row is ``torch_lm.training.heldout.ngram_heldout`` (or, for the
in-sample bigram of the reference table, the same fit scored on train).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from numpy_ref.ngram import check_fit_args
from torch_lm.strict_json import dumps
from torch_lm.training.batches import split_ids
from torch_lm.training.heldout import HeldoutResult, ngram_heldout
from torch_lm.training.text import DEFAULT_DATA_PATH
from torch_lm.training.vocab import CharVocab

SMOOTHINGS = ("addk", "kn", "mkn")
ENGINES = ("numpy", "torch")
# docs/DESIGN.md §5: (label, order, smoothing, k, scored on); discount is the spec's for every KN row
REFERENCE_MODELS = (
    ("unigram, unsmoothed", 1, "addk", 0.0, "val"),
    ("bigram, unsmoothed", 2, "addk", 0.0, "train"),
    ("bigram, unsmoothed", 2, "addk", 0.0, "val"),
    ("add-k 4-gram, k=0.1", 4, "addk", 0.1, "val"),
    ("interpolated KN 3-gram", 3, "kn", 0.0, "val"),
    ("interpolated KN 6-gram", 6, "kn", 0.0, "val"),
    ("modified KN 7-gram", 7, "mkn", 0.0, "val"),
)


@dataclass(frozen=True)
class BaselineSpec:
    """Which count models to fit and score, on which text, with which engine.

    ``orders`` and ``smoothings`` None: the reference table; one of them given: every pair, the
    other defaulting to (3, 5, 7) / ("mkn",). ``k`` is add-k's pseudo-count (0 = unsmoothed),
    ``discount`` Kneser-Ney's D (also modified KN's fallback). ``threads`` sets torch's intra-op
    threads for the torch engine.
    """

    data: str = str(DEFAULT_DATA_PATH)
    orders: tuple[int, ...] | None = None
    smoothings: tuple[str, ...] | None = None
    k: float = 0.1
    discount: float = 0.75
    engine: str = "numpy"
    device: str = "cpu"
    threads: int | None = None


def read_ids(path: Path) -> tuple[np.ndarray, int]:
    """The text's characters as the project's ids (``CharVocab``): ((T,) int64, V)."""
    text = path.read_text(encoding="utf-8")
    vocab = CharVocab.from_text(text)
    return vocab.encode(text).numpy(), len(vocab)


def model_specs(spec: BaselineSpec) -> list[tuple[str, int, str, float, str]]:
    """(label, order, smoothing, k, scored on) for every row to run."""
    if spec.orders is None and spec.smoothings is None:
        return list(REFERENCE_MODELS)
    rows = []
    for smoothing in spec.smoothings or ("mkn",):
        label = f"add-k k={spec.k:g}" if smoothing == "addk" else smoothing
        rows += [(f"{label} {order}-gram", order, smoothing, spec.k, "val") for order in spec.orders or (3, 5, 7)]
    return rows


def make_engine(spec: BaselineSpec):
    """(model class, array converter) of the spec's engine; torch is imported only if asked for."""
    if spec.engine == "numpy":
        from numpy_ref.ngram import NGramLM

        return NGramLM, np.asarray
    import torch

    from torch_lm.ngram import NGramLM

    if spec.threads:
        torch.set_num_threads(spec.threads)
    return NGramLM, lambda ids: torch.as_tensor(ids, device=spec.device)


def run_baselines(spec: BaselineSpec) -> list[dict]:
    """Fit and score every requested model; one result dict per row. Raises ``ValueError`` for
    settings the models refuse (``check_settings``) and for a text they cannot use (e.g. shorter
    than the order)."""
    ids, vocab_size = read_ids(Path(spec.data))
    check_settings(spec, vocab_size)
    return score_baselines(spec, ids, vocab_size)


def check_settings(spec: BaselineSpec, vocab_size: int) -> None:
    """Raise ``ValueError`` for a row's settings the models refuse on a vocabulary of
    ``vocab_size`` (an order whose codes overflow int64, a discount outside (0, 1), ...), before
    any model is fitted."""
    for _, order, smoothing, k, _ in model_specs(spec):
        check_fit_args("ngram_baselines", order, vocab_size, smoothing, k, spec.discount)


def score_baselines(spec: BaselineSpec, ids: np.ndarray, vocab_size: int) -> list[dict]:
    """``run_baselines`` on the text's ids (T,) int64 over a vocabulary of ``vocab_size``: the
    project's split (``split_ids``) and figures (``HeldoutResult``)."""
    n_train = len(split_ids(ids)[0])
    model_class, convert = make_engine(spec)
    all_ids = convert(ids)
    rows = [row("uniform", 0, "none", "val", HeldoutResult.from_mean(math.log(vocab_size), len(ids) - n_train), 0.0)]
    for label, order, smoothing, k, scored_on in model_specs(spec):
        if scored_on == "val":
            score = ngram_heldout(
                model_class, all_ids, n_train, order, vocab_size, smoothing, k=k, discount=spec.discount
            )
            result, seconds = score.result, score.fit_s + score.score_s
        else:  # in-sample: the train text after its first order - 1 characters
            began = time.perf_counter()
            model = model_class.fit(all_ids[:n_train], order, vocab_size, smoothing, k=k, discount=spec.discount)
            loss = model.score(all_ids[:n_train], order - 1)
            result, seconds = HeldoutResult.from_mean(loss, n_train - order + 1), time.perf_counter() - began
        rows.append(row(label, order, smoothing, scored_on, result, seconds))
    return rows


def row(label: str, order: int, smoothing: str, scored_on: str, result: HeldoutResult, seconds: float) -> dict:
    """One row of the table and of ``--json``."""
    return {
        "model": label,
        "order": order,
        "smoothing": smoothing,
        "scored_on": scored_on,
        "loss": result.loss,
        "seconds": seconds,
        "perplexity": result.perplexity,
        "bits_per_char": result.bpc,
    }


def format_table(rows: list[dict]) -> str:
    lines = [f"{'model':<26} {'on':<5} {'nats/char':>9} {'ppl':>8} {'bits/char':>9} {'seconds':>8}"]
    lines += [
        f"{r['model']:<26} {r['scored_on']:<5} {r['loss']:>9.4f} {r['perplexity']:>8.2f} "
        f"{r['bits_per_char']:>9.4f} {r['seconds']:>8.2f}"
        for r in rows
    ]
    return "\n".join(lines)


def to_json(rows: list[dict]) -> str:
    """The rows as strict JSON: an infinite loss (a character of probability 0, only without
    smoothing) and its perplexity and bits are null, each with its reason (``torch_lm.strict_json``)."""
    return dumps(rows, reason="a scored character has probability 0 under this model", indent=2)
