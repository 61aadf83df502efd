"""``trajectory_parity``: train the NeuralLM for N steps in ``numpy_ref`` and with the trainer's
step from the same start on the same batches, and compare (``scripts/trajectory_parity.py``,
``torch-lm-trajectory-parity``). Exit 0 within tolerance, 1 beyond it, 2 on bad arguments."""

from __future__ import annotations

import json
from collections.abc import Sequence

from torch_lm.cli.parsing import (
    NONNEGATIVE_FLOAT,
    NONNEGATIVE_INT,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    PROBABILITY,
    OneLineParser,
    parser_for,
    set_thread_variables,
)

# NumPy and torch are imported by the functions below, after ``main`` has asked for one thread.


def build_parser() -> OneLineParser:
    from numpy_ref.trajectory import OPTIMIZERS
    from torch_lm.training.config import DTYPES
    from torch_lm.training.trajectory import MODEL_CONFIGS

    parser = parser_for(
        "trajectory_parity",
        description="Train the NeuralLM for N steps in numpy_ref and with the trainer's step from the "
        "same start on the same batches, and report the largest relative differences of the "
        "loss (all steps) and the parameters (at the end). Exit 0 within tolerance, 1 beyond "
        "it, 2 on bad arguments.",
    )
    add = parser.add_argument
    add(
        "--steps",
        type=POSITIVE_INT,
        default=200,
        help="optimiser steps (default 200; the tolerances are calibrated up to ~400 steps)",
    )
    add("--dtype", choices=sorted(DTYPES), default="float64", help="both engines' dtype (default float64)")
    add("--optimizer", choices=OPTIMIZERS, default="adamw", help="default adamw")
    add(
        "--config",
        choices=sorted(MODEL_CONFIGS),
        default="default",
        help="model: 'default' = ModelConfig(), 'small' = tiny model with fusion, LayerNorm and a block",
    )
    add(
        "--seed",
        type=NONNEGATIVE_INT,
        default=0,
        help="seeds the initial parameters, batches and dropout masks (default 0)",
    )
    add("--batch-size", type=POSITIVE_INT, default=32, help="default 32")
    add(
        "--lr",
        type=POSITIVE_FLOAT,
        default=1e-2,
        help="peak learning rate of the warmup + cosine schedule (default 1e-2)",
    )
    add(
        "--dropout",
        type=PROBABILITY,
        default=0.0,
        help="dropout probability; both engines get the same keep-masks (default 0)",
    )
    add(
        "--grad-clip",
        type=NONNEGATIVE_FLOAT,
        default=1.0,
        help="clip the gradient norm to this value, 0 = no clipping (default 1.0)",
    )
    add(
        "--tolerance",
        type=POSITIVE_FLOAT,
        help="override the tolerance (default: 1e-10 in float64; in float32 "
        "eps32 * (32 * sqrt(steps) + 2**14 for adamw), justified in docs/trajectory_parity.md)",
    )
    add("--json", action="store_true", help="print the report as one JSON object")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the comparison from the command line; returns the exit code (0 pass, 1 fail, 2 bad input).

    One BLAS / OpenMP thread unless the environment says otherwise, set before NumPy and torch
    start their pools: the matrices are tiny, and on shared cores two threads spin-wait on each
    other (measured 20x slower for NumPy's matmuls and 40x for torch's).
    """
    set_thread_variables(1, keep_given=True)
    args = build_parser().parse_args(argv)
    from numpy_ref.trajectory import TrajectoryConfig
    from torch_lm.training.trajectory import model_config_named, run_parity

    model_config = model_config_named(args.config, args.dropout)
    run = TrajectoryConfig(
        optimizer=args.optimizer,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        min_lr=args.lr / 10,
        warmup_steps=min(10, args.steps),
        grad_clip=args.grad_clip,
        seed=args.seed,
    )
    report = run_parity(model_config, args.dtype, run, tol=args.tolerance)
    if args.json:
        print(json.dumps({"config": args.config, **report.to_dict()}))
    else:
        print(
            f"{args.config} config, {report.dtype}, {run.optimizer}, {report.steps} steps "
            f"({report.seconds:.1f} s): loss {report.first_loss:.4f} -> {report.final_loss_torch:.4f}, "
            f"parameters moved {report.param_rel_change:.1%}"
        )
        print(
            f"largest relative difference: loss {report.loss_max_rel_diff:.3e}, "
            f"parameters {report.param_max_rel_diff:.3e} ({report.worst_param}); "
            f"tolerance {report.tolerance:.1e}: {'PASS' if report.passed else 'FAIL'}"
        )
    return 0 if report.passed else 1
