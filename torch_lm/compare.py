"""Exercise 3.11 and the neural-bigram mini-project: every model on one held-out protocol, written
up in ``reports/REPORT.md`` with its figures.

SIDE-ONLY: this module exists in ``torch_lm`` only (docs/DESIGN.md §1); ``scripts/compare.py`` and the
``torch-lm-compare`` console script call ``main``.

``python scripts/compare.py --all`` regenerates everything: the context sweep
(``torch_lm.sweep``), the embedding plots (``torch_lm.embedding_plot``) and then this report. On
the CPU every step is deterministic (seeded training, full-batch count fits, seeded t-SNE and
sampling), and the report holds no timings, so the committed report is exactly what the command
produces; the time taken is printed instead.

Models, each scored with docs/DESIGN.md §3's protocol on val (``torch_lm.evaluation.heldout``):
uniform; add-k unigram, bigram and trigram; the neural bigram and trigram (``TableLM`` trained
on the counts); interpolated Kneser-Ney trigram; modified Kneser-Ney of ``--kn-order`` (7, the
best count model of docs/DESIGN.md §5); the trained NeuralLM (``--checkpoint``); and the mixture
p = lam p_NeuralLM + (1 - lam) p_KN.

No hyperparameter is tuned on val. Every one that is chosen (add-k's k, the neural tables' L2
strength, the mixture's lam) is chosen on the last 5 % of the train text, with the model fitted on
the rest of train; the chosen value is then refitted on the full train text and scored on val.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import torch

from numpy_ref.config import ModelConfig
from numpy_ref.ngram import DEFAULT_DISCOUNT
from torch_lm import bigram, embedding_plot, sweep
from torch_lm.checkpoint import CheckpointError, check_vocab_matches
from torch_lm.cli import EXIT_FAILURE, EXIT_USAGE, OneLineParser, fail, model_from_checkpoint
from torch_lm.data import CharVocab, DataError, HeldoutResult, load_text, sha256_of, split_ids
from torch_lm.evaluation import (DEFAULT_CHECKPOINT, CharModel, MixtureModel, NeuralModel,
                                 NGramModel, UniformModel, generation_quality, heldout_probs,
                                 mixture_weight, require_checkpoint, result_from_probs, sample,
                                 slice_split, tune_on_slice, words)
from torch_lm.ngram import NGramLM
from torch_lm.tensorboard_log import markdown_code_block
from torch_lm.train import NonFiniteLossError, TrainConfig, resolve_device, sample_prompt, train

DEFAULT_TUNING_CHECKPOINT = "runs/default-holdout/best.pt"  # the recipe without the train slice
K_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)   # add-k pseudo-counts tried on the train slice
L2_GRID = (0.0, 0.1, 0.3, 1.0, 3.0)                 # neural-table prior strengths (bigram.l2_penalty)
TABLE_LR = 1.0                                       # Adam on a free logit table: converges in ~300 steps
FACTORED_LR = 0.1                                    # the factored form's (non-convex) loss: gentler
SHOWN_CHARS = 400                                    # characters of each sample printed in the report
DIMINISHING = 0.05                                   # a doubling of context that gains < 5 % perplexity
COUNT_KINDS = ("baseline", "count")
AGREEMENT = 0.002                                    # neural vs count bigram train loss, nats (issue 4)


@dataclass
class Row:
    """One model of the comparison table and its val figures."""

    key: str
    label: str
    kind: str                  # "baseline", "count", "neural" or "mixture"
    setting: str               # how its hyperparameters were set, for the table
    model: CharModel
    probs: torch.Tensor        # p(val[i] | history), (N,)
    result: HeldoutResult = field(init=False)

    def __post_init__(self) -> None:
        self.result = result_from_probs(self.probs)


@dataclass
class Data:
    """The text, its vocabulary and the split (train, val) as int64 id tensors."""

    text: str
    vocab: CharVocab
    train: torch.Tensor
    val: torch.Tensor

    @classmethod
    def load(cls, path: str | None) -> "Data":
        text = load_text(path)
        vocab = CharVocab.from_text(text)
        train, val = split_ids(vocab.encode(text))
        return cls(text, vocab, train, val)

    @property
    def train_text(self) -> str:
        return self.text[:len(self.train)]


# ----------------------------------------------------------------------------- model builders
def fit_ngram(ids: torch.Tensor, order: int, vocab_size: int, smoothing: str, k: float = 1.0) -> NGramModel:
    return NGramModel(NGramLM.fit(ids, order, vocab_size, smoothing, k=k, discount=DEFAULT_DISCOUNT))


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
    k, _ = tune_on_slice(K_GRID, lambda k, ids: fit_ngram(ids, order, V, "addk", k), data.train)
    return scored(key, label, "count", f"k = {k:g} (train slice)", fit_ngram(data.train, order, V, "addk", k), data)


def table_row(key: str, label: str, context: int, data: Data, steps: int) -> Row:
    """The neural table of ``context``, its L2 strength chosen on the train slice from ``L2_GRID``."""
    V = len(data.vocab)
    l2, _ = tune_on_slice(L2_GRID, lambda l2, ids: fit_table(ids, context, V, l2, steps), data.train)
    return scored(key, label, "neural", f"table {V}^{context} x {V}, L2 = {l2:g} (train slice), "
                                        f"{steps} full-batch steps", fit_table(data.train, context, V, l2, steps), data)


def count_rows(data: Data, kn_order: int, steps: int) -> list[Row]:
    """Every row but the checkpoint's and the mixture's, from weakest to strongest family."""
    V = len(data.vocab)
    return [
        scored("uniform", "uniform", "baseline", f"1/{V}", UniformModel(V), data),
        addk_row("unigram", "unigram (add-k)", 1, data),
        addk_row("bigram_addk", "bigram Markov (add-k)", 2, data),
        table_row("neural_bigram", "neural bigram", 1, data, steps),
        addk_row("trigram_addk", "trigram (add-k)", 3, data),
        scored("trigram_kn", "trigram (interpolated Kneser-Ney)", "count", f"D = {DEFAULT_DISCOUNT:g}",
               fit_ngram(data.train, 3, V, "kn"), data),
        table_row("neural_trigram", "neural context 2 (trigram table)", 2, data, steps),
        scored("best_count", f"modified Kneser-Ney {kn_order}-gram", "count",
               "discounts estimated per order", fit_ngram(data.train, kn_order, V, "mkn"), data),
    ]


def neural_row(checkpoint_path: str, data: Data, device: torch.device) -> tuple[Row, dict]:
    """The trained NeuralLM of the checkpoint and a few facts about it (step, config, parameters)."""
    checkpoint = require_checkpoint(checkpoint_path)
    check_vocab_matches(checkpoint_path, checkpoint, data.vocab)     # also checked by main, first
    model, _ = model_from_checkpoint(checkpoint_path, device)
    config = model.config
    info = {"step": checkpoint["step"], "context": config.context, "parameters": model.num_parameters(),
            "model_config": config.to_dict()}
    setting = (f"checkpoint step {info['step']}, context {config.context}, fusion "
               f"{list(config.fusion) or 'flat'}, {info['parameters']:,} parameters")
    row = scored("neural_lm", "NeuralLM (trained)", "neural", setting,
                 NeuralModel(model, config.context, len(data.vocab)), data)
    return row, info


def train_tuning_model(args: argparse.Namespace, data: Data) -> None:
    """``--all``: train the checkpoint's own recipe (its model and train configs) again with the
    train slice held out of its batches (``TrainConfig.holdout_tail``), into
    ``args.tuning_checkpoint``'s directory, so the mixture weight is tuned on text that neither of
    the mixture's parts was fitted on."""
    recipe = require_checkpoint(args.checkpoint)
    _, slice_ids = slice_split(data.train)
    run_dir = Path(args.tuning_checkpoint).parent
    if (run_dir / "last.pt").exists():
        shutil.rmtree(run_dir)                  # --all regenerates everything, this run included
    print(f"tuning model: the recipe of {args.checkpoint} with the last {len(slice_ids):,} train "
          f"characters held out, into {run_dir}", file=sys.stderr)
    model_config = ModelConfig.from_dict(recipe["model_config"])
    train_config = replace(TrainConfig.from_dict(recipe["train_config"]), run_dir=str(run_dir),
                           holdout_tail=len(slice_ids), device=args.device, resume=False)
    train(model_config, train_config, data.text)


def tuning_model(path: str, data: Data, device: torch.device) -> NeuralModel:
    """The NeuralLM trained without the train slice (``train_tuning_model``); refuse one that saw it."""
    checkpoint = require_checkpoint(path)
    check_vocab_matches(path, checkpoint, data.vocab)
    _, slice_ids = slice_split(data.train)
    if checkpoint["train_config"].get("holdout_tail", 0) != len(slice_ids):
        raise CheckpointError(f"{path}: not trained with the {len(slice_ids):,}-character train slice "
                              "held out (run python scripts/compare.py --all)")
    model, _ = model_from_checkpoint(path, device)
    return NeuralModel(model, model.config.context, len(data.vocab))


def mixture_row(neural: Row, tuner: NeuralModel, kn_full: Row, kn_order: int,
                data: Data) -> tuple[Row, dict]:
    """p = lam p_NeuralLM + (1 - lam) p_KN with lam chosen on the train slice by the two models
    fitted without it (``tuner``, and a KN of the rest of train), then scored on val with the
    NeuralLM and the KN of the full train text."""
    fit_ids, slice_ids = slice_split(data.train)
    kn_fit = fit_ngram(fit_ids, kn_order, len(data.vocab), "mkn")
    lam, slice_loss = mixture_weight(heldout_probs(tuner, fit_ids, slice_ids),
                                     heldout_probs(kn_fit, fit_ids, slice_ids))
    probs = lam * neural.probs + (1 - lam) * kn_full.probs
    row = Row("mixture", f"NeuralLM + modified KN {kn_order}-gram mixture", "mixture",
              f"lambda = {lam:.2f} (train slice)", MixtureModel(neural.model, kn_full.model, lam), probs)
    # Shown for information only (lam is never chosen here): the val loss over the whole lambda grid.
    val_lam, val_loss = mixture_weight(neural.probs, kn_full.probs)
    return row, {"lambda": lam, "slice_loss": slice_loss, "slice_positions": len(slice_ids),
                 "val_optimal_lambda_for_information": val_lam, "val_loss_at_that_lambda": val_loss}


# ----------------------------------------------------------------------------- convergence (item 2)
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
        out.append({"context": context, "distinct_contexts": len(contexts), "count_mle": target,
                    "table": table_loss, "factored": factored_loss, "embed_dim": V - 1, "steps": steps})
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
    reference = data.text[len(data.train):len(data.train) + length]
    out["val_text"] = {"label": "val text (reference)", "text": reference,
                       **generation_quality(reference, vocabulary)}
    return out


def loss_curves(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """``loss/train`` and ``loss/val`` of the run's TensorBoard event files ({} if there are none)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not any(run_dir.glob("events.out.tfevents.*")):
        return {}
    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    tags = set(accumulator.Tags().get("scalars", []))
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in ("loss/train", "loss/val")
            if tag in tags}


def plot_loss_curves(curves: dict, reference: Row, path: Path) -> Path:
    from torch_lm.figures import COLORS, figure, save

    fig, ax = figure(8.0, 4.8)
    for color, (tag, points) in zip(COLORS, sorted(curves.items())):
        steps, values = zip(*points)
        ax.plot(steps, values, "o-" if len(points) < 30 else "-", color=color, label=tag, markersize=3)
    ax.axhline(reference.result.loss, color=COLORS[2], linestyle="--",
               label=f"{reference.label}, val ({reference.result.loss:.3f})")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/char)")
    ax.set_title("NeuralLM training curves (TensorBoard events of the checkpoint's run)")
    ax.grid(alpha=0.3)
    ax.legend()
    return save(fig, path)


def plot_quality(quality: dict[str, dict], path: Path) -> Path:
    """Grouped bars per model: share of words found in train, distinct-1, distinct-2."""
    from torch_lm.figures import COLORS, figure, save

    keys = list(quality)
    metrics = (("in_train_words", "words found in train"), ("distinct_1", "distinct-1"),
               ("distinct_2", "distinct-2"))
    fig, ax = figure(11.0, 5.0)
    width = 0.8 / len(metrics)
    for j, (metric, name) in enumerate(metrics):
        values = [0.0 if math.isnan(quality[k][metric]) else quality[k][metric] for k in keys]
        ax.bar([i + (j - 1) * width for i in range(len(keys))], values, width, color=COLORS[j], label=name)
    ax.set_xticks(range(len(keys)), [quality[k]["label"] for k in keys], rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("share")
    ax.set_title("Generation quality (same temperature and seed for every model)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, path)


# ----------------------------------------------------------------------------- the sweep's results
def load_sweep(path: Path, data_sha256: str) -> tuple[dict | None, str]:
    """The sweep's JSON if it exists and was run on this text, else None; and a note on why."""
    if not path.is_file():
        return None, (f"No sweep results at `{path.as_posix()}`: run `python scripts/sweep_context.py` "
                      f"(or `python scripts/compare.py --all`).")
    try:
        results = json.loads(path.read_text())
        results["rows"]
    except (ValueError, KeyError, TypeError) as error:
        raise DataError(f"{path} is not a sweep_context.py results file ({error})") from None
    if results.get("data_sha256") != data_sha256:
        return None, (f"The sweep results at `{path.as_posix()}` were computed on a different text "
                      f"(sha256 {str(results.get('data_sha256'))[:12]}…); rerun the sweep on this one.")
    return results, ""


def context_answers(results: dict) -> list[str]:
    """Exercise 3.10 from the sweep's numbers: the trend, where returns diminish, n-gram vs neural."""
    rows = results["rows"]
    points = [(r["context"], r["neural"]["val_ppl"]) for r in rows]
    trend = " → ".join(f"{p:.3f} (context {c})" for c, p in points)
    lines = [f"- **Trend.** With an equal budget of {results['steps']} steps per context, the NeuralLM's "
             f"held-out perplexity goes {trend}."]
    gains = [(a, b, 1 - pb / pa) for (a, pa), (b, pb) in zip(points, points[1:])]
    if gains:
        a, b, best = max(gains, key=lambda g: g[2])
        lines.append(f"- **Largest gain**: from context {a} to {b}, perplexity {best:.1%} lower."
                     if best > 0 else "- **No longer context lowers the perplexity** in this sweep.")
        small = [(a, b, g) for a, b, g in gains if g < DIMINISHING]
        if small:
            a, b, g = small[0]
            change = f"{g:.1%} lower" if g >= 0 else f"{-g:.1%} higher"
            lines.append(f"- **Diminishing returns** from context {a} to {b}: perplexity {change}, the "
                         f"first step of the sweep that gains less than {DIMINISHING:.0%}."
                         + (" (Possibly under-training rather than context: with an equal step budget "
                            "the longer context has more input weights to fit.)" if g < 0 else ""))
        else:
            lines.append(f"- **No diminishing returns within this sweep**: every step gains at least "
                         f"{DIMINISHING:.0%} perplexity.")
    best_c, best_p = min(points, key=lambda p: p[1])
    lines.append(f"- **Best context** in the sweep: {best_c} (perplexity {best_p:.3f}).")
    for row in rows:
        neural, ngram = row["neural"], row["ngram"]
        if ngram is None:
            lines.append(f"- Context {row['context']}: no n-gram point — order {row['context'] + 1} "
                         f"cannot be coded (V^order must fit in int64; the largest order for "
                         f"V = {results['vocab_size']} is {results['max_ngram_order']}).")
            continue
        diff = ngram["val_loss"] - neural["val_loss"]
        winner = "the NeuralLM is lower" if diff > 0 else "the n-gram is lower"
        lines.append(f"- Context {row['context']}: NeuralLM {neural['val_ppl']:.3f} vs modified KN "
                     f"{ngram['order']}-gram {ngram['val_ppl']:.3f} — {winner} by {abs(diff):.4f} nats/char.")
    return lines


# ----------------------------------------------------------------------------- narrative
def lower_by(a: Row, b: Row) -> str:
    """'<a> is lower than <b> by d nats/char' or the reverse, from the two val losses."""
    d = b.result.loss - a.result.loss
    first, second = (a, b) if d > 0 else (b, a)
    return (f"{first.label} ({first.result.loss:.4f}) is lower than {second.label} "
            f"({second.result.loss:.4f}) by {abs(d):.4f} nats/char")


def verdicts(rows: dict[str, Row]) -> tuple[str, str]:
    """The two plain statements: does the NeuralLM beat every count model; does the mixture beat both parts."""
    neural, mixture, kn = rows["neural_lm"], rows["mixture"], rows["best_count"]
    counts = [r for r in rows.values() if r.kind in COUNT_KINDS]
    best = min(counts, key=lambda r: r.result.loss)
    beats = all(neural.result.loss < r.result.loss for r in counts)
    first = (f"**Does the trained NeuralLM beat every count model? {'Yes' if beats else 'No'}.** Its val loss "
             f"is {neural.result.loss:.4f} nats/char (perplexity {neural.result.perplexity:.3f}); the best "
             f"count model, {best.label}, has {best.result.loss:.4f} (perplexity {best.result.perplexity:.3f}): "
             f"the NeuralLM is {'lower' if beats else 'higher'} by "
             f"{abs(best.result.loss - neural.result.loss):.4f} nats/char.")
    below = [r for r in (neural, kn) if mixture.result.loss < r.result.loss]
    answer = "Yes" if len(below) == 2 else ("No" if not below else f"Only {below[0].label}")
    second = (f"**Does the mixture beat both its parts? {answer}.** Mixture {mixture.result.loss:.4f} "
              f"nats/char (perplexity {mixture.result.perplexity:.3f}) vs the NeuralLM "
              f"{neural.result.loss:.4f} and {kn.label} {kn.result.loss:.4f}.")
    return first, second


def comparison_answers(rows: dict[str, Row], conv: list[dict], mixture: dict) -> list[str]:
    """Exercise 3.11's narrative, every figure taken from this run."""
    ranked = sorted(rows.values(), key=lambda r: r.result.loss)
    lines = ["- **Ranking** (val loss, lowest first): " + "; ".join(
        f"{r.label} {r.result.loss:.4f}" for r in ranked) + "."]
    r = rows
    lines.append(f"- **More context helps the count models**: unigram {r['unigram'].result.loss:.4f} → "
                 f"bigram {r['bigram_addk'].result.loss:.4f} → trigram {r['trigram_addk'].result.loss:.4f} "
                 f"(add-k) → {r['best_count'].label} {r['best_count'].result.loss:.4f}.")
    lines.append(f"- **Smoothing at order 3**: {lower_by(r['trigram_kn'], r['trigram_addk'])}. Kneser-Ney "
                 f"backs off to lower orders (with continuation counts) where add-k only flattens a row.")
    bigram_conv = conv[0]
    lines.append(f"- **Neural bigram vs counts**: on train the neural bigram reaches "
                 f"{bigram_conv['table']:.4f} against the count bigram's {bigram_conv['count_mle']:.4f} "
                 f"(gap {bigram_conv['table'] - bigram_conv['count_mle']:.2e}): trained to convergence it *is* "
                 f"the count model. On val, {lower_by(r['neural_bigram'], r['bigram_addk'])}: the two differ "
                 f"only in how they smooth (an L2 prior on the logits vs add-k).")
    lines.append(f"- **Context 2**: {lower_by(r['neural_trigram'], r['trigram_addk'])}; "
                 f"{lower_by(r['neural_trigram'], r['trigram_kn'])}. A free table per context cannot share "
                 f"anything between contexts, so it gains nothing over smoothed counts; sharing comes from "
                 f"embeddings and hidden layers (the NeuralLM).")
    lines.append(f"- **NeuralLM vs the best count model**: {lower_by(r['neural_lm'], r['best_count'])}.")
    lines.append(f"- **Mixture**: lambda = {mixture['lambda']:.2f} chosen on the {mixture['slice_positions']:,}-"
                 f"character train slice; {lower_by(r['mixture'], r['neural_lm'])}; "
                 f"{lower_by(r['mixture'], r['best_count'])}.")
    return lines


# ----------------------------------------------------------------------------- the report
def results_table(rows: list[Row]) -> list[str]:
    lines = ["| model | context | how it was set | val loss (nats/char) | perplexity | bits/char |",
             "|---|---:|---|---:|---:|---:|"]
    for row in rows:
        res = row.result
        lines.append(f"| {row.label} | {row.model.context} | {row.setting} | {res.loss:.4f} | "
                     f"{res.perplexity:.3f} | {res.bpc:.4f} |")
    return lines


def convergence_section(conv: list[dict]) -> list[str]:
    lines = ["| context | distinct contexts | count model (MLE) train loss | table form | gap | "
             "factored form (E = V − 1) | gap |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for c in conv:
        lines.append(f"| {c['context']} | {c['distinct_contexts']:,} | {c['count_mle']:.4f} | {c['table']:.4f} | "
                     f"{c['table'] - c['count_mle']:.2e} | {c['factored']:.4f} | "
                     f"{c['factored'] - c['count_mle']:.2e} |")
    bigram_gap = conv[0]["table"] - conv[0]["count_mle"]
    verdict = "met" if abs(bigram_gap) <= AGREEMENT else "not met: raise --fit-steps"
    steps = conv[0]["steps"]
    return lines + ["", f"The neural bigram (table form) and the count bigram agree to {abs(bigram_gap):.2e} "
                        f"nats/char on train; the requirement is {AGREEMENT:g}: **{verdict}**.",
                    "", f"All fits: {steps} full-batch Adam steps (cosine decay) on the count tables, no "
                        f"regularisation. Why they meet, and why the factored context-2 form cannot: "
                        f"`docs/neural_bigram.md`."]


def sweep_section(results: dict | None, note: str, png: Path | None) -> list[str]:
    if results is None:
        return [note]
    lines = ["| context | fusion | NeuralLM val loss | perplexity | modified KN | val loss | perplexity |",
             "|---:|---|---:|---:|---|---:|---:|"]
    for row in results["rows"]:
        n, g = row["neural"], row["ngram"]
        ngram_cells = (f"order {g['order']} | {g['val_loss']:.4f} | {g['val_ppl']:.3f}" if g
                       else "n/a | | ")
        lines.append(f"| {row['context']} | {n['fusion'] or 'flat'} | {n['val_loss']:.4f} | {n['val_ppl']:.3f} | "
                     f"{ngram_cells} |")
    if png is not None:
        lines += ["", f"![perplexity against context]({png.name})"]
    return lines + [""] + context_answers(results)


def samples_section(quality: dict[str, dict], temperature: float, seed: int, length: int) -> list[str]:
    lines = [f"Every model sampled {length} characters after a newline at temperature {temperature:g} with "
             f"seed {seed} (one sampling loop, `torch_lm.evaluation.sample`). Words: lower-cased runs of "
             f"letters; *in train* is the share of generated words that occur in the training text; "
             f"distinct-n is the share of distinct word n-grams.", "",
             "| model | words | in train | distinct-1 | distinct-2 |", "|---|---:|---:|---:|---:|"]
    for q in quality.values():
        lines.append(f"| {q['label']} | {q['words']} | {q['in_train_words']:.3f} | {q['distinct_1']:.3f} | "
                     f"{q['distinct_2']:.3f} |")
    lines += ["", "![generation quality](generation_quality.png)", ""]
    for q in quality.values():
        lines += [f"**{q['label']}** (first {min(SHOWN_CHARS, len(q['text']))} characters)", "",
                  markdown_code_block(q["text"][:SHOWN_CHARS]), ""]
    return lines


def build_report(ctx: dict) -> str:
    """REPORT.md from the computed results in ``ctx`` (see ``compare``)."""
    rows, by_key = ctx["rows"], {r.key: r for r in ctx["rows"]}
    first, second = verdicts(by_key)
    out = ["# torch-lm: every model on the held-out protocol", "",
           f"Regenerate with `{ctx['command']}` (deterministic on the CPU). Text: {len(ctx['data'].text):,} "
           f"characters, sha256 `{ctx['sha256'][:16]}…`, {len(ctx['data'].vocab)}-character vocabulary; "
           f"train {len(ctx['data'].train):,} / val {len(ctx['data'].val):,} characters (docs/DESIGN.md §3). "
           f"NeuralLM checkpoint: `{ctx['checkpoint']}`.", "",
           "## Summary", "", first, "", second, "",
           "## Perplexity comparison (Exercise 3.11)", "",
           "Held-out protocol (docs/DESIGN.md §3): mean −ln p(val[i] | preceding characters) over every one of "
           "the val positions, a model with context C taking the C characters before each one (reaching "
           "back into the end of train for the first ones); perplexity = e^loss, bits/char = loss / ln 2. "
           "Hyperparameters marked *train slice* were chosen on the last 5 % of the train text with the "
           "model fitted on the rest, then refitted on all of train: val is never used for a choice.", ""]
    out += results_table(rows)
    mix = ctx["mixture"]
    out += ["", "### The NeuralLM + Kneser-Ney mixture", "",
            f"p = λ p_NeuralLM + (1 − λ) p_KN. λ = {mix['lambda']:.2f} minimises the loss on the "
            f"{mix['slice_positions']:,}-character train slice (slice loss {mix['slice_loss']:.4f}), with "
            f"the KN model fitted on train *without* the slice; on val the KN model is refitted on all of "
            f"train. The NeuralLM that tunes λ is the same recipe trained with the slice held out of its "
            f"batches (`{DEFAULT_TUNING_CHECKPOINT}`, `--holdout-tail`), so neither part has seen the slice; "
            f"on val λ mixes the NeuralLM and KN of the full train text. For information "
            f"only (not used): the λ that would be best on val is {mix['val_optimal_lambda_for_information']:.2f} "
            f"(val loss {mix['val_loss_at_that_lambda']:.4f}).", "",
            "## Neural bigram mini-project: gradient training meets the count model", "",
            "Train loss (nats/char) on the train text of the count model's maximum-likelihood estimate and of "
            "the two neural forms trained on it with the count trick (the whole-text loss is "
            "Σ count(a,b)·(−log p(b|a)) / N, so training on the count table is exact full-batch gradient "
            "descent):", ""]
    out += convergence_section(ctx["convergence"])
    out += ["", "## Context length (Exercise 3.10)", ""]
    out += sweep_section(ctx["sweep"], ctx["sweep_note"], ctx["sweep_png"])
    out += ["", "## Comparison (Exercise 3.11)", ""] + comparison_answers(by_key, ctx["convergence"], mix)
    out += ["", "## Training curves", ""]
    out += (["![loss curves](loss_curves.png)"] if ctx["curves"] else
            [f"No TensorBoard event files next to the checkpoint (`{Path(ctx['checkpoint']).parent.as_posix()}`)."])
    out += ["", "## Samples and generation quality", ""]
    out += samples_section(ctx["quality"], ctx["temperature"], ctx["seed"], ctx["sample_length"])
    out += ["## Character embeddings (Exercise 3.9)", ""]
    out += ctx["embedding_lines"]
    return "\n".join(out).rstrip() + "\n"


def embedding_lines(out_dir: Path, regenerated: bool) -> list[str]:
    names = [name for name in ("embeddings_pca.png", "embeddings_tsne.png") if (out_dir / name).is_file()]
    if not names:
        return ["No embedding plots in this directory: run `python scripts/plot_embeddings.py` "
                "(or `python scripts/compare.py --all`)."]
    origin = ("Drawn from the checkpoint's embedding by this run" if regenerated else
              "Found next to the report (not redrawn by this run; `--all` redraws them)")
    return [f"{origin}: PCA by SVD (`numpy_ref/projection.py`) and scikit-learn's exact t-SNE (PCA start, "
            f"learning rate \"auto\"; the title gives its final KL and the NumPy reference t-SNE's on the same "
            f"points), coloured by vowels, consonants, capitals, digits, punctuation and whitespace.", ""] + [
        f"![{name.removesuffix('.png').replace('_', ' ')}]({name})" for name in names]


# ----------------------------------------------------------------------------- running it
def compare(args: argparse.Namespace, data: Data, device: torch.device, regenerated: bool) -> dict:
    """Fit, score, sample and plot everything; write REPORT.md, compare.json and the PNGs."""
    out_path = Path(args.out)
    out_dir = out_path.parent
    rows = count_rows(data, args.kn_order, args.fit_steps)
    best_count = rows[-1]
    neural, neural_info = neural_row(args.checkpoint, data, device)
    tuner = tuning_model(args.tuning_checkpoint, data, device)
    mixture, mixture_info = mixture_row(neural, tuner, best_count, args.kn_order, data)
    rows += [neural, mixture]
    sha = sha256_of(data.text.encode("utf-8"))
    sweep_json = Path(args.sweep_json) if args.sweep_json else out_dir / "sweep.json"
    sweep_results, sweep_note = load_sweep(sweep_json, sha)
    sweep_png = out_dir / Path(sweep.DEFAULT_PNG).name
    curves = loss_curves(Path(args.checkpoint).parent)
    quality = samples(rows, data, args.sample_length, args.temperature, args.seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    if curves:
        plot_loss_curves(curves, best_count, out_dir / "loss_curves.png")
    plot_quality(quality, out_dir / "generation_quality.png")
    ctx = {"rows": rows, "data": data, "sha256": sha, "checkpoint": args.checkpoint,
           "command": command_line(args),
           "mixture": mixture_info, "convergence": convergence(data, args.fit_steps),
           "sweep": sweep_results, "sweep_note": sweep_note,
           "sweep_png": sweep_png if sweep_png.is_file() else None, "curves": curves, "quality": quality,
           "temperature": args.temperature, "seed": args.seed, "sample_length": args.sample_length,
           "embedding_lines": embedding_lines(out_dir, regenerated)}
    out_path.write_text(build_report(ctx))
    summary = {"rows": [{"key": r.key, "label": r.label, "kind": r.kind, "context": r.model.context,
                         "setting": r.setting, **r.result.to_dict()} for r in rows],
               "neural_lm": neural_info, "mixture": mixture_info, "convergence": ctx["convergence"],
               "quality": {k: {m: v for m, v in q.items() if m != "text"} for k, q in quality.items()},
               "sweep_included": sweep_results is not None, "data_sha256": sha}
    (out_dir / "compare.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces this report: the script and every flag that differs from its default."""
    defaults = vars(build_parser().parse_args([]))
    flags = []
    for name, value in vars(args).items():
        if value == defaults[name] or name in ("out", "device"):   # where it goes / runs, not what it says
            continue
        flag = "--" + name.replace("_", "-")
        if value is True:
            flags.append(flag)
        else:
            shown = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
            flags.append(f"{flag} {shown}")
    return " ".join(["python scripts/compare.py", *flags])


def run_all_first(args: argparse.Namespace) -> None:
    """``--all``: the context sweep and the embedding plots, into the report's directory."""
    out_dir = Path(args.out).parent
    sweep_argv = ["--steps", str(args.sweep_steps), "--contexts", ",".join(map(str, args.sweep_contexts)),
                  "--overwrite", "--device", args.device,
                  "--out", str(out_dir / "sweep.json"), "--png", str(out_dir / Path(sweep.DEFAULT_PNG).name)]
    if args.data:
        sweep_argv += ["--data", args.data]
    sweep_args = sweep.build_parser().parse_args(sweep_argv)
    results = sweep.run_sweep(sweep_args)
    sweep.write_outputs(results, sweep_args)
    print(sweep.format_table(results), file=sys.stderr)
    embedding_plot.plot_embeddings(args.checkpoint, out_dir)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def kn_order(text: str) -> int:
    value = sweep.positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"the Kneser-Ney order must be at least 2, got {text!r}")
    return value


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="compare.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--all", action="store_true",
                        help="first run the context sweep and the embedding plots, then the report")
    parser.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, metavar="PATH",
                        help="the trained NeuralLM (default: %(default)s)")
    parser.add_argument("--tuning-checkpoint", default=DEFAULT_TUNING_CHECKPOINT, metavar="PATH",
                        help="the same recipe trained without the train slice, which tunes the mixture "
                             "weight (--all trains it; default: %(default)s)")
    parser.add_argument("--data", metavar="PATH", help="text file (default: Tiny Shakespeare in data/)")
    parser.add_argument("--out", default="reports/REPORT.md", help="the report; figures go next to it "
                                                                   "(default: %(default)s)")
    parser.add_argument("--sweep-json", metavar="PATH", help="sweep results to include (default: "
                                                             "sweep.json next to the report)")
    parser.add_argument("--sweep-steps", type=sweep.positive_int, default=sweep.DEFAULT_STEPS,
                        help="with --all: optimizer steps per context of the sweep (default: %(default)s)")
    parser.add_argument("--sweep-contexts", type=sweep.contexts_list, default=sweep.DEFAULT_CONTEXTS,
                        metavar="C,C,...", help="with --all: the sweep's contexts (default: 1,2,4,8,16)")
    parser.add_argument("--kn-order", type=kn_order, default=7,
                        help="order of the modified Kneser-Ney model, the best count model and the "
                             "mixture's partner (default: %(default)s)")
    parser.add_argument("--fit-steps", type=sweep.positive_int, default=300,
                        help="full-batch steps of every neural bigram/trigram fit (default: %(default)s)")
    parser.add_argument("--sample-length", type=sweep.positive_int, default=2000,
                        help="characters sampled from every model (default: %(default)s)")
    parser.add_argument("--temperature", type=positive_float, default=1.0,
                        help="sampling temperature, the same for every model (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=TrainConfig().seed,
                        help="sampling seed, the same for every model (default: %(default)s)")
    parser.add_argument("--device", default="cpu",
                        help="device of the NeuralLM and the sweep: cpu (deterministic), cuda, auto "
                             "(default: %(default)s)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    began = time.perf_counter()
    try:
        device = resolve_device(args.device)
    except ValueError as error:
        return fail(parser, str(error), EXIT_USAGE)
    try:
        checkpoint = require_checkpoint(args.checkpoint)      # before any long step
        data = Data.load(args.data)
        check_vocab_matches(args.checkpoint, checkpoint, data.vocab)
        if args.all:
            run_all_first(args)
            train_tuning_model(args, data)
        summary = compare(args, data, device, regenerated=args.all)
    except (DataError, CheckpointError, FileExistsError, NonFiniteLossError, OSError) as error:
        return fail(parser, str(error), EXIT_FAILURE)
    except ValueError as error:
        return fail(parser, str(error), EXIT_USAGE)
    for row in summary["rows"]:
        print(f"{row['label']:<58} {row['val_loss']:.4f} nats/char  ppl {row['val_ppl']:.3f}")
    print(f"compare: wrote {args.out} (and its figures, compare.json) in {time.perf_counter() - began:.0f} s",
          file=sys.stderr)
    return 0
