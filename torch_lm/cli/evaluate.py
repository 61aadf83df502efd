"""``evaluate``: the held-out protocol on a checkpoint (``scripts/evaluate.py``,
``torch-lm-evaluate``), static or with dynamic evaluation (``--dynamic``)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch_lm.cli.parsing import (
    NONNEGATIVE_FLOAT,
    POSITIVE_INT,
    OneLineParser,
    command_line_values,
    parser_for,
    run_command,
)
from torch_lm.strict_json import dumps
from torch_lm.training.batches import split_ids
from torch_lm.training.checkpoint import model_from_checkpoint
from torch_lm.training.config import TrainConfig, resolve_device
from torch_lm.training.dynamic import RULES, DynamicSettings, dynamic_heldout
from torch_lm.training.heldout import HeldoutResult, heldout_loss
from torch_lm.training.signals import NonFiniteLossError
from torch_lm.training.text import DEFAULT_DATA_PATH, DataError, load_text


def build_parser() -> OneLineParser:
    """The parser of ``evaluate``."""
    parser = parser_for(
        "evaluate",
        description="Held-out protocol of docs/DESIGN.md §3 on a checkpoint: mean "
        "loss over every val position (nats/char), perplexity, "
        "bits per character.",
    )
    parser.add_argument("--checkpoint", required=True, metavar="PATH", help="a last.pt or best.pt")
    parser.add_argument(
        "--json",
        action="store_true",
        help='print {"mode", "val_loss", "val_ppl", "bpc", "positions"} as JSON (and "dynamic": its settings)',
    )
    parser.add_argument(
        "--data", metavar="PATH", help=f"text file (default: {DEFAULT_DATA_PATH}, downloaded if absent)"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument(
        "--batch-size",
        type=POSITIVE_INT,
        default=TrainConfig().eval_batch_size,
        help="windows per forward (default: %(default)s)",
    )
    dynamic, defaults = parser.add_argument_group("dynamic evaluation"), DynamicSettings()
    dynamic.add_argument(
        "--dynamic",
        action="store_true",
        help="adapt a copy of the model to val as it is scored: a gradient step after each segment",
    )
    dynamic.add_argument(
        "--segment", type=POSITIVE_INT, default=defaults.segment, help="targets per step (default: %(default)s)"
    )
    dynamic.add_argument(
        "--dynamic-lr", type=NONNEGATIVE_FLOAT, default=defaults.lr, help="step size (default: %(default)s)"
    )
    dynamic.add_argument(
        "--dynamic-decay",
        type=NONNEGATIVE_FLOAT,
        default=defaults.decay,
        help="pull toward the trained weights per step, in [0, 1] (default: %(default)s)",
    )
    dynamic.add_argument("--dynamic-rule", choices=RULES, default=defaults.rule, help="update (default: %(default)s)")
    return parser


def settings_from_args(args) -> DynamicSettings | None:
    """The dynamic evaluation's settings, or None for the static protocol."""
    if not args.dynamic:
        return None
    return DynamicSettings(args.segment, args.dynamic_lr, args.dynamic_decay, args.dynamic_rule)


def main(argv: Sequence[str] | None = None) -> int:
    """``evaluate``: print the held-out loss, perplexity, bpc and positions of a checkpoint."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_command(parser, lambda: evaluate(args))


def evaluate(args) -> None:
    """The work of ``evaluate``: check the arguments, score, print; raise ``NonFiniteLossError``
    (after printing) if the figures are not finite."""
    with command_line_values():
        device = resolve_device(args.device)
        dynamic = settings_from_args(args)
    model, vocab = model_from_checkpoint(args.checkpoint, device)
    text = load_text(args.data)
    try:
        ids = vocab.encode(text)
    except ValueError as error:
        raise DataError(
            f"the data does not fit checkpoint {args.checkpoint}: {str(error).removeprefix('CharVocab.encode: ')}"
        ) from None
    train_ids, val_ids = split_ids(ids)
    if dynamic is None:
        result = heldout_loss(model, train_ids, val_ids, model.config.context, args.batch_size)
    else:
        result = dynamic_heldout(model, train_ids, val_ids, dynamic)
    mode = "static" if dynamic is None else "dynamic"
    problem = non_finite_problem(result, dynamic)
    if args.json:
        extra = {} if dynamic is None else {"dynamic": dynamic.to_dict()}
        print(dumps({"mode": mode, **result.to_dict(), **extra}, reason=None if problem is None else problem[0]))
    else:
        print(
            f"val loss {result.loss:.4f} nats/char ({mode}), perplexity {result.perplexity:.3f}, "
            f"{result.bpc:.4f} bits/char over {result.positions:,} positions"
        )
    if problem is not None:
        raise NonFiniteLossError(problem[1])


def non_finite_problem(result: HeldoutResult, dynamic: DynamicSettings | None) -> tuple[str, str] | None:
    """None if every figure is finite; else why not, short (the JSON's reason), and in one line
    that says what to do (the error line)."""
    if all(math.isfinite(x) for x in (result.loss, result.perplexity, result.bpc)):
        return None
    beyond = ", perplexity beyond float64" if math.isfinite(result.loss) else ""
    seen = f"val loss {result.loss:.4g} nats/char{beyond}"
    if dynamic is None:
        why = "the held-out figures are not finite"
        return why, f"{why} ({seen}); the checkpoint's weights may hold NaN or infinity"
    why = "dynamic evaluation diverged"
    return why, (
        f"{why} ({seen}); try a smaller --dynamic-lr (this run: {dynamic.lr:g}, default {DynamicSettings().lr:g})"
    )
