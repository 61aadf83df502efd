"""The rows of the comparison: every model of the report fitted on train, its hyperparameters
chosen on the train slice, and scored on val by the one held-out protocol; the neural bigram's
convergence to the counts; the samples; the training curves; the sweep's results.

No hyperparameter is tuned on val. Every one that is chosen (add-k's k, the neural tables' L2
strength, the mixture's lam) is chosen on the last 5 % of the train text, with the model fitted on
the rest of train; the chosen value is then refitted on the full train text and scored on val.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from numpy_ref.config import ModelConfig
from numpy_ref.ngram import DEFAULT_DISCOUNT
from torch_lm import bigram
from torch_lm.reports.models import (
    CharModel,
    MixtureModel,
    NeuralModel,
    NGramModel,
    UniformModel,
    heldout_probs,
    sample,
)
from torch_lm.reports.quality import generation_quality, words
from torch_lm.reports.tuning import mixture_weight, slice_split, tune_on_slice
from torch_lm.training.batches import split_ids
from torch_lm.training.checkpoint import CheckpointError, check_vocab_matches, model_from_checkpoint, require_checkpoint
from torch_lm.training.config import TrainConfig
from torch_lm.training.heldout import HeldoutResult
from torch_lm.training.sampling import sample_prompt
from torch_lm.training.text import DataError, load_text
from torch_lm.training.trainer import train
from torch_lm.training.vocab import CharVocab

DEFAULT_TUNING_CHECKPOINT = "runs/default-holdout/best.pt"  # the recipe without the train slice
K_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)  # add-k pseudo-counts tried on the train slice
L2_GRID = (0.0, 0.1, 0.3, 1.0, 3.0)  # neural-table prior strengths (bigram.l2_penalty)
TABLE_LR = 1.0  # Adam on a free logit table: converges in ~300 steps
FACTORED_LR = 0.1  # the factored form's (non-convex) loss: gentler
SHOWN_CHARS = 400  # characters of each sample printed in the report
DIMINISHING = 0.05  # a doubling of context that gains < 5 % perplexity
COUNT_KINDS = ("baseline", "count")
AGREEMENT = 0.002  # neural vs count bigram train loss, nats


@dataclass
class Row:
    """One model of the comparison table and its val figures."""

    key: str
    label: str
    kind: str  # "baseline", "count", "neural", "mixture" or "dynamic"
    # model: the model scored; for a dynamic row, the static model it starts from
    setting: str  # how its hyperparameters were set, for the table
    model: CharModel
    probs: torch.Tensor  # p(val[i] | history), (N,)
    result: HeldoutResult = field(init=False)

    def __post_init__(self) -> None:
        self.result = HeldoutResult.from_target_probs(self.probs)


@dataclass
class Data:
    """The text, its vocabulary and the split (train, val) as int64 id tensors."""

    text: str
    vocab: CharVocab
    train: torch.Tensor
    val: torch.Tensor

    @classmethod
    def load(cls, path: str | None) -> Data:
        text = load_text(path)
        vocab = CharVocab.from_text(text)
        train, val = split_ids(vocab.encode(text))
        return cls(text, vocab, train, val)

    @property
    def train_text(self) -> str:
        return self.text[: len(self.train)]


# ----------------------------------------------------------------------------- model builders
def fit_table(ids: torch.Tensor, context: int, vocab_size: int, l2: float, steps: int) -> NeuralModel:
    """A ``TableLM`` trained on the counts of ``ids`` (exact full-batch Adam), float64."""
    contexts, counts = bigram.count_table(ids, context, vocab_size)
    model = bigram.TableLM(vocab_size, context).double()
    bigram.fit_counts(model, contexts, counts, steps, lr=TABLE_LR, l2=l2)
    return NeuralModel(model, context, vocab_size)


def scored(key: str, label: str, kind: str, setting: str, model: CharModel, data: Data) -> Row:
    return Row(key, label, kind, setting, model, heldout_probs(model, data.train, data.val))


def addk_row(key: str, label: str, order: int, data: Data) -> Row:
    """Add-k of ``order``, k chosen on the train slice from ``K_GRID``."""
    V = len(data.vocab)
    k, _ = tune_on_slice(K_GRID, lambda k, ids: NGramModel.fit(ids, order, V, "addk", k), data.train)
    return scored(
        key, label, "count", f"k = {k:g} (train slice)", NGramModel.fit(data.train, order, V, "addk", k), data
    )


def table_row(key: str, label: str, context: int, data: Data, steps: int) -> Row:
    """The neural table of ``context``, its L2 strength chosen on the train slice from ``L2_GRID``."""
    V = len(data.vocab)
    l2, _ = tune_on_slice(L2_GRID, lambda l2, ids: fit_table(ids, context, V, l2, steps), data.train)
    return scored(
        key,
        label,
        "neural",
        f"table {V}^{context} x {V}, L2 = {l2:g} (train slice), {steps} full-batch steps",
        fit_table(data.train, context, V, l2, steps),
        data,
    )


KN_ORDERS = tuple(range(3, 11))  # modified Kneser-Ney orders tried on the train slice


def kn_order_on_slice(data: Data) -> tuple[int, dict]:
    """The modified Kneser-Ney order that scores best on the train slice, fitted without it, and
    every order's slice loss."""
    V = len(data.vocab)
    return tune_on_slice(KN_ORDERS, lambda order, ids: NGramModel.fit(ids, order, V, "mkn"), data.train)


def count_rows(data: Data, kn_order: int, steps: int, kn_setting: str = "") -> list[Row]:
    """Every row but the checkpoint's and the mixture's, from weakest to strongest family."""
    V = len(data.vocab)
    return [
        scored("uniform", "uniform", "baseline", f"1/{V}", UniformModel(V), data),
        addk_row("unigram", "unigram (add-k)", 1, data),
        addk_row("bigram_addk", "bigram Markov (add-k)", 2, data),
        table_row("neural_bigram", "neural bigram", 1, data, steps),
        addk_row("trigram_addk", "trigram (add-k)", 3, data),
        scored(
            "trigram_kn",
            "trigram (interpolated Kneser-Ney)",
            "count",
            f"D = {DEFAULT_DISCOUNT:g}",
            NGramModel.fit(data.train, 3, V, "kn"),
            data,
        ),
        table_row("neural_trigram", "neural context 2 (trigram table)", 2, data, steps),
        scored(
            "best_count",
            f"modified Kneser-Ney {kn_order}-gram",
            "count",
            f"discounts estimated per order{kn_setting}",
            NGramModel.fit(data.train, kn_order, V, "mkn"),
            data,
        ),
    ]


def neural_row(checkpoint_path: str, data: Data, device: torch.device) -> tuple[Row, dict]:
    """The trained NeuralLM of the checkpoint and a few facts about it (step, config, parameters)."""
    checkpoint = require_checkpoint(checkpoint_path)
    check_vocab_matches(checkpoint_path, checkpoint, data.vocab)  # also checked by main, first
    model, _ = model_from_checkpoint(checkpoint_path, device)
    config = model.config
    info = {
        "step": checkpoint["step"],
        "context": config.context,
        "parameters": model.num_parameters(),
        "model_config": config.to_dict(),
    }
    setting = (
        f"checkpoint step {info['step']}, context {config.context}, fusion "
        f"{list(config.fusion) or 'flat'}, {info['parameters']:,} parameters"
    )
    row = scored(
        "neural_lm", "NeuralLM (trained)", "neural", setting, NeuralModel(model, config.context, len(data.vocab)), data
    )
    return row, info


def train_tuning_model(checkpoint: str, tuning_checkpoint: str, device: str, data: Data) -> None:
    """Train the recipe of ``checkpoint`` (its model and train configs) again with the train slice
    held out of its batches (``TrainConfig.holdout_tail``), into ``tuning_checkpoint``'s directory,
    so the mixture weight is tuned on text that neither of the mixture's parts was fitted on."""
    recipe = require_checkpoint(checkpoint)
    _, slice_ids = slice_split(data.train)
    run_dir = Path(tuning_checkpoint).parent
    if (run_dir / "last.pt").exists():
        shutil.rmtree(run_dir)  # regenerating everything includes this run
    print(
        f"tuning model: the recipe of {checkpoint} with the last {len(slice_ids):,} train "
        f"characters held out, into {run_dir}",
        file=sys.stderr,
    )
    model_config = ModelConfig.from_dict(recipe["model_config"])
    train_config = replace(
        TrainConfig.from_dict(recipe["train_config"]),
        run_dir=str(run_dir),
        holdout_tail=len(slice_ids),
        device=device,
        resume=False,
    )
    train(model_config, train_config, data.text)


def tuning_model(path: str, data: Data, device: torch.device) -> NeuralModel:
    """The NeuralLM trained without the train slice (``train_tuning_model``); refuse one that saw it."""
    checkpoint = require_checkpoint(path)
    check_vocab_matches(path, checkpoint, data.vocab)
    _, slice_ids = slice_split(data.train)
    if checkpoint["train_config"].get("holdout_tail", 0) != len(slice_ids):
        raise CheckpointError(
            f"{path}: not trained with the {len(slice_ids):,}-character train slice "
            "held out (run python scripts/compare.py --all)"
        )
    model, _ = model_from_checkpoint(path, device)
    return NeuralModel(model, model.config.context, len(data.vocab))


def mixture_row(neural: Row, tuner: NeuralModel, kn_full: Row, kn_order: int, data: Data) -> tuple[Row, dict]:
    """p = lam p_NeuralLM + (1 - lam) p_KN with lam chosen on the train slice by the two models
    fitted without it (``tuner``, and a KN of the rest of train), then scored on val with the
    NeuralLM and the KN of the full train text."""
    fit_ids, slice_ids = slice_split(data.train)
    kn_fit = NGramModel.fit(fit_ids, kn_order, len(data.vocab), "mkn")
    lam, slice_loss = mixture_weight(
        heldout_probs(tuner, fit_ids, slice_ids), heldout_probs(kn_fit, fit_ids, slice_ids)
    )
    probs = lam * neural.probs + (1 - lam) * kn_full.probs
    row = Row(
        "mixture",
        f"NeuralLM + modified KN {kn_order}-gram mixture",
        "mixture",
        f"lambda = {lam:.2f} (train slice)",
        MixtureModel(neural.model, kn_full.model, lam),
        probs,
    )
    # Shown for information only (lam is never chosen here): the val loss over the whole lambda grid.
    val_lam, val_loss = mixture_weight(neural.probs, kn_full.probs)
    return row, {
        "lambda": lam,
        "slice_loss": slice_loss,
        "slice_positions": len(slice_ids),
        "val_optimal_lambda_for_information": val_lam,
        "val_loss_at_that_lambda": val_loss,
    }


# ----------------------------------------------------------------------------- convergence
def convergence(data: Data, steps: int) -> list[dict]:
    """Train loss on the counts: the count model's MLE, the unregularised table form and the
    factored form with E = V - 1, for contexts 1 and 2 (exact full-batch training)."""
    V = len(data.vocab)
    out = []
    for context in (1, 2):
        contexts, counts = bigram.count_table(data.train, context, V)
        target = bigram.count_mle_loss(counts)
        table = bigram.TableLM(V, context).double()
        table_loss = bigram.fit_counts(table, contexts, counts, steps, lr=TABLE_LR)[-1]
        factored = bigram.FactoredLM(V, context, V - 1).double()
        factored.reset_parameters(torch.Generator().manual_seed(0))
        factored_loss = bigram.fit_counts(factored, contexts, counts, steps, lr=FACTORED_LR)[-1]
        out.append(
            {
                "context": context,
                "distinct_contexts": len(contexts),
                "count_mle": target,
                "table": table_loss,
                "factored": factored_loss,
                "embed_dim": V - 1,
                "steps": steps,
            }
        )
    return out


# ----------------------------------------------------------------------------- samples and curves
def samples(rows: list[Row], data: Data, length: int, temperature: float, seed: int) -> dict[str, dict]:
    """For every row, a sample of ``length`` characters after a newline (same temperature and
    seed) and its quality; plus the val text's own figures as a reference."""
    prompt = data.vocab.encode(sample_prompt(data.vocab)).tolist()
    vocabulary = set(words(data.train_text))
    out = {}
    for row in rows:
        text = data.vocab.decode(sample(row.model, prompt, length, temperature, seed))
        out[row.key] = {"label": row.label, "text": text, **generation_quality(text, vocabulary)}
    reference = data.text[len(data.train) : len(data.train) + length]
    out["val_text"] = {"label": "val text (reference)", "text": reference, **generation_quality(reference, vocabulary)}
    return out


def loss_curves(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """``loss/train`` and ``loss/val`` of the run's TensorBoard event files ({} if there are none)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not any(run_dir.glob("events.out.tfevents.*")):
        return {}
    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    tags = set(accumulator.Tags().get("scalars", []))
    return {
        tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in ("loss/train", "loss/val") if tag in tags
    }


def load_sweep(path: Path, data_sha256: str) -> tuple[dict | None, str]:
    """The sweep's JSON if it exists and was run on this text, else None; and a note on why."""
    if not path.is_file():
        return None, (
            f"No sweep results at `{path.as_posix()}`: run `python scripts/sweep_context.py` "
            f"(or `python scripts/compare.py --all`)."
        )
    try:
        results = json.loads(path.read_text())
        results["rows"]
    except (ValueError, KeyError, TypeError) as error:
        raise DataError(f"{path} is not a sweep_context.py results file ({error})") from None
    if results.get("data_sha256") != data_sha256:
        return None, (
            f"The sweep results at `{path.as_posix()}` were computed on a different text "
            f"(sha256 {str(results.get('data_sha256'))[:12]}…); rerun the sweep on this one."
        )
    return results, ""
