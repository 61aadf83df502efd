"""Exercise 3.10: held-out perplexity of the NeuralLM against its context length, next to the
count n-gram with the same context (modified Kneser-Ney of order context + 1).

``run_sweep(SweepSpec(...))`` runs it (``scripts/sweep_context.py`` fills the spec from its flags).
For every context C (default 1, 2, 4, 8, 16) one NeuralLM is trained with ``torch_lm.training.train``
for the same number of optimizer **steps** (equal budgets that do not depend on the machine's
speed, so the sweep is reproducible; ``--time-budget`` adds an optional wall-clock cap), into
``<runs-root>/context-C``: those runs carry the TensorBoard contract, hparams included, so the
hparams dashboard of ``tensorboard --logdir runs/sweep`` compares them. Every other
hyperparameter is the ``ModelConfig`` / ``TrainConfig`` default unless a flag says otherwise;
the fusion is flat (one hidden layer over the whole context) or, with ``--fusion pairs``,
hierarchical pairs (2, 2, ...) for power-of-two contexts.

Outputs (``write_outputs``): a JSON file (``reports/sweep.json``, read by the comparison report)
and a PNG of perplexity against context with both curves on the same axes; ``format_table`` is
the command's table.
The n-gram curve stops where its order cannot be coded: ``numpy_ref.ngram`` packs an n-gram into
one int64 (V**order must fit), so with V = 65 orders above 10 (contexts above 9) are not available.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from numpy_ref.config import ModelConfig, default_fusion
from torch_lm.reports.models import NGramModel, heldout
from torch_lm.strict_json import dumps
from torch_lm.training.batches import split_ids
from torch_lm.training.checkpoint import LAST
from torch_lm.training.config import TrainConfig, resolve_device
from torch_lm.training.text import load_text, sha256_of
from torch_lm.training.trainer import train
from torch_lm.training.vocab import CharVocab

DEFAULT_CONTEXTS = (1, 2, 4, 8, 16)
DEFAULT_JSON = "reports/sweep.json"
DEFAULT_PNG = "reports/sweep_context.png"
DEFAULT_RUNS_ROOT = "runs/sweep"
FUSIONS = ("default", "flat", "pairs")
DEFAULT_STEPS = 3000  # per context: a fixed budget that ranks the contexts in ~4 minutes on 2 cores
MODEL_FLAGS = ("embed_dim", "hidden_dim")
TRAIN_FLAGS = ("batch_size", "lr", "seed", "device", "eval_interval")


@dataclass(frozen=True)
class SweepSpec:
    """One sweep: the contexts, the equal step budget, the fusion rule, the settings that differ
    from the ``ModelConfig`` / ``TrainConfig`` defaults (None: the default), and where it goes."""

    contexts: tuple[int, ...] = DEFAULT_CONTEXTS
    steps: int = DEFAULT_STEPS
    time_budget: float = 0.0
    fusion: str = "default"
    embed_dim: int | None = None
    hidden_dim: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    eval_interval: int | None = None
    seed: int | None = None
    device: str | None = None
    data: str | None = None
    runs_root: str = DEFAULT_RUNS_ROOT
    overwrite: bool = False
    out: str = DEFAULT_JSON
    png: str = DEFAULT_PNG


def fusion_for(context: int, mode: str) -> tuple[int, ...]:
    """The default architecture's fusion for this context (``default_fusion``: pairs for a power of
    two, flat otherwise), () for the flat model, (2,) * log2(C) for ``pairs`` (C a power of two;
    C = 1 -> ())."""
    if mode == "default":
        return default_fusion(context)
    if mode == "flat" or context == 1:
        return ()
    if context & (context - 1):
        raise ValueError(f"--fusion pairs needs power-of-two contexts, got {context}")
    return (2,) * (context.bit_length() - 1)


def max_ngram_order(vocab_size: int) -> int:
    """The largest order whose codes fit in int64 (vocab_size**order <= 2**63 - 1)."""
    order = 1
    while vocab_size ** (order + 1) <= np.iinfo(np.int64).max:
        order += 1
    return order


def ngram_point(context: int, train_ids: torch.Tensor, val_ids: torch.Tensor, vocab_size: int) -> dict | None:
    """Held-out figures of modified KN of order context + 1, or None if that order cannot be coded."""
    order = context + 1
    if order > max_ngram_order(vocab_size) or len(train_ids) < order:
        return None
    result = heldout(NGramModel.fit(train_ids, order, vocab_size, "mkn"), train_ids, val_ids)
    return {"order": order, "smoothing": "mkn", **result.to_dict()}


def configs_for(context: int, spec: SweepSpec, vocab_size: int) -> tuple[ModelConfig, TrainConfig]:
    """The defaults, the spec's settings, this context and its fusion, steps and run dir."""
    model_flags = {k: getattr(spec, k) for k in MODEL_FLAGS if getattr(spec, k) is not None}
    train_flags = {k: getattr(spec, k) for k in TRAIN_FLAGS if getattr(spec, k) is not None}
    model = replace(
        ModelConfig(), vocab_size=vocab_size, context=context, fusion=fusion_for(context, spec.fusion), **model_flags
    )
    run = replace(
        TrainConfig(),
        max_steps=spec.steps,
        time_budget=spec.time_budget,
        run_dir=str(Path(spec.runs_root) / f"context-{context}"),
        **train_flags,
    )
    return model, run


def check_settings(spec: SweepSpec) -> None:
    """Raise ``ValueError`` for a setting the configs refuse, a device this machine lacks, or run
    dirs that already hold runs without ``overwrite``, before any text is read: every context's
    configs are built (no check depends on the vocabulary)."""
    runs = [configs_for(context, spec, vocab_size=1)[1] for context in spec.contexts]
    resolve_device(TrainConfig().device if spec.device is None else spec.device)
    taken = taken_run_dirs([Path(run.run_dir) for run in runs])
    if taken and not spec.overwrite:
        raise ValueError(run_dir_refusal(taken[0]))


def taken_run_dirs(run_dirs: list[Path]) -> list[Path]:
    """The run dirs that hold a torch-lm run (a ``last.pt``)."""
    return [run_dir for run_dir in run_dirs if (run_dir / LAST).exists()]


def run_dir_refusal(run_dir: Path) -> str:
    """Why a sweep does not train into ``run_dir``, and what to do."""
    return f"{run_dir} already holds a run; pass --overwrite to retrain the sweep or choose another --runs-root"


def clear_run_dirs(run_dirs: list[Path], overwrite: bool) -> None:
    """Before any training: refuse (or, with ``overwrite``, delete) run dirs that hold a run.

    Only a directory holding a torch-lm run (it has ``last.pt``) is ever deleted, and all are
    checked first, so a refused sweep has changed nothing.
    """
    taken = taken_run_dirs(run_dirs)
    if taken and not overwrite:
        raise FileExistsError(run_dir_refusal(taken[0]))
    for run_dir in taken:
        shutil.rmtree(run_dir)


def train_point(model_config: ModelConfig, train_config: TrainConfig, text: str) -> dict:
    """Train one context's NeuralLM into its run dir; its figures."""
    run_dir = Path(train_config.run_dir)
    began = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # train's progress lines; stdout is the table/JSON
        summary = train(model_config, train_config, text)
    return {
        "val_loss": summary["val_loss"],
        "val_ppl": summary["val_ppl"],
        "bpc": summary["bpc"],
        "positions": summary["positions"],
        "train_loss": summary["train_loss"],
        "steps": summary["steps"],
        "status": summary["status"],
        "parameters": summary["parameters"],
        "run_dir": str(run_dir),
        "fusion": list(model_config.fusion),
        "seconds": time.perf_counter() - began,
    }


def run_sweep(spec: SweepSpec) -> dict:
    """Train every context and fit every matching n-gram; the sweep's results as a dict."""
    text = load_text(spec.data)
    vocab = CharVocab.from_text(text)
    train_ids, val_ids = split_ids(vocab.encode(text))
    configs = {c: configs_for(c, spec, len(vocab)) for c in spec.contexts}  # every setting checked first
    clear_run_dirs([Path(run.run_dir) for _, run in configs.values()], spec.overwrite)
    rows = []
    for context, (model_config, train_config) in configs.items():
        print(
            f"context {context}: training {train_config.max_steps} steps into {train_config.run_dir}", file=sys.stderr
        )
        rows.append(
            {
                "context": context,
                "neural": train_point(model_config, train_config, text),
                "ngram": ngram_point(context, train_ids, val_ids, len(vocab)),
            }
        )
    base_model, base_train = configs[spec.contexts[0]]
    return {
        "contexts": list(spec.contexts),
        "steps": spec.steps,
        "time_budget": spec.time_budget,
        "fusion": spec.fusion,
        "data_sha256": sha256_of(text.encode("utf-8")),
        "vocab_size": len(vocab),
        "max_ngram_order": max_ngram_order(len(vocab)),
        "model_config": {k: v for k, v in base_model.to_dict().items() if k not in ("context", "fusion")},
        "train_config": {k: v for k, v in base_train.to_dict().items() if k not in ("run_dir",)},
        "png": str(spec.png),
        "rows": rows,
    }


# ----------------------------------------------------------------------------- outputs
def format_table(results: dict) -> str:
    """One line per context: neural and n-gram held-out loss and perplexity, and which is lower."""
    lines = [f"{'context':>7} {'neural loss':>11} {'ppl':>7}   {'n-gram':>9} {'loss':>7} {'ppl':>7}   lower"]
    for row in results["rows"]:
        neural, ngram = row["neural"], row["ngram"]
        if ngram is None:
            ngram_part, lower = f"{'n/a':>9} {'':>7} {'':>7}", "-"
        else:
            ngram_part = f"{'mkn ' + str(ngram['order']):>9} {ngram['val_loss']:>7.4f} {ngram['val_ppl']:>7.3f}"
            lower = "neural" if neural["val_loss"] < ngram["val_loss"] else "n-gram"
        lines.append(
            f"{row['context']:>7} {neural['val_loss']:>11.4f} {neural['val_ppl']:>7.3f}   {ngram_part}   {lower}"
        )
    return "\n".join(lines)


def plot(results: dict, path: str | Path) -> Path:
    """Held-out perplexity against context (log2 axis): NeuralLM and modified KN, same axes."""
    from torch_lm.reports.figures import COLORS, figure, save

    contexts = [row["context"] for row in results["rows"]]
    neural = [row["neural"]["val_ppl"] for row in results["rows"]]
    ngram_points = [(row["context"], row["ngram"]["val_ppl"]) for row in results["rows"] if row["ngram"]]
    fig, ax = figure(7.5, 4.8)
    ax.plot(contexts, neural, "o-", color=COLORS[0], label=f"NeuralLM ({results['steps']} steps each)")
    if ngram_points:
        xs, ys = zip(*ngram_points)
        ax.plot(xs, ys, "s--", color=COLORS[1], label="modified Kneser-Ney, order = context + 1")
    for x, y in zip(contexts, neural):
        ax.annotate(f"{y:.2f}", (x, y), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8)
    for x, y in ngram_points:
        ax.annotate(f"{y:.2f}", (x, y), textcoords="offset points", xytext=(0, -13), ha="center", fontsize=8)
    ax.set_xscale("log", base=2)
    ax.set_xticks(contexts, [str(c) for c in contexts])
    ax.set_xlabel("context (characters)")
    ax.set_ylabel("held-out perplexity (val)")
    ax.set_title("Perplexity against context length")
    ax.grid(alpha=0.3)
    ax.legend()
    return save(fig, path)


def write_outputs(results: dict, spec: SweepSpec) -> None:
    """The results JSON at ``spec.out`` and the figure at ``spec.png`` (directories created)."""
    Path(spec.out).parent.mkdir(parents=True, exist_ok=True)
    Path(spec.out).write_text(dumps(results, indent=2) + "\n")
    plot(results, spec.png)
