"""``sweep_context``: held-out perplexity of the NeuralLM against its context length, beside the
count n-gram of the same context (``scripts/sweep_context.py``, ``torch-lm-sweep-context``); the
sweep itself is ``torch_lm.reports.sweep``."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import fields

from numpy_ref.config import ModelConfig
from torch_lm.cli.parsing import (
    NONNEGATIVE_FLOAT,
    POSITIVE_INT,
    OneLineParser,
    command_line_values,
    parser_for,
    positive_int_list,
    run_command,
)
from torch_lm.reports.sweep import (
    DEFAULT_CONTEXTS,
    DEFAULT_JSON,
    DEFAULT_PNG,
    DEFAULT_RUNS_ROOT,
    DEFAULT_STEPS,
    FUSIONS,
    SweepSpec,
    check_settings,
    format_table,
    run_sweep,
    write_outputs,
)
from torch_lm.strict_json import dumps
from torch_lm.training.config import TrainConfig


def build_parser() -> OneLineParser:
    model, run = ModelConfig(), TrainConfig()
    parser = parser_for(
        "sweep_context",
        description="Held-out perplexity of the NeuralLM against its "
        "context length, next to the count n-gram with the same context (modified "
        "Kneser-Ney of order context + 1).",
    )
    parser.add_argument(
        "--contexts",
        type=positive_int_list,
        default=DEFAULT_CONTEXTS,
        metavar="C,C,...",
        help="context lengths to train (default: 1,2,4,8,16)",
    )
    parser.add_argument(
        "--steps",
        type=POSITIVE_INT,
        default=DEFAULT_STEPS,
        help="optimizer steps per context, the equal budget (default: %(default)s)",
    )
    parser.add_argument(
        "--time-budget",
        type=NONNEGATIVE_FLOAT,
        default=0.0,
        metavar="SEC",
        help="also stop each run after SEC seconds, 0 = no cap (default: 0)",
    )
    parser.add_argument(
        "--fusion",
        choices=FUSIONS,
        default="default",
        help="the default model's fusion for each context (pairs for a power of two, flat "
        "otherwise), the flat MLP, or hierarchical pairs (default: default)",
    )
    parser.add_argument("--embed-dim", type=POSITIVE_INT, help=f"default: {model.embed_dim}")
    parser.add_argument("--hidden-dim", type=POSITIVE_INT, help=f"default: {model.hidden_dim}")
    parser.add_argument("--batch-size", type=POSITIVE_INT, help=f"default: {run.batch_size}")
    parser.add_argument("--lr", type=float, help=f"peak learning rate (default: {run.lr})")
    parser.add_argument("--eval-interval", type=POSITIVE_INT, help=f"default: {run.eval_interval}")
    parser.add_argument("--seed", type=int, help=f"default: {run.seed}")
    parser.add_argument("--device", help=f"auto, cpu, cuda or cuda:N (default: {run.device})")
    parser.add_argument("--data", metavar="PATH", help="text file (default: Tiny Shakespeare in data/)")
    parser.add_argument(
        "--runs-root",
        default=DEFAULT_RUNS_ROOT,
        help="TensorBoard runs go to RUNS_ROOT/context-C (default: %(default)s)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace existing RUNS_ROOT/context-C runs instead of refusing"
    )
    parser.add_argument("--out", default=DEFAULT_JSON, help="results JSON (default: %(default)s)")
    parser.add_argument("--png", default=DEFAULT_PNG, help="figure (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    spec = SweepSpec(**{f.name: getattr(args, f.name) for f in fields(SweepSpec)})
    return run_command(parser, lambda: sweep(spec, args.json))


def sweep(spec: SweepSpec, as_json: bool) -> None:
    """The work of ``sweep_context``: check the settings, train and fit every context, write the
    results and the figure, print them."""
    with command_line_values():  # e.g. --lr -1, --fusion pairs with context 3, --device tpu
        check_settings(spec)
    began = time.perf_counter()
    results = run_sweep(spec)
    write_outputs(results, spec)
    print(dumps(results, indent=2) if as_json else format_table(results))
    print(
        f"sweep: {len(results['rows'])} contexts in {time.perf_counter() - began:.0f} s; wrote "
        f"{spec.out} and {spec.png}",
        file=sys.stderr,
    )
