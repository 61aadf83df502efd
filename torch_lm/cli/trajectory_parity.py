"""``trajectory_parity``: train the NeuralLM for N steps in ``numpy_ref`` and with the trainer's
step from the same start on the same batches, and compare (``scripts/trajectory_parity.py``,
``torch-lm-trajectory-parity``). Exit 0 within tolerance, 1 beyond it, 2 on bad arguments."""

from __future__ import annotations

from collections.abc import Sequence

from torch_lm.cli.parsing import (
    NONNEGATIVE_FLOAT,
    NONNEGATIVE_INT,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    PROBABILITY,
    OneLineParser,
    command_line_values,
    parser_for,
    run_command,
    set_thread_variables,
)

# NumPy and torch are imported by the functions below, after ``main`` has asked for one thread.


def build_parser() -> OneLineParser:
    from numpy_ref.config import ModelConfig
    from numpy_ref.trajectory import OPTIMIZERS
    from torch_lm.training.config import DTYPES, TrainConfig
    from torch_lm.training.trajectory import MODEL_CONFIGS

    recipe, model = TrainConfig(), ModelConfig()
    parser = parser_for(
        "trajectory_parity",
        description="Train the NeuralLM for N steps in numpy_ref and with the trainer's own step (built "
        "as train.py builds it) from the same start on the same batches and dropout masks, and report "
        "the largest relative differences of the loss (all steps) and the parameters (at the end). "
        "With no flags: the default recipe's path (sequence rows, fused AdamW, dropout, warm-up and "
        "cosine, clipping, weight decay) in float64. Exit 0 within tolerance, 1 beyond it, 2 on bad "
        "arguments.",
    )
    add = parser.add_argument
    add("--steps", type=POSITIVE_INT, default=200, help="optimiser steps (default 200)")
    add("--dtype", choices=sorted(DTYPES), default="float64", help="both engines' dtype (default float64)")
    add("--optimizer", choices=OPTIMIZERS, default="adamw", help="default adamw, the trainer's")
    add(
        "--config",
        choices=sorted(MODEL_CONFIGS),
        default="default",
        help="model: 'default' = ModelConfig(), 'small' = tiny model with fusion, LayerNorm and a block",
    )
    add("--hidden-dim", type=POSITIVE_INT, help="a smaller (or larger) hidden size than the model's")
    add(
        "--targets-per-row",
        type=POSITIVE_INT,
        default=recipe.targets_per_row,
        help=f"targets per row; 1 = window rows (default {recipe.targets_per_row}, the recipe's sequence rows)",
    )
    add(
        "--batch-size",
        type=POSITIVE_INT,
        default=recipe.batch_size,
        help=f"rows per step (default {recipe.batch_size})",
    )
    add("--lr", type=POSITIVE_FLOAT, default=recipe.lr, help=f"peak learning rate (default {recipe.lr:g})")
    add(
        "--dropout",
        type=PROBABILITY,
        default=model.dropout,
        help=f"dropout probability; both engines get the same keep-masks (default {model.dropout:g})",
    )
    add(
        "--grad-clip",
        type=NONNEGATIVE_FLOAT,
        default=recipe.grad_clip,
        help=f"clip the gradient norm to this value, 0 = no clipping (default {recipe.grad_clip:g})",
    )
    add(
        "--ema-decay",
        type=PROBABILITY,
        default=recipe.ema_decay,
        help="keep an exponential moving average of the weights with this decay on both sides and compare "
        f"it too, e.g. 0.99; 0 = none (default {recipe.ema_decay:g})",
    )
    add(
        "--seed",
        type=NONNEGATIVE_INT,
        default=recipe.seed,
        help=f"seeds the initial parameters, the text, the batches and the masks (default {recipe.seed})",
    )
    add(
        "--no-fused-optimizer",
        action="store_true",
        help="AdamW's op-by-op path on the torch side instead of the fused kernel train.py takes",
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
    start their pools (``docs/trajectory_parity.md``).
    """
    set_thread_variables(1, keep_given=True)
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_command(parser, lambda: compare_trajectories(args))


def compare_trajectories(args) -> int:
    """Both runs of the arguments' recipe, compared and printed; 0 within tolerance, 1 beyond it."""
    from dataclasses import replace

    from torch_lm.strict_json import dumps
    from torch_lm.training.config import TrainConfig
    from torch_lm.training.trajectory import model_config_named, run_of, run_parity

    with command_line_values():
        model_config = model_config_named(args.config, args.dropout, args.hidden_dim)
        recipe = replace(
            TrainConfig(),
            batch_size=args.batch_size,
            targets_per_row=args.targets_per_row,
            lr=args.lr,
            min_lr=min(TrainConfig().min_lr, args.lr),
            grad_clip=args.grad_clip,
            seed=args.seed,
            ema_decay=args.ema_decay,
        )
        run = run_of(recipe, args.steps, args.optimizer)
    report = run_parity(model_config, args.dtype, run, tol=args.tolerance, fused=not args.no_fused_optimizer)
    if args.json:
        print(dumps({"config": args.config, **report.to_dict()}))
    else:
        rows = "window rows" if report.targets_per_row == 1 else f"rows of {report.targets_per_row} targets"
        adamw = "fused AdamW" if report.fused else run.optimizer if run.optimizer == "sgd" else "op-by-op AdamW"
        ema = f", EMA {report.ema_decay:g}" if report.ema_max_rel_diff is not None else ""
        ema_diff = f", EMA {report.ema_max_rel_diff:.3e}" if report.ema_max_rel_diff is not None else ""
        print(
            f"{args.config} config, {report.dtype}, {rows}, {adamw}, dropout {report.dropout:g}{ema}, {report.steps} steps "
            f"({report.seconds:.1f} s): loss {report.first_loss:.4f} -> {report.final_loss_torch:.4f}, "
            f"parameters moved {report.param_rel_change:.1%}"
        )
        print(
            f"largest relative difference: loss {report.loss_max_rel_diff:.3e}, "
            f"parameters {report.param_max_rel_diff:.3e} ({report.worst_param}){ema_diff}; "
            f"tolerance {report.tolerance:.1e}: {'PASS' if report.passed else 'FAIL'}"
        )
    return 0 if report.passed else 1
