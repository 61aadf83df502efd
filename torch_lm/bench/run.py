"""Speed benchmarks against the machine's own limits: ``run(BenchPlan(...), text)``, which
``python scripts/bench.py [--json] [--quick]`` calls and ``write_reports`` writes up.

Machines are shared and noisy (docs/DESIGN.md §5: contention can slow 2-thread ops many times
over), so every verdict is a *ratio of figures measured in the same run*, never an absolute time,
and every figure is the best of several measurements (the least disturbed one) with its median
beside it.
The sections, in the order they run:

* **GEMM peak** — fp32 ``torch.mm`` of square matrices (``gemm_sizes``), best of several, in
  GFLOP/s, at the thread count in force. Its repetitions are interleaved with the training
  windows below, so both see the same contention. Two sizes: 2048 is the classic "large"
  product, 1024 takes about as long as a few training steps (the tables of reports/BENCH.md), so a
  best-of over it is as lucky as the best-of over steps on a busy machine; the peak is the faster
  of the two.
* **Training throughput** of ``ModelConfig()`` / ``TrainConfig()`` as they are at run time: the
  trainer's own loop (``BatchSampler``, then ``TrainingStep``: forward, ``loss.backward``,
  gradient clipping and the AdamW step, and the log work: activation capture, gradient norms,
  the running loss and the TensorBoard scalars), timed step by step over windows of
  ``log_interval`` steps — each window holds exactly one log step. The step figure is the
  fastest ordinary step plus the log work amortised over the interval (``training_throughput``).
  *Achieved GFLOP/s* counts matmul FLOPs only (``matmul_flops``): ``2*M*N*K`` for every Linear
  forward and twice that for its backward (``dX`` and ``dW``, the first layer's ``dX`` included
  because it feeds the embedding gradient) — 3x the forward. Not counted: the embedding
  gather/scatter, activations, softmax, LayerNorm, clipping and AdamW.
* **The other row mode** — the same loop with the same targets per step in the other row
  mode: windows (one target per row) if the default trains on sequence rows, rows of 64 targets
  otherwise; tokens are targets, so targets/s and matmul FLOPs per target compare the two.
* **bfloat16 products** — where the CPU multiplies bfloat16 natively (``native_bf16``): the bf16
  GEMM peak and the same loop with ``precision="bfloat16"``, interleaved the same way; the verdict
  is its targets/s over the full-precision loop's.
* **Step split** — the shares of sampling, forward, backward, optimiser and logging (per-step
  bookkeeping plus the amortised log work) in that step.
* **torch.compile** (``--compile``) — the same loop again with the compiled forward on ordinary
  steps, as ``TrainConfig.compile`` runs it.
* **NumPy reference vs torch** — seconds per training step (forward + backward + AdamW, no
  clipping) of ``numpy_ref`` and ``torch_lm`` (the trainer's ``TrainingStep``) on the same model,
  weights and batch in the default's row mode (sequence rows: ``neural_lm_sequence_forward`` and
  its hand-derived backward against the torch sequence forward), float64 and float32, the two
  engines taking turns in blocks of steps.
* **Sampling** — ``generate`` of ``sample_chars`` characters per row with the window forward of
  the last ``context`` ids at every draw against the incremental predictor, which computes each
  fusion level once per drawn character (NumPy's on the CPU; ``torch_lm.bench.sampling``): characters per second of
  both and their ratio, at each of ``sample_batches`` rows, the paths taking turns.
* **Scaling** — the torch step as the batch, the context and the hidden size double. Doubling
  the context adds a fusion level of 2 when the model fuses (the product must equal the context).
* **n-gram** — ``numpy_ref.ngram`` fit + held-out scoring (docs/DESIGN.md §3 protocol), orders 3, 5, 7,
  interpolated (``kn``: the target's figure) and modified (``mkn``) Kneser-Ney.
* **Parity suite** — wall time of ``python -m pytest -q -p no:cacheprovider`` in a subprocess.

Everything runs on the CPU. ``run`` returns one dict (``summary`` holds the flat headline keys);
``write_reports`` writes ``bench.json`` and ``BENCH.md``.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from numpy_ref.config import ModelConfig
from torch_lm.bench.engines import ngram_timings, numpy_vs_torch, parity_suite, scaling
from torch_lm.bench.plan import PIECES, TARGETS, BenchPlan
from torch_lm.bench.sampling import sampling_speed
from torch_lm.bench.throughput import training_throughput
from torch_lm.bench.timing import GemmPeak, machine_info
from torch_lm.training.batches import split_ids
from torch_lm.training.config import TrainConfig
from torch_lm.training.precision import native_bf16
from torch_lm.training.text import DEFAULT_DATA_PATH
from torch_lm.training.vocab import CharVocab


def find_text(data: str | os.PathLike | None = None) -> Path | None:
    """``data`` if given (it must exist), else ``data/tinyshakespeare.txt``; None if there is none."""
    if data is not None:
        path = Path(data)
        if not path.is_file():
            raise FileNotFoundError(f"--data: no file at {path}")
        return path
    return DEFAULT_DATA_PATH if DEFAULT_DATA_PATH.is_file() else None


def training_ids(text: str | None, config: ModelConfig, seed: int) -> tuple[torch.Tensor, ModelConfig]:
    """The train split's ids and the model config with the text's vocabulary size; without a
    text, 1,003,854 random ids (the Tiny Shakespeare train size: speed does not read the text)."""
    if text is None:
        generator = torch.Generator().manual_seed(seed)
        return torch.randint(config.vocab_size, (1_003_854,), generator=generator), config
    vocab = CharVocab.from_text(text)
    train_ids, _ = split_ids(vocab.encode(text))
    return train_ids, replace(config, vocab_size=len(vocab))


def run(plan: BenchPlan, text: str | None, progress: Callable[[str], None] = lambda _: None) -> dict:
    """Every section in order; returns ``{"summary": flat headline keys, ...sections}``."""
    load_start = os.getloadavg()
    ids, model_config = training_ids(text, plan.model, plan.train.seed)
    plan = replace(plan, model=model_config)
    gemm = GemmPeak(plan.gemm_sizes)
    gemm.run_once()  # warm-up: threads started, pages touched
    gemm.clear()
    progress("training throughput")
    train = training_throughput(plan, ids, gemm)
    progress("training throughput, the other row mode")
    other_mode = training_throughput(replace(plan, train=other_row_mode(plan.train)), ids, gemm)
    peak = gemm.summary()
    bf16 = bf16_throughput(plan, ids, progress)
    compiled = None
    if plan.compile:
        progress("training throughput under torch.compile")
        compiled = training_throughput(replace(plan, train=replace(plan.train, compile=True)), ids, gemm)
        peak = gemm.summary()
    progress("numpy_ref vs torch")
    compare = numpy_vs_torch(plan)
    progress("sampling: window forward vs incremental predictor")
    sampling = sampling_speed(plan)
    progress("scaling")
    scale = scaling(plan, peak["best"])
    ngram = None
    if text is not None:
        progress("n-gram fit + score")
        ngram = ngram_timings(text, plan.ngram_orders, plan.ngram_smoothings)
    suite = None
    if plan.run_suite:
        progress("parity suite")
        suite = parity_suite()
    results = {
        "plan": plan.to_dict(),
        "machine": machine_info(),
        "gemm": peak,
        "train": train,
        "train_other_mode": other_mode,
        "train_compiled": compiled,
        "bf16": bf16,
        "numpy_vs_torch": compare,
        "sampling": sampling,
        "scaling": scale,
        "ngram": ngram,
        "parity_suite": suite,
        "loadavg_start": list(load_start),
        "loadavg_end": list(os.getloadavg()),
    }
    results["summary"] = summarize(results)
    return results


def bf16_throughput(plan: BenchPlan, ids: torch.Tensor, progress: Callable[[str], None]) -> dict | None:
    """The bf16 GEMM peak and the default step with bfloat16 products (``--precision bfloat16``),
    interleaved like the full-precision pair; None where the CPU has no native bfloat16, since
    emulated products would only time the emulation."""
    if not native_bf16(torch.device("cpu")):
        return None
    progress("training throughput, bfloat16 products")
    gemm = GemmPeak(plan.gemm_sizes, torch.bfloat16)
    gemm.run_once()
    gemm.clear()
    train = training_throughput(replace(plan, train=replace(plan.train, precision="bfloat16")), ids, gemm)
    return {"gemm": gemm.summary(), "train": train}


SEQUENCE_ROW_TARGETS = 64  # targets per row when the default trains on windows and the bench compares


def other_row_mode(train: TrainConfig) -> TrainConfig:
    """The same number of targets per step in the other row mode: windows (one target per row)
    for a default that trains on sequence rows, rows of ``SEQUENCE_ROW_TARGETS`` otherwise."""
    if train.targets_per_row > 1:
        return replace(train, batch_size=train.targets_per_step, targets_per_row=1)
    rows = max(1, train.batch_size // SEQUENCE_ROW_TARGETS)
    return replace(train, batch_size=rows, targets_per_row=train.batch_size // rows)


def summarize(results: dict) -> dict:
    """The flat headline keys (the ``--json`` contract) and the target verdicts."""
    train, peak = results["train"], results["gemm"]["best"]
    seven = {r["smoothing"]: r["fit_score_s"] for r in results["ngram"] or [] if r["order"] == 7}
    bf16 = results["bf16"]
    suite = results["parity_suite"]
    summary = {
        "gemm_peak_gflops": peak,
        "train_gflops": train["gflops"],
        "train_to_peak_ratio": train["gflops"] / peak,
        "tokens_per_sec": train["tokens_per_sec"],
        "targets_per_row": train["targets_per_row"],
        "matmul_flops_per_target": train["matmul_flops_per_target"],
        "other_mode_targets_per_row": results["train_other_mode"]["targets_per_row"],
        "other_mode_tokens_per_sec": results["train_other_mode"]["tokens_per_sec"],
        "other_mode_matmul_flops_per_target": results["train_other_mode"]["matmul_flops_per_target"],
        "other_mode_to_peak_ratio": results["train_other_mode"]["gflops"] / peak,
        "step_ms": train["step_ms"]["best"],
        "bf16_gemm_peak_gflops": bf16["gemm"]["best"] if bf16 else None,
        "bf16_tokens_per_sec": bf16["train"]["tokens_per_sec"] if bf16 else None,
        "bf16_speedup": bf16["train"]["tokens_per_sec"] / train["tokens_per_sec"] if bf16 else None,
        "compiled_to_peak_ratio": results["train_compiled"]["gflops"] / peak if results["train_compiled"] else None,
        **{f"{piece}_share": train["shares"][piece] for piece in PIECES},
        "numpy_over_torch_float64": results["numpy_vs_torch"]["float64"]["numpy_over_torch"],
        "numpy_over_torch_float32": results["numpy_vs_torch"]["float32"]["numpy_over_torch"],
        # incremental / window-forward characters per second of generate, per batch size
        **{f"sampling_speedup_b{row['batch']}": row["speedup"] for row in results.get("sampling") or []},
        "kn7_fit_score_s": seven.get("kn"),  # interpolated Kneser-Ney, order 7
        "mkn7_fit_score_s": seven.get("mkn"),  # modified Kneser-Ney, order 7
        "parity_suite_s": suite["seconds"] if suite else None,
        "threads": results["machine"]["threads"],
        "loadavg_start": results["loadavg_start"],
        "loadavg_end": results["loadavg_end"],
    }
    summary["targets"] = target_verdicts(summary)
    return summary


def target_verdicts(summary: dict) -> dict:
    """{target: {"value", "limit", "met"}}; ``met`` is None when the figure was not measured."""
    compare = {">=": operator.ge, "<": operator.lt, "<=": operator.le}
    verdicts = {}
    for name, (key, op, limit) in TARGETS.items():
        value = summary[key]
        verdicts[name] = {
            "key": key,
            "value": value,
            "limit": f"{op} {limit}",
            "met": None if value is None else compare[op](value, limit),
        }
    return verdicts
