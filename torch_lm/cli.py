"""Command-line front-ends (docs/DESIGN.md §6): ``train_main``, ``evaluate_main``, ``generate_main``,
``download_main``; ``scripts/*.py`` and the ``torch-lm-*`` console scripts call these.

SIDE-ONLY: this module exists in ``torch_lm`` only (docs/DESIGN.md §1).

Every failure is one line on stderr, ``<prog>: error: <what went wrong and what to do>``, never
a traceback. Exit codes:

* 2 — the command line itself is wrong (argparse style): a malformed or out-of-range value,
  an unknown or unavailable device, a prompt with characters outside the vocabulary;
* 1 — running failed: the text is missing (offline) or corrupt, a checkpoint is unreadable or
  does not fit the data, the loss diverged, a file could not be written;
* 130 — interrupted by SIGINT (Ctrl-C), 143 by SIGTERM; training saved ``last.pt`` first.

Defaults are not written here: every training flag defaults to the ``ModelConfig`` /
``TrainConfig`` field of the same name (shown in ``--help``). With ``--resume`` the defaults are
the checkpoint's own settings instead, so ``train.py --run-dir R --resume`` continues run R
unchanged, and any flag given explicitly overrides (a model flag must agree with the checkpoint).

``torchrun --nproc_per_node=K scripts/train.py ...`` runs the same training data-parallel
(``torch_lm.distributed``): ``--batch-size`` stays the global batch (it must be divisible by K),
rank 0 alone prints the progress and the summary and writes the run directory. Every rank
reports its own failures, tagged ``train.py[rank r]`` for r > 0, except those all ranks meet
together (interrupt, non-finite loss), which rank 0 alone reports.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from numpy_ref.config import ACTIVATIONS, ModelConfig
from numpy_ref.validation import check_positive_float, check_positive_int
from torch_lm.allocator import keep_freed_memory
from torch_lm.checkpoint import (LAST, CheckpointError, checkpoint_model_config,
                                 checkpoint_vocab, load_checkpoint, load_model_state)
from torch_lm.data import (DEFAULT_DATA_PATH, TINY_SHAKESPEARE_URL, CharVocab, DataError,
                           download, heldout_loss, install_from, load_text, split_ids,
                           verify_checksum)
from torch_lm.distributed import (DistEnv, DistributedError, check_batch_divisible,
                                  distributed_session)
from torch_lm.neural_lm import NeuralLM
from torch_lm.train import (DTYPES, NonFiniteLossError, TrainConfig, TrainingInterrupted,
                            rank_device, resolve_device, sample_prompt, train)

MODEL_FLAGS = ("context", "embed_dim", "hidden_dim", "fusion", "n_blocks", "activation", "norm",
               "dropout")
EXIT_USAGE, EXIT_FAILURE, EXIT_INTERRUPTED = 2, 1, 130


class OneLineParser(argparse.ArgumentParser):
    """argparse with one-line errors: ``<prog>: error: <message>`` and exit code 2, no usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def fail(parser: argparse.ArgumentParser, message: str, code: int) -> int:
    """Print ``<prog>: error: <message>`` (first line only) to stderr and return ``code``."""
    first_line = str(message).strip().splitlines()[0] if str(message).strip() else "failed"
    print(f"{parser.prog}: error: {first_line}", file=sys.stderr)
    return code


# ---------------------------------------------------------------------------------------------
# argparse value types: parse, then apply the project's validation helpers
# ---------------------------------------------------------------------------------------------

def checked(parse: Callable[[str], Any], check: Callable[[str, str, Any], Any], what: str
            ) -> Callable[[str], Any]:
    """An argparse ``type`` that parses a string and validates it with a ``validation`` helper."""
    def convert(text: str) -> Any:
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        try:
            return check("", "value", value)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error).removeprefix(": ")) from None
    return convert


def int_list(text: str) -> tuple[int, ...]:
    """``"2,2,2"`` -> ``(2, 2, 2)``; ``""`` or ``"none"`` -> ``()`` (the flat MLP)."""
    if text.strip().lower() in ("", "none"):
        return ()
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 2,2,2, "
                                         f"got {text!r}") from None


def float_pair(text: str) -> tuple[float, float]:
    """``"0.9,0.99"`` -> ``(0.9, 0.99)``."""
    try:
        first, second = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two comma-separated numbers such as "
                                         f"0.9,0.99, got {text!r}") from None
    return first, second


POSITIVE_INT = checked(int, check_positive_int, "a positive integer")
POSITIVE_FLOAT = checked(float, check_positive_float, "a positive number")


# ---------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------

def train_parser() -> OneLineParser:
    """The parser of ``train.py``; every flag defaults to 'not given' (see the module docstring)."""
    model, run = ModelConfig(), TrainConfig()
    parser = OneLineParser(
        prog="train.py", argument_default=argparse.SUPPRESS,
        description="Train the character NeuralLM on Tiny Shakespeare (TensorBoard events, "
                    "last.pt and best.pt in --run-dir). Defaults come from ModelConfig and "
                    "TrainConfig; with --resume, from the checkpoint.")
    parser.add_argument("--data", metavar="PATH",
                        help=f"text file to train on (default: {DEFAULT_DATA_PATH}, downloaded "
                             f"and verified if absent)")
    m = parser.add_argument_group("model (ModelConfig)")
    m.add_argument("--context", type=int, help=f"characters of context (default: {model.context})")
    m.add_argument("--embed-dim", type=int, help=f"character vector size (default: {model.embed_dim})")
    m.add_argument("--hidden-dim", type=int, help=f"hidden width (default: {model.hidden_dim})")
    m.add_argument("--fusion", type=int_list, metavar="G,G,...",
                   help="group sizes of the hierarchical fusion levels, product = context, e.g. "
                        "2,2,2; 'none' for the flat MLP (default: groups of 8 characters, then "
                        f"all groups, for a context that is a multiple of 8 above 8: "
                        f"{','.join(map(str, model.fusion))} at context {model.context}; flat otherwise)")
    m.add_argument("--n-blocks", type=int, help=f"residual blocks (default: {model.n_blocks})")
    m.add_argument("--activation", choices=ACTIVATIONS,
                   help=f"hidden activation (default: {model.activation})")
    m.add_argument("--norm", action=argparse.BooleanOptionalAction,
                   help=f"LayerNorm in every hidden layer (default: {model.norm})")
    m.add_argument("--dropout", type=float, help=f"dropout probability (default: {model.dropout})")
    t = parser.add_argument_group("training (TrainConfig)")
    t.add_argument("--batch-size", type=int, help=f"global batch size (default: {run.batch_size})")
    t.add_argument("--lr", type=float, help=f"peak learning rate (default: {run.lr})")
    t.add_argument("--min-lr", type=float, help=f"final learning rate (default: {run.min_lr})")
    t.add_argument("--warmup-steps", type=int, help=f"linear warmup steps (default: {run.warmup_steps})")
    t.add_argument("--weight-decay", type=float,
                   help=f"AdamW weight decay of the weight matrices (default: {run.weight_decay})")
    t.add_argument("--betas", type=float_pair, metavar="B1,B2",
                   help=f"AdamW betas (default: {','.join(map(str, run.betas))})")
    t.add_argument("--grad-clip", type=float, help=f"max gradient norm, 0 = off (default: {run.grad_clip})")
    t.add_argument("--max-steps", type=int, help=f"optimizer steps (default: {run.max_steps})")
    t.add_argument("--time-budget", type=float, metavar="SEC",
                   help=f"stop after SEC seconds, 0 = no limit (default: {run.time_budget})")
    t.add_argument("--eval-interval", type=int, help=f"steps between evaluations (default: {run.eval_interval})")
    t.add_argument("--log-interval", type=int, help=f"steps between log lines (default: {run.log_interval})")
    t.add_argument("--checkpoint-interval", type=int, metavar="N",
                   help=f"also save last.pt every N steps, 0 = only at evaluations (default: "
                        f"{run.checkpoint_interval})")
    t.add_argument("--holdout-tail", type=int, metavar="N",
                   help=f"leave the last N train characters out of training, to tune something on "
                        f"them (default: {run.holdout_tail})")
    t.add_argument("--eval-batch-size", type=int,
                   help=f"windows per forward in evaluation (default: {run.eval_batch_size})")
    t.add_argument("--sample-length", type=int,
                   help=f"characters sampled at every evaluation (default: {run.sample_length})")
    t.add_argument("--seed", type=int, help=f"seed of initialisation, batches, dropout (default: {run.seed})")
    t.add_argument("--device", help=f"auto, cpu, cuda or cuda:N (default: {run.device})")
    t.add_argument("--dtype", choices=sorted(DTYPES), help=f"parameter dtype (default: {run.dtype})")
    t.add_argument("--run-dir", help=f"output directory (default: {run.run_dir})")
    t.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt")
    t.add_argument("--compile", action=argparse.BooleanOptionalAction,
                   help=f"torch.compile the model (default: {run.compile})")
    t.add_argument("--fused-optimizer", action=argparse.BooleanOptionalAction,
                   help=f"AdamW's fused kernel where torch has one; --no-fused-optimizer takes the "
                        f"op-by-op path that numpy_ref.optim mirrors (default: {run.fused_optimizer})")
    return parser


def configs_from_args(args: argparse.Namespace) -> tuple[ModelConfig, TrainConfig]:
    """The configs: defaults (or the checkpoint's, with ``--resume``) overlaid with the given flags.

    Raises ``ValueError`` for bad values and ``CheckpointError`` if ``--resume`` finds no usable
    checkpoint. ``vocab_size`` is provisional until the text is read.
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
    model_config = ModelConfig.from_dict({**model_base, **model_flags})
    train_config = TrainConfig.from_dict({**train_base, **train_flags,
                                          "resume": bool(given.get("resume"))})
    return model_config, train_config


def train_main(argv: Sequence[str] | None = None) -> int:
    """``train.py``: parse, check, read the text, train (as one rank under torchrun); print a
    one-line summary."""
    parser = train_parser()
    try:
        env = DistEnv.from_env()
    except ValueError as error:
        return fail(parser, str(error), EXIT_USAGE)
    if not env.is_main:
        parser.prog = f"{parser.prog}[rank {env.rank}]"
    args = parser.parse_args(argv)
    try:
        model_config, train_config = configs_from_args(args)
        check_batch_divisible(train_config.batch_size, env.world_size)
        device = rank_device(train_config.device, env)
    except CheckpointError as error:
        return fail(parser, str(error), EXIT_FAILURE)
    except ValueError as error:
        return fail(parser, str(error), EXIT_USAGE)
    try:
        text = load_text(getattr(args, "data", None))
        model_config = replace(model_config, vocab_size=len(CharVocab.from_text(text)))
        keep_freed_memory()  # no page faults for each step's fresh tensors (torch_lm/allocator.py)
        with distributed_session(env, device) as distributed:
            summary = train(model_config, train_config, text, distributed)
    except TrainingInterrupted as stop:  # every rank stopped at this step; rank 0 saved
        code = 128 + stop.signum  # the shell's convention: 130 after Ctrl-C, 143 after SIGTERM
        return fail(parser, str(stop), code) if env.is_main else code
    except KeyboardInterrupt:
        return fail(parser, "interrupted", EXIT_INTERRUPTED)
    except NonFiniteLossError as error:  # agreed on by every rank
        return fail(parser, str(error), EXIT_FAILURE) if env.is_main else EXIT_FAILURE
    except (DataError, CheckpointError, DistributedError, OSError) as error:
        return fail(parser, str(error), EXIT_FAILURE)
    except ValueError as error:
        return fail(parser, str(error), EXIT_USAGE)
    if not env.is_main:
        return 0
    print(f"{summary['status']}: {summary['steps']} steps, val loss {summary['val_loss']:.4f} "
          f"nats/char (perplexity {summary['val_ppl']:.3f}, {summary['bpc']:.3f} bpc), best "
          f"{summary['best_val_loss']:.4f}; checkpoints and events in {summary['run_dir']}")
    return 0


# ---------------------------------------------------------------------------------------------
# evaluate and generate: both start from a checkpoint
# ---------------------------------------------------------------------------------------------

def model_from_checkpoint(path: str, device: torch.device) -> tuple[NeuralLM, CharVocab]:
    """The checkpoint's model (in its saved dtype, on ``device``, eval mode) and vocabulary."""
    checkpoint = load_checkpoint(path)
    model = NeuralLM(checkpoint_model_config(checkpoint))
    # Load into parameters of the dtype it was trained in, so float64 weights stay float64.
    model.to(DTYPES.get(checkpoint["train_config"].get("dtype"), torch.float32))
    load_model_state(path, model, checkpoint)
    return model.to(device).eval(), checkpoint_vocab(checkpoint)


def evaluate_parser() -> OneLineParser:
    """The parser of ``evaluate.py``."""
    parser = OneLineParser(prog="evaluate.py",
                           description="Held-out protocol of docs/DESIGN.md §3 on a checkpoint: mean "
                                       "loss over every val position (nats/char), perplexity, "
                                       "bits per character.")
    parser.add_argument("--checkpoint", required=True, metavar="PATH", help="a last.pt or best.pt")
    parser.add_argument("--json", action="store_true",
                        help='print {"val_loss", "val_ppl", "bpc", "positions"} as JSON')
    parser.add_argument("--data", metavar="PATH",
                        help=f"text file (default: {DEFAULT_DATA_PATH}, downloaded if absent)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--batch-size", type=POSITIVE_INT, default=TrainConfig().eval_batch_size,
                        help="windows per forward (default: %(default)s)")
    return parser


def evaluate_main(argv: Sequence[str] | None = None) -> int:
    """``evaluate.py``: print the held-out loss, perplexity, bpc and positions of a checkpoint."""
    parser = evaluate_parser()
    args = parser.parse_args(argv)
    try:
        device = resolve_device(args.device)
    except ValueError as error:
        return fail(parser, str(error), EXIT_USAGE)
    try:
        model, vocab = model_from_checkpoint(args.checkpoint, device)
        text = load_text(args.data)
        try:
            ids = vocab.encode(text)
        except ValueError as error:
            raise DataError(f"the data does not fit checkpoint {args.checkpoint}: "
                            f"{str(error).removeprefix('CharVocab.encode: ')}") from None
        train_ids, val_ids = split_ids(ids)
        result = heldout_loss(model, train_ids, val_ids, model.config.context, args.batch_size,
                              device)
    except KeyboardInterrupt:
        return fail(parser, "interrupted", EXIT_INTERRUPTED)
    except (DataError, CheckpointError, OSError, ValueError) as error:
        return fail(parser, str(error), EXIT_FAILURE)
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(f"val loss {result.loss:.4f} nats/char, perplexity {result.perplexity:.3f}, "
              f"{result.bpc:.4f} bits/char over {result.positions:,} positions")
    return 0


def generate_parser() -> OneLineParser:
    """The parser of ``generate.py``."""
    parser = OneLineParser(prog="generate.py", description="Sample text from a checkpoint.")
    parser.add_argument("--checkpoint", required=True, metavar="PATH", help="a last.pt or best.pt")
    parser.add_argument("--prompt", default=None,
                        help="text to continue (default: a newline, the start of a speech)")
    parser.add_argument("--length", type=POSITIVE_INT, default=500,
                        help="characters to generate (default: %(default)s)")
    parser.add_argument("--temperature", type=POSITIVE_FLOAT, default=1.0,
                        help="softmax temperature; < 1 is more conservative (default: %(default)s)")
    parser.add_argument("--top-k", type=POSITIVE_INT, default=None,
                        help="sample only among the K most likely characters (default: all)")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed for reproducible samples (default: fresh randomness)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    return parser


def generate_main(argv: Sequence[str] | None = None) -> int:
    """``generate.py``: print the prompt followed by ``--length`` sampled characters."""
    parser = generate_parser()
    args = parser.parse_args(argv)
    try:
        device = resolve_device(args.device)
    except ValueError as error:
        return fail(parser, str(error), EXIT_USAGE)
    try:
        model, vocab = model_from_checkpoint(args.checkpoint, device)
    except (CheckpointError, OSError) as error:
        return fail(parser, str(error), EXIT_FAILURE)
    prompt = sample_prompt(vocab) if args.prompt is None else args.prompt
    try:
        prompt_ids = vocab.encode(prompt).to(device)[None]  # (1, len(prompt))
    except ValueError as error:
        return fail(parser, f"--prompt: {str(error).removeprefix('CharVocab.encode: ')}",
                    EXIT_USAGE)
    generator = torch.Generator(device)
    if args.seed is None:
        generator.seed()
    else:
        generator.manual_seed(args.seed)
    ids = model.generate(prompt_ids, args.length, temperature=args.temperature,
                         top_k=args.top_k, generator=generator)
    print(vocab.decode(ids[0]))
    return 0


# ---------------------------------------------------------------------------------------------
# download
# ---------------------------------------------------------------------------------------------

def download_parser() -> OneLineParser:
    """The parser of ``download_data.py``."""
    parser = OneLineParser(prog="download_data.py",
                           description="Put Tiny Shakespeare into data/ and verify its sha256.")
    parser.add_argument("--from", dest="source", metavar="FILE",
                        help="install a local copy instead of downloading (also verified)")
    parser.add_argument("--dest", default=str(DEFAULT_DATA_PATH), metavar="PATH",
                        help="where to put the text (default: %(default)s)")
    parser.add_argument("--url", default=TINY_SHAKESPEARE_URL,
                        help="download from this URL, e.g. a mirror (default: the char-rnn copy)")
    return parser


def download_main(argv: Sequence[str] | None = None) -> int:
    """``download_data.py``: install (``--from``) or download the text, verified, atomically."""
    parser = download_parser()
    args = parser.parse_args(argv)
    dest = Path(args.dest)
    try:
        if args.source is not None:
            install_from(args.source, dest)
            print(f"installed {args.source} as {dest} (sha256 verified)")
            return 0
        if dest.is_file():
            try:
                verify_checksum(dest.read_bytes(), str(dest))
                print(f"{dest} is already present (sha256 verified)")
                return 0
            except DataError:
                print(f"{dest} has the wrong checksum; downloading a fresh copy", file=sys.stderr)
        download(dest, args.url)
        print(f"downloaded {args.url} to {dest} (sha256 verified)")
    except KeyboardInterrupt:
        return fail(parser, "interrupted", EXIT_INTERRUPTED)
    except (DataError, OSError) as error:
        return fail(parser, str(error), EXIT_FAILURE)
    return 0
