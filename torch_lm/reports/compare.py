"""Exercise 3.11 and the neural-bigram mini-project: every model on one held-out protocol, written
up in ``reports/REPORT.md`` with its figures, by ``run_compare(CompareSpec(...))``.

With ``regenerate_all`` it first runs the context sweep (``torch_lm.reports.sweep``), the embedding
plots (``torch_lm.reports.embeddings``) and the tuning model (the checkpoint's recipe trained
without the train slice), then the report. On the CPU every step is deterministic (seeded
training, full-batch count fits, deterministic t-SNE, seeded sampling), and the report holds no
timings, so the committed report is exactly what the command produces.

Models, each scored on val by the held-out protocol (``torch_lm.reports.models.heldout``): uniform;
add-k unigram, bigram and trigram; the neural bigram and trigram (``TableLM`` trained on the
counts); interpolated Kneser-Ney trigram; modified Kneser-Ney of ``kn_order`` (the order that
scores best on the train slice unless one is given: 7 on Tiny Shakespeare); the trained NeuralLM (``checkpoint``); the mixture
p = lam p_NeuralLM + (1 - lam) p_KN, and the one whose lam depends on the context. Then, as their
own rows, dynamic evaluation: the NeuralLM adapting to val as it is scored, the KN whose counts
grow with it, and their mixture. How the rows are built and tuned: ``compare_rows`` and
``mixture_rows``; the report's text: ``report_text``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from torch_lm.reports import embeddings, sweep
from torch_lm.reports.compare_rows import (
    DEFAULT_TUNING_CHECKPOINT,
    Data,
    convergence,
    count_rows,
    kn_order_on_slice,
    load_sweep,
    loss_curves,
    mixture_row,
    neural_row,
    samples,
    train_tuning_model,
    tuning_model,
)
from torch_lm.reports.figures import plot_loss_curves, plot_quality
from torch_lm.reports.mixture_rows import context_mixture_row, dynamic_rows
from torch_lm.reports.report_text import build_report, embedding_lines
from torch_lm.strict_json import dumps
from torch_lm.training.checkpoint import DEFAULT_CHECKPOINT, check_vocab_matches, require_checkpoint
from torch_lm.training.config import TrainConfig, resolve_device
from torch_lm.training.text import sha256_of


@dataclass(frozen=True)
class CompareSpec:
    """One comparison report: its inputs, where it goes, and the settings of its fits and samples.

    ``sweep_json`` None: ``sweep.json`` next to the report. ``sweep_steps`` and ``sweep_contexts``
    apply with ``regenerate_all`` only. ``device`` runs the NeuralLM and the sweep (cpu is
    deterministic).
    """

    regenerate_all: bool = False
    checkpoint: str = DEFAULT_CHECKPOINT
    tuning_checkpoint: str = DEFAULT_TUNING_CHECKPOINT
    data: str | None = None
    out: str = "reports/REPORT.md"
    sweep_json: str | None = None
    sweep_steps: int = sweep.DEFAULT_STEPS
    sweep_contexts: tuple[int, ...] = sweep.DEFAULT_CONTEXTS
    kn_order: int | None = None  # None: the order that scores best on the train slice
    fit_steps: int = 300
    sample_length: int = 2000
    temperature: float = 1.0
    seed: int = TrainConfig().seed
    device: str = "cpu"

    def command_line(self) -> str:
        """The command that reproduces this report: the script and every setting that differs
        from its default (but where it goes and runs, which do not change what it says)."""
        flags = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value == f.default or f.name in ("out", "device"):
                continue
            flag = "--all" if f.name == "regenerate_all" else "--" + f.name.replace("_", "-")
            if value is True:
                flags.append(flag)
            else:
                shown = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
                flags.append(f"{flag} {shown}")
        return " ".join(["python scripts/compare.py", *flags])


def compare(spec: CompareSpec, data: Data, device: torch.device) -> dict:
    """Fit, score, sample and plot everything; write REPORT.md, compare.json and the PNGs."""
    out_path = Path(spec.out)
    out_dir = out_path.parent
    kn_order, kn_info = kn_order_of(spec, data)
    rows = count_rows(data, kn_order, spec.fit_steps, kn_info["setting"])
    best_count = rows[-1]
    neural, neural_info = neural_row(spec.checkpoint, data, device)
    tuner = tuning_model(spec.tuning_checkpoint, data, device)
    mixture, mixture_info = mixture_row(neural, tuner, best_count, kn_order, data)
    context_mixture, context_info = context_mixture_row(neural, tuner, best_count, kn_order, data)
    rows += [neural, mixture, context_mixture]
    dynamic, dynamic_info = dynamic_rows(neural, tuner, best_count, kn_order, data)
    sha = sha256_of(data.text.encode("utf-8"))
    sweep_json = Path(spec.sweep_json) if spec.sweep_json else out_dir / "sweep.json"
    sweep_results, sweep_note = load_sweep(sweep_json, sha)
    sweep_png = out_dir / Path(sweep.DEFAULT_PNG).name
    curves = loss_curves(Path(spec.checkpoint).parent)
    quality = samples(rows, data, spec.sample_length, spec.temperature, spec.seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    if curves:
        plot_loss_curves(curves, best_count.label, best_count.result.loss, out_dir / "loss_curves.png")
    plot_quality(quality, out_dir / "generation_quality.png")
    ctx = {
        "rows": rows,
        "data": data,
        "sha256": sha,
        "checkpoint": spec.checkpoint,
        "command": spec.command_line(),
        "mixture": mixture_info,
        "context_mixture": context_info,
        "dynamic_rows": dynamic,
        "dynamic": dynamic_info,
        "convergence": convergence(data, spec.fit_steps),
        "sweep": sweep_results,
        "sweep_note": sweep_note,
        "sweep_png": sweep_png if sweep_png.is_file() else None,
        "curves": curves,
        "quality": quality,
        "temperature": spec.temperature,
        "seed": spec.seed,
        "sample_length": spec.sample_length,
        "embedding_lines": embedding_lines(out_dir, spec.regenerate_all),
    }
    out_path.write_text(build_report(ctx))
    summary = {
        "rows": [row_summary(r, "static") for r in rows],
        "dynamic_rows": [row_summary(r, "dynamic") for r in dynamic],
        "neural_lm": neural_info,
        "mixture": mixture_info,
        "context_mixture": context_info,
        "dynamic": dynamic_info,
        "kn_order": kn_info,
        "convergence": ctx["convergence"],
        "quality": {k: {m: v for m, v in q.items() if m != "text"} for k, q in quality.items()},
        "sweep_included": sweep_results is not None,
        "data_sha256": sha,
    }
    (out_dir / "compare.json").write_text(dumps(summary, indent=2) + "\n")
    return summary


def kn_order_of(spec: CompareSpec, data: Data) -> tuple[int, dict]:
    """The Kneser-Ney order of the report: the spec's, or the best on the train slice (with every
    order's slice loss), and how it was set, for the table."""
    if spec.kn_order is not None:
        return spec.kn_order, {"order": spec.kn_order, "chosen_on": "given", "setting": ""}
    order, losses = kn_order_on_slice(data)
    return order, {
        "order": order,
        "chosen_on": "train slice",
        "slice_losses": losses,
        "setting": ", order on the train slice",
    }


def row_summary(row, mode: str) -> dict:
    """A row of compare.json: what it is, how it was set, its val figures and its ``mode``."""
    return {
        "key": row.key,
        "label": row.label,
        "kind": row.kind,
        "mode": mode,
        "context": row.model.context,
        "setting": row.setting,
        **row.result.to_dict(),
    }


def regenerate_inputs(spec: CompareSpec, data: Data) -> None:
    """The context sweep, the embedding plots and the tuning model, into the report's directory."""
    out_dir = Path(spec.out).parent
    sweep_spec = sweep.SweepSpec(
        contexts=spec.sweep_contexts,
        steps=spec.sweep_steps,
        overwrite=True,
        device=spec.device,
        data=spec.data,
        out=str(out_dir / "sweep.json"),
        png=str(out_dir / Path(sweep.DEFAULT_PNG).name),
    )
    results = sweep.run_sweep(sweep_spec)
    sweep.write_outputs(results, sweep_spec)
    print(sweep.format_table(results), file=sys.stderr)
    embeddings.plot_embeddings(spec.checkpoint, out_dir)
    train_tuning_model(spec.checkpoint, spec.tuning_checkpoint, spec.device, data)


def run_compare(spec: CompareSpec) -> dict:
    """Check the inputs before any long step, regenerate them if asked, then ``compare``.

    Raises ``ValueError`` for a bad device or setting, ``CheckpointError``/``DataError`` for
    unusable inputs; returns compare.json's summary.
    """
    device = resolve_device(spec.device)
    checkpoint = require_checkpoint(spec.checkpoint)
    data = Data.load(spec.data)
    check_vocab_matches(spec.checkpoint, checkpoint, data.vocab)
    if spec.regenerate_all:
        regenerate_inputs(spec, data)
    return compare(spec, data, device)
