"""``bench``: speed of the training hot path against this machine's GEMM peak, numpy_ref vs torch,
sampling (window forward vs incremental predictor), scaling, n-gram and parity-suite timings;
writes ``reports/bench.json`` and ``reports/BENCH.md`` (``scripts/bench.py``, ``torch-lm-bench``).
What is measured and how: ``torch_lm.bench.run``."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from torch_lm.cli.parsing import POSITIVE_INT, OneLineParser, parser_for, run_command, set_thread_variables

# NumPy and torch are imported by ``main`` after ``--threads`` has reached the thread variables.
REPORTS_DIR = Path(__file__).resolve().parents[2] / "reports"


def build_parser() -> OneLineParser:
    parser = parser_for(
        "bench",
        description="Speed of the training hot path against this machine's GEMM peak, "
        "numpy_ref vs torch, sampling, scaling, n-gram and parity-suite timings; writes reports/bench.json and "
        "reports/BENCH.md.",
    )
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object on the last line")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (noisier figures)")
    parser.add_argument("--skip-suite", action="store_true", help="do not time the parity suite")
    parser.add_argument("--compile", action="store_true", help="also time the training loop under torch.compile")
    parser.add_argument(
        "--data", help="text file for the n-gram timings and the batches (default: data/tinyshakespeare.txt)"
    )
    parser.add_argument("--threads", type=POSITIVE_INT, help="torch and BLAS threads (default: torch's, all cores)")
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=REPORTS_DIR,
        help="where bench.json and BENCH.md go (default: the repository's reports/)",
    )
    return parser


def main(argv: Sequence[str] | None = None, plan=None) -> int:
    """``bench``; ``plan`` (a ``BenchPlan``) overrides ``default_plan`` (tests use tiny sizes)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads:
        set_thread_variables(args.threads)  # NumPy's BLAS reads them once, when it loads
    return run_command(parser, lambda: bench(args, argv, plan))


def bench(args, argv: Sequence[str] | None, plan) -> None:
    """The work of ``bench``: find the text, measure, write ``bench.json`` and ``BENCH.md``, print."""
    import torch

    from torch_lm.bench.markdown import to_markdown, write_reports
    from torch_lm.bench.plan import default_plan
    from torch_lm.bench.run import find_text, run
    from torch_lm.strict_json import dumps
    from torch_lm.training.allocator import keep_freed_memory
    from torch_lm.training.text import read_text

    keep_freed_memory()  # as training does: the trainer's step is measured as it runs
    if args.threads:
        torch.set_num_threads(args.threads)
    path = find_text(args.data)
    text = read_text(path) if path else None
    if plan is None:
        plan = default_plan(args.quick, run_suite=not args.skip_suite, compile=args.compile)
    results = run(plan, text, progress=lambda what: print(f"bench: {what}", file=sys.stderr))
    results["data"] = str(path) if path else "synthetic ids (no text found)"
    command = "python scripts/bench.py" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    json_path, md_path = write_reports(results, args.out_dir, command)
    print(f"bench: wrote {json_path} and {md_path}", file=sys.stderr)
    print(dumps(results["summary"]) if args.json else to_markdown(results, command))
