"""TensorBoard logging: the whole tag contract of docs/DESIGN.md §4, in one place.

==========================================================  ==================================
tag                                                         written by
==========================================================  ==================================
``loss/train``, ``perplexity/train``                        ``log_train`` (every log step)
``grad_norm/<layer>``, ``grad_norm/total``                  ``log_train``
``activations/<layer>/{mean,std,frac_saturated_or_dead}``   ``log_train``
``lr``, ``throughput/tokens_per_sec``                       ``log_train``
``loss/val``, ``perplexity/val`` (``/tail`` when the run     ``log_eval`` (every evaluation)
holds a tail of train out: its held-out text)
``weights/<param>``, ``gradients/<param>`` (histograms)     ``log_eval``
``samples`` (text, a markdown code block)                   ``log_eval``
projector embedding ``char_embedding`` with readable labels ``log_embedding`` (end of run)
hparams (model + train config -> final val loss/perplexity) ``log_hparams`` (end of run)
==========================================================  ==================================

``<param>`` is the ``state_dict`` key (``hidden.0.linear.weight``), so histograms group by layer.
Only one process writes: a logger built with ``enabled=False`` (data-parallel ranks other than
0) accepts every call and does nothing.

Beside the event file, ``metrics.jsonl`` (``MetricsFile``) holds the headline scalars of every
log step and evaluation in full float64 precision, one JSON object per line — readable without
TensorBoard, and what tests compare step by step (e.g. a resumed run against a straight one).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path

import torch
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summaries

from torch_lm.metrics import perplexity
from torch_lm.strict_json import dumps
from torch_lm.training.heldout import HeldoutResult
from torch_lm.training.text import write_atomically
from torch_lm.training.vocab import CharVocab

EMBEDDING_TAG = "char_embedding"
SAMPLES_TAG = "samples"
# The hparams dashboard reads these scalar tags of the same run as the session's metrics.
HELDOUT_SPLITS = ("val", "tail")  # what a run is evaluated on: val, or the train tail it held out
METRICS_FILE = "metrics.jsonl"
MAX_EVENT_FILE_WAIT_SECONDS = 2.0


def markdown_code_block(text: str) -> str:
    """``text`` as a fenced markdown code block that no backtick run inside it can close.

    CommonMark closes a fence only with a run of backticks at least as long as the opening one,
    so the fence is one longer than the longest run in the text (at least three).
    """
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}\n{text}\n{fence}"


def hparam_value(value: object) -> bool | int | float | str:
    """A value the hparams plugin accepts: numbers, bools and strings as they are, others as str."""
    return value if isinstance(value, (bool, int, float, str)) else str(value)


class MetricsFile:
    """``metrics.jsonl``: one line ``{"step": s, "<tag>": value, ...}`` per log step or evaluation.

    Every line is flushed as it is written, so a killed run loses at most the line in progress.
    A fresh run (``purge_step`` None) starts the file anew. A resumed run passes ``purge_step``:
    records at steps >= ``purge_step`` (logged by the previous run after its checkpoint, about to
    be logged again) and a line torn by a crash are dropped first, so the file reads like that
    of one uninterrupted run.
    """

    def __init__(self, path: str | os.PathLike, purge_step: int | None = None):
        self.path = Path(path)
        if purge_step is not None and self.path.exists():
            self._purge(purge_step)
        self.file = open(self.path, "a" if purge_step is not None else "w", encoding="utf-8")

    def _purge(self, purge_step: int) -> None:
        """Keep the whole records logged before ``purge_step`` (rewritten atomically)."""
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # the line a crash interrupted
            if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] < purge_step:
                kept.append(line + "\n")
        write_atomically(self.path, "".join(kept).encode("utf-8"))

    def write(self, step: int, values: Mapping[str, float]) -> None:
        """Append one record (floats keep every digit: ``json`` writes their shortest repr; a
        non-finite one is null with its reason, ``torch_lm.strict_json``)."""
        self.file.write(dumps({"step": step, **values}) + "\n")
        self.file.flush()

    def close(self) -> None:
        """Close the file (each line is already flushed)."""
        self.file.close()


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The records of a ``metrics.jsonl`` file, in order."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def wait_to_sort_after(run_dir: Path, max_wait: float = MAX_EVENT_FILE_WAIT_SECONDS) -> None:
    """Return once a new event file in ``run_dir`` would sort after the existing ones.

    TensorBoard reads a run's event files in name order, and a name starts with its creation
    time in whole seconds (``events.out.tfevents.<seconds>.<host>.<pid>...``). A run resumed
    within the second its predecessor started (a crash and an automatic restart) could get a
    name that sorts first: its purge of the old run's later events would then be read before
    those events, and the curve would double back. At most ``max_wait`` seconds, so that a file
    stamped by a clock far ahead (another machine's) cannot stall the run.
    """
    stamps = [
        int(match.group(1))
        for path in run_dir.glob("events.out.tfevents.*")
        if (match := re.match(r"events\.out\.tfevents\.(\d+)\.", path.name))
    ]
    if not stamps:
        return
    deadline = min(max(stamps) + 1, time.time() + max_wait)
    while time.time() < deadline:
        time.sleep(0.01)


class TensorBoardLogger:
    """Writes the docs/DESIGN.md §4 tags to ``run_dir`` (a no-op when ``enabled`` is False).

    ``purge_step``: when resuming, events at steps >= ``purge_step`` left by the interrupted
    run are hidden by TensorBoard (and dropped from ``metrics.jsonl``), so the resumed curve
    does not double back.
    """

    def __init__(self, run_dir: str | os.PathLike, enabled: bool = True, purge_step: int | None = None):
        self.enabled = enabled
        if enabled:
            wait_to_sort_after(Path(run_dir))
        self.writer = SummaryWriter(str(run_dir), purge_step=purge_step) if enabled else None
        self.metrics = MetricsFile(Path(run_dir) / METRICS_FILE, purge_step) if enabled else None

    def log_train(
        self,
        step: int,
        loss: float,
        lr: float,
        tokens_per_sec: float,
        grad_norms: Mapping[str, float],
        activation_stats: Mapping[str, Mapping[str, float]],
    ) -> None:
        """A log step: the running train loss over the interval (token-weighted, nats/char) and
        ``perplexity/train = exp(loss)`` of that same number, per-layer gradient norms (measured
        before clipping) with ``"total"``, per-layer activation statistics, lr and throughput."""
        if not self.enabled:
            return
        w = self.writer
        # A diverging run's finite loss can exceed ~709, where math.exp overflows: log inf.
        train_perplexity = float(perplexity(loss))
        w.add_scalar("loss/train", loss, step)
        w.add_scalar("perplexity/train", train_perplexity, step)
        for layer, norm in grad_norms.items():
            w.add_scalar(f"grad_norm/{layer}", float(norm), step)
        for layer, stats in activation_stats.items():
            for name, value in stats.items():
                w.add_scalar(f"activations/{layer}/{name}", float(value), step)
        w.add_scalar("lr", lr, step)
        w.add_scalar("throughput/tokens_per_sec", tokens_per_sec, step)
        self.metrics.write(
            step,
            {
                "loss/train": loss,
                "perplexity/train": train_perplexity,
                "lr": lr,
                "throughput/tokens_per_sec": tokens_per_sec,
            },
        )

    def log_eval(
        self, step: int, result: HeldoutResult, model: torch.nn.Module, sample: str, split: str = "val"
    ) -> None:
        """An evaluation on ``split`` (``HELDOUT_SPLITS``): held-out loss and perplexity, weight and
        gradient histograms of every parameter (the gradients of the latest training step), and a
        generated sample."""
        if not self.enabled:
            return
        w = self.writer
        scalars = {f"loss/{split}": result.loss, f"perplexity/{split}": result.perplexity}
        for tag, value in scalars.items():
            w.add_scalar(tag, value, step)
        self.metrics.write(step, scalars)
        for name, param in model.named_parameters():
            w.add_histogram(f"weights/{name}", param.detach().float().cpu(), step)
            if param.grad is not None:
                w.add_histogram(f"gradients/{name}", param.grad.detach().float().cpu(), step)
        w.add_text(SAMPLES_TAG, markdown_code_block(sample), step)
        w.flush()

    def log_embedding(self, step: int, weight: torch.Tensor, vocab: CharVocab) -> None:
        """The character vectors (V, E) for the projector, labelled ``<space>``, ``<newline>``, ..."""
        if not self.enabled:
            return
        self.writer.add_embedding(
            weight.detach().float().cpu(), metadata=vocab.labels(), tag=EMBEDDING_TAG, global_step=step
        )

    def log_hparams(
        self, model_config: Mapping[str, object], train_config: Mapping[str, object], split: str = "val"
    ) -> None:
        """The configs (``model.<key>``, ``train.<key>``) as hparams whose metrics are this run's
        ``loss/<split>`` and ``perplexity/<split>`` scalars; call it after the final evaluation,
        whose values the dashboard then shows.

        Written into this run's own event file: ``SummaryWriter.add_hparams`` would create a
        separate timestamped sub-run and log the metrics a second time there.
        """
        if not self.enabled:
            return
        values = {f"model.{k}": hparam_value(v) for k, v in model_config.items()}
        values |= {f"train.{k}": hparam_value(v) for k, v in train_config.items()}
        # Only the metric names matter here: the plugin reads their values from the scalars.
        metrics = dict.fromkeys((f"loss/{split}", f"perplexity/{split}"), 0.0)
        for summary in hparams_summaries(values, metrics):
            self.writer.file_writer.add_summary(summary)
        self.writer.flush()

    def flush(self) -> None:
        """Write buffered events to the file, e.g. before a checkpoint: a resumed run continues
        after the checkpoint's step, so events up to it that a crash lost would stay lost."""
        if self.enabled:
            self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file and ``metrics.jsonl``."""
        if self.enabled:
            self.writer.close()
            self.metrics.close()
