"""``generate``: sample text from a checkpoint (``scripts/generate.py``, ``torch-lm-generate``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from torch_lm.cli.parsing import (
    POSITIVE_FLOAT,
    POSITIVE_INT,
    OneLineParser,
    UsageError,
    command_line_values,
    parser_for,
    run_command,
)
from torch_lm.training.checkpoint import model_from_checkpoint
from torch_lm.training.config import resolve_device
from torch_lm.training.sampling import generate, sample_prompt


def build_parser() -> OneLineParser:
    """The parser of ``generate``."""
    parser = parser_for("generate", description="Sample text from a checkpoint.")
    parser.add_argument("--checkpoint", required=True, metavar="PATH", help="a last.pt or best.pt")
    parser.add_argument("--prompt", default=None, help="text to continue (default: a newline, the start of a speech)")
    parser.add_argument(
        "--length", type=POSITIVE_INT, default=500, help="characters to generate (default: %(default)s)"
    )
    parser.add_argument(
        "--temperature",
        type=POSITIVE_FLOAT,
        default=1.0,
        help="softmax temperature; < 1 is more conservative (default: %(default)s)",
    )
    parser.add_argument(
        "--top-k", type=POSITIVE_INT, default=None, help="sample only among the K most likely characters (default: all)"
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="seed for reproducible samples (default: fresh randomness)"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``generate``: print the prompt followed by ``--length`` sampled characters."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_command(parser, lambda: generate_text(args))


def generate_text(args) -> None:
    """The work of ``generate``: check the device, load the checkpoint, check the prompt against
    its vocabulary, sample and print."""
    with command_line_values():
        device = resolve_device(args.device)
    model, vocab = model_from_checkpoint(args.checkpoint, device)
    prompt = sample_prompt(vocab) if args.prompt is None else args.prompt
    try:
        prompt_ids = vocab.encode(prompt).to(device)[None]  # (1, len(prompt))
    except ValueError as error:
        raise UsageError(f"--prompt: {str(error).removeprefix('CharVocab.encode: ')}") from None
    generator = torch.Generator(device)
    if args.seed is None:
        generator.seed()
    else:
        generator.manual_seed(args.seed)
    ids = generate(model, prompt_ids, args.length, temperature=args.temperature, top_k=args.top_k, generator=generator)
    print(vocab.decode(ids[0]))
