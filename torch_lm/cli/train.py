"""``train``: train the NeuralLM (``scripts/train.py``, ``torch-lm-train``).

Defaults are not written here: every training flag defaults to the ``ModelConfig`` /
``TrainConfig`` field of the same name (shown in ``--help``). With ``--resume`` the defaults are
the checkpoint's own settings instead, so ``train.py --run-dir R --resume`` continues run R
unchanged, and any flag given explicitly overrides (a model flag must agree with the checkpoint).

``torchrun --nproc_per_node=K scripts/train.py ...`` runs the same training data-parallel
(``torch_lm.training.distributed``): ``--batch-size`` stays the global batch (it must be
divisible by K), rank 0 alone prints the progress and the summary and writes the run directory.
Every rank reports its own failures, tagged ``train.py[rank r]`` for r > 0, except those all
ranks meet together (interrupt, non-finite loss), which rank 0 alone reports. Exit codes:
``torch_lm.cli.parsing``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from numpy_ref.config import ACTIVATIONS, ModelConfig
from torch_lm.cli.parsing import (
    OneLineParser,
    command_line_values,
    exit_code,
    float_pair,
    int_list,
    parser_for,
    run_command,
)
from torch_lm.training.allocator import keep_freed_memory
from torch_lm.training.checkpoint import LAST, CheckpointError, load_checkpoint, refuse_existing_run
from torch_lm.training.config import DTYPES, TrainConfig
from torch_lm.training.distributed import (
    DistEnv,
    check_batch_divisible,
    distributed_session,
    rank_device,
)
from torch_lm.training.precision import PRECISIONS
from torch_lm.training.signals import NonFiniteLossError, TrainingInterrupted
from torch_lm.training.text import DEFAULT_DATA_PATH, load_text
from torch_lm.training.trainer import train
from torch_lm.training.vocab import CharVocab

MODEL_FLAGS = (
    "context",
    "embed_dim",
    "hidden_dim",
    "fusion",
    "n_blocks",
    "activation",
    "norm",
    "dropout",
    "pair_embed",
)


def build_parser() -> OneLineParser:
    """The parser of ``train``; every flag defaults to 'not given' (see the module docstring)."""
    parser = parser_for(
        "train",
        argument_default=argparse.SUPPRESS,
        description="Train the character NeuralLM on Tiny Shakespeare (TensorBoard events, "
        "last.pt and best.pt in --run-dir). Defaults come from ModelConfig and "
        "TrainConfig; with --resume, from the checkpoint.",
    )
    parser.add_argument(
        "--data",
        metavar="PATH",
        help=f"text file to train on (default: {DEFAULT_DATA_PATH}, downloaded and verified if absent)",
    )
    add_model_arguments(parser.add_argument_group("model (ModelConfig)"), ModelConfig())
    training, run = parser.add_argument_group("training (TrainConfig)"), TrainConfig()
    add_row_arguments(training, run)
    add_optimizer_arguments(training, run)
    add_length_and_evaluation_arguments(training, run)
    add_run_arguments(training, run)
    return parser


def add_model_arguments(group: argparse._ArgumentGroup, model: ModelConfig) -> None:
    """The ``ModelConfig`` flags: context, sizes, fusion, blocks, activation, LayerNorm, dropout."""
    group.add_argument("--context", type=int, help=f"characters of context (default: {model.context})")
    group.add_argument("--embed-dim", type=int, help=f"character vector size (default: {model.embed_dim})")
    group.add_argument("--hidden-dim", type=int, help=f"hidden width (default: {model.hidden_dim})")
    group.add_argument(
        "--fusion",
        type=int_list,
        metavar="G,G,...",
        help="group sizes of the hierarchical fusion levels, product = context, e.g. "
        "8,2; 'none' for the flat MLP (default: pairs at every level for a context that is a "
        f"power of two: {','.join(map(str, model.fusion))} at context {model.context}; flat otherwise)",
    )
    group.add_argument("--n-blocks", type=int, help=f"residual blocks (default: {model.n_blocks})")
    group.add_argument("--activation", choices=ACTIVATIONS, help=f"hidden activation (default: {model.activation})")
    group.add_argument(
        "--norm", action=argparse.BooleanOptionalAction, help=f"LayerNorm in every hidden layer (default: {model.norm})"
    )
    group.add_argument("--dropout", type=float, help=f"dropout probability (default: {model.dropout})")
    group.add_argument(
        "--pair-embed",
        action="store_true",
        help=f"add a vector per exact character pair, a V*V table (default: {model.pair_embed})",
    )


def add_row_arguments(group: argparse._ArgumentGroup, run: TrainConfig) -> None:
    """What a step trains on: the global batch in rows, and the targets of every row."""
    group.add_argument("--batch-size", type=int, help=f"global batch size in rows (default: {run.batch_size})")
    group.add_argument(
        "--targets-per-row",
        type=int,
        metavar="P",
        help=f"consecutive targets per batch row, scored at once by the sequence forward; 1 = one "
        f"window per row (default: {run.targets_per_row})",
    )


def add_optimizer_arguments(group: argparse._ArgumentGroup, run: TrainConfig) -> None:
    """The learning-rate schedule, AdamW's settings, gradient clipping and the EMA of the weights."""
    group.add_argument("--lr", type=float, help=f"peak learning rate (default: {run.lr})")
    group.add_argument("--min-lr", type=float, help=f"final learning rate (default: {run.min_lr})")
    group.add_argument(
        "--warmup-steps",
        type=int,
        help=f"linear warm-up steps, at most a tenth of --max-steps (default: {run.warmup_steps})",
    )
    group.add_argument(
        "--weight-decay", type=float, help=f"AdamW weight decay of the weight matrices (default: {run.weight_decay})"
    )
    group.add_argument(
        "--betas", type=float_pair, metavar="B1,B2", help=f"AdamW betas (default: {','.join(map(str, run.betas))})"
    )
    group.add_argument("--grad-clip", type=float, help=f"max gradient norm, 0 = off (default: {run.grad_clip})")
    group.add_argument(
        "--ema-decay",
        type=float,
        metavar="D",
        help="keep an exponential moving average of the weights with this decay in [0, 1), e.g. 0.999, "
        "and evaluate, sample, select best.pt and save the checkpoints' model with it; 0 = off "
        f"(default: {run.ema_decay})",
    )


def add_length_and_evaluation_arguments(group: argparse._ArgumentGroup, run: TrainConfig) -> None:
    """How long the run lasts, how often it logs, evaluates and saves, and what it evaluates on."""
    group.add_argument("--max-steps", type=int, help=f"optimizer steps (default: {run.max_steps})")
    group.add_argument(
        "--time-budget",
        type=float,
        metavar="SEC",
        help=f"stop after SEC seconds, 0 = no limit (default: {run.time_budget})",
    )
    group.add_argument("--eval-interval", type=int, help=f"steps between evaluations (default: {run.eval_interval})")
    group.add_argument("--log-interval", type=int, help=f"steps between log lines (default: {run.log_interval})")
    group.add_argument(
        "--checkpoint-interval",
        type=int,
        metavar="N",
        help=f"also save last.pt every N steps, 0 = only at evaluations (default: {run.checkpoint_interval})",
    )
    group.add_argument(
        "--holdout-tail",
        type=int,
        metavar="N",
        help=f"leave the last N train characters out of training and evaluate on them instead of "
        f"val, to choose something without touching val (default: {run.holdout_tail})",
    )
    group.add_argument(
        "--eval-batch-size", type=int, help=f"windows per forward in evaluation (default: {run.eval_batch_size})"
    )
    group.add_argument(
        "--sample-length", type=int, help=f"characters sampled at every evaluation (default: {run.sample_length})"
    )


def add_run_arguments(group: argparse._ArgumentGroup, run: TrainConfig) -> None:
    """Where and how the run executes: seed, device, dtype, precision, run directory, resume,
    compilation, the fused optimiser."""
    group.add_argument("--seed", type=int, help=f"seed of initialisation, batches, dropout (default: {run.seed})")
    group.add_argument("--device", help=f"auto, cpu, cuda or cuda:N (default: {run.device})")
    group.add_argument("--dtype", choices=sorted(DTYPES), help=f"parameter dtype (default: {run.dtype})")
    group.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="matrix products: full (the parameters' dtype), bfloat16, or auto: bfloat16 where the CPU "
        f"(AVX-512 BF16 or AMX) or GPU (compute capability 8.0+) has it natively (default: {run.precision})",
    )
    group.add_argument("--run-dir", help=f"output directory (default: {run.run_dir})")
    group.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt")
    group.add_argument(
        "--compile", action=argparse.BooleanOptionalAction, help=f"torch.compile the model (default: {run.compile})"
    )
    group.add_argument(
        "--fused-optimizer",
        action=argparse.BooleanOptionalAction,
        help=f"AdamW's fused kernel where torch has one; --no-fused-optimizer takes the "
        f"op-by-op path that numpy_ref.optim mirrors (default: {run.fused_optimizer})",
    )


def configs_from_args(args: argparse.Namespace) -> tuple[ModelConfig, TrainConfig]:
    """The configs: defaults (or the checkpoint's, with ``--resume``) overlaid with the given flags.

    Raises ``UsageError`` for values the configs refuse and ``CheckpointError`` if ``--resume``
    finds no usable checkpoint. ``vocab_size`` is provisional until the text is read.
    """
    given = vars(args)
    model_flags = {k: v for k, v in given.items() if k in MODEL_FLAGS}
    train_flags = {k: v for k, v in given.items() if k in TrainConfig.__dataclass_fields__}
    # fusion None: derived from the (possibly given) context, see numpy_ref.config.default_fusion
    model_base, train_base = {**ModelConfig().to_dict(), "fusion": None}, TrainConfig().to_dict()
    if given.get("resume"):
        last = Path(train_flags.get("run_dir", train_base["run_dir"])) / LAST
        if not last.exists():
            raise CheckpointError(f"--resume: no checkpoint at {last}")
        checkpoint = load_checkpoint(last)
        model_base, train_base = checkpoint["model_config"], checkpoint["train_config"]
        try:
            TrainConfig.from_dict(train_base)
        except (ValueError, TypeError) as error:  # a stale or foreign checkpoint, not a bad flag
            raise CheckpointError(f"checkpoint {last}: {error}") from None
    with command_line_values():
        model_config = ModelConfig.from_dict({**model_base, **model_flags})
        train_config = TrainConfig.from_dict({**train_base, **train_flags, "resume": bool(given.get("resume"))})
    return model_config, train_config


def main(argv: Sequence[str] | None = None) -> int:
    """``train``: parse, check, read the text, train (as one rank under torchrun); print a
    one-line summary."""
    parser = build_parser()
    return run_command(parser, lambda: train_command(parser, argv))


def train_command(parser: OneLineParser, argv: Sequence[str] | None) -> int | None:
    """The work of ``train``. A stop that every rank meets together (an interrupt, a non-finite
    loss) is reported by rank 0 alone: the other ranks return its exit code silently."""
    with command_line_values():  # torchrun's variables
        env = DistEnv.from_env()
    if not env.is_main:
        parser.prog = f"{parser.prog}[rank {env.rank}]"
    args = parser.parse_args(argv)
    model_config, train_config = configs_from_args(args)
    with command_line_values():
        check_batch_divisible(train_config.batch_size, env.world_size)
        device = rank_device(train_config.device, env)
        if not train_config.resume:
            refuse_existing_run(train_config.run_dir)
    try:
        text = load_text(getattr(args, "data", None))
        model_config = replace(model_config, vocab_size=len(CharVocab.from_text(text)))
        keep_freed_memory()  # no page faults for each step's fresh tensors (training/allocator.py)
        with distributed_session(env, device) as distributed:
            summary = train(model_config, train_config, text, distributed)
    except (TrainingInterrupted, NonFiniteLossError) as stop:  # every rank stopped at this step; rank 0 saved
        if env.is_main:
            raise
        return exit_code(stop)
    if not env.is_main:
        return None
    ema = f"the EMA of the weights (decay {summary['ema_decay']:g}); " if summary["ema_decay"] else ""
    print(
        f"{summary['status']}: {summary['steps']} steps, {summary['heldout']} loss {summary['val_loss']:.4f} "
        f"nats/char (perplexity {summary['val_ppl']:.3f}, {summary['bpc']:.3f} bpc), best "
        f"{summary['best_val_loss']:.4f}; {ema}{summary['precision']} products; checkpoints and events in {summary['run_dir']}"
    )
    return None
