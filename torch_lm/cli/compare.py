"""``compare``: every model on the held-out protocol, written up in ``reports/REPORT.md``
(``scripts/compare.py``, ``torch-lm-compare``); the report itself is ``torch_lm.reports.compare``."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import fields

from torch_lm.cli.parsing import (
    POSITIVE_FLOAT,
    POSITIVE_INT,
    OneLineParser,
    command_line_values,
    parser_for,
    positive_int_list,
    run_command,
)
from torch_lm.reports.compare import DEFAULT_TUNING_CHECKPOINT, CompareSpec, run_compare
from torch_lm.reports.sweep import DEFAULT_CONTEXTS, DEFAULT_STEPS
from torch_lm.training.checkpoint import DEFAULT_CHECKPOINT
from torch_lm.training.config import resolve_device


def kn_order(text: str) -> int:
    value = POSITIVE_INT(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"the Kneser-Ney order must be at least 2, got {text!r}")
    return value


def build_parser() -> OneLineParser:
    parser = parser_for(
        "compare",
        description="Every model on one held-out protocol, written up "
        "in reports/REPORT.md with its figures (Exercise 3.11 and the neural-bigram "
        "mini-project).",
    )
    parser.add_argument(
        "--all",
        dest="regenerate_all",
        action="store_true",
        help="first run the context sweep and the embedding plots, then the report",
    )
    parser.add_argument(
        "--checkpoint", default=DEFAULT_CHECKPOINT, metavar="PATH", help="the trained NeuralLM (default: %(default)s)"
    )
    parser.add_argument(
        "--tuning-checkpoint",
        default=DEFAULT_TUNING_CHECKPOINT,
        metavar="PATH",
        help="the same recipe trained without the train slice, which tunes the mixture "
        "weight (--all trains it; default: %(default)s)",
    )
    parser.add_argument("--data", metavar="PATH", help="text file (default: Tiny Shakespeare in data/)")
    parser.add_argument(
        "--out", default="reports/REPORT.md", help="the report; figures go next to it (default: %(default)s)"
    )
    parser.add_argument(
        "--sweep-json", metavar="PATH", help="sweep results to include (default: sweep.json next to the report)"
    )
    parser.add_argument(
        "--sweep-steps",
        type=POSITIVE_INT,
        default=DEFAULT_STEPS,
        help="with --all: optimizer steps per context of the sweep (default: %(default)s)",
    )
    parser.add_argument(
        "--sweep-contexts",
        type=positive_int_list,
        default=DEFAULT_CONTEXTS,
        metavar="C,C,...",
        help="with --all: the sweep's contexts (default: 1,2,4,8,16)",
    )
    parser.add_argument(
        "--kn-order",
        type=kn_order,
        default=None,
        help="order of the modified Kneser-Ney model, the best count model and the "
        "mixture's partner (default: the order 3-10 that scores best on the train slice)",
    )
    parser.add_argument(
        "--fit-steps",
        type=POSITIVE_INT,
        default=300,
        help="full-batch steps of every neural bigram/trigram fit (default: %(default)s)",
    )
    parser.add_argument(
        "--sample-length",
        type=POSITIVE_INT,
        default=2000,
        help="characters sampled from every model (default: %(default)s)",
    )
    parser.add_argument(
        "--temperature",
        type=POSITIVE_FLOAT,
        default=1.0,
        help="sampling temperature, the same for every model (default: %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=CompareSpec.seed,
        help="sampling seed, the same for every model (default: %(default)s)",
    )
    parser.add_argument(
        "--device",
        default="cpu",
        help="device of the NeuralLM and the sweep: cpu (deterministic), cuda, auto (default: %(default)s)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    spec = CompareSpec(**{f.name: getattr(args, f.name) for f in fields(CompareSpec)})
    return run_command(parser, lambda: write_report(spec))


def write_report(spec: CompareSpec) -> None:
    """The work of ``compare``: check the device, write the report, print its rows."""
    with command_line_values():
        resolve_device(spec.device)
    began = time.perf_counter()
    summary = run_compare(spec)
    for row in summary["rows"]:
        print(f"{row['label']:<58} {row['val_loss']:.4f} nats/char  ppl {row['val_ppl']:.3f}")
    print(
        f"compare: wrote {spec.out} (and its figures, compare.json) in {time.perf_counter() - began:.0f} s",
        file=sys.stderr,
    )
