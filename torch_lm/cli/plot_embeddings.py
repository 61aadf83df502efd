"""``plot_embeddings``: the trained character embeddings projected to 2-D with PCA and t-SNE, as
labelled PNGs (``scripts/plot_embeddings.py``, ``torch-lm-plot-embeddings``); the plots are
``torch_lm.reports.embeddings``."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

from torch_lm.cli.parsing import OneLineParser, command_line_values, parser_for, run_command
from torch_lm.reports.embeddings import DEFAULT_PERPLEXITY, check_perplexity, embeddings, plot_embedding_maps
from torch_lm.training.checkpoint import DEFAULT_CHECKPOINT, require_checkpoint


def build_parser() -> OneLineParser:
    parser = parser_for(
        "plot_embeddings",
        description="The trained character embeddings projected to 2-D with PCA and t-SNE, as labelled PNGs.",
    )
    parser.add_argument(
        "--checkpoint",
        default=DEFAULT_CHECKPOINT,
        metavar="PATH",
        help="a NeuralLM last.pt or best.pt (default: %(default)s)",
    )
    parser.add_argument("--out-dir", default="reports", help="where the PNGs go (default: %(default)s)")
    parser.add_argument("--prefix", default="embeddings", help="file name prefix (default: %(default)s)")
    parser.add_argument(
        "--perplexity",
        type=float,
        default=DEFAULT_PERPLEXITY,
        help="t-SNE perplexity, in [1, V - 1) (default: %(default)s)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_command(parser, lambda: plot(args))


def plot(args) -> None:
    """The work of ``plot_embeddings``: read the embeddings, check the perplexity against their
    vocabulary, draw both maps."""
    began = time.perf_counter()
    weight, vocab = embeddings(require_checkpoint(args.checkpoint))
    with command_line_values():
        check_perplexity(args.perplexity, len(vocab))
    result = plot_embedding_maps(weight, vocab, args.out_dir, args.perplexity, args.prefix)
    print(
        f"wrote {result['pca_png']} and {result['tsne_png']} in {time.perf_counter() - began:.1f} s; "
        f"t-SNE KL {result['tsne_kl']:.4f} (NumPy reference {result['reference_tsne_kl']:.4f}), "
        f"trustworthiness {result['tsne_trustworthiness']:.4f} "
        f"({result['reference_tsne_trustworthiness']:.4f})",
        file=sys.stderr,
    )
