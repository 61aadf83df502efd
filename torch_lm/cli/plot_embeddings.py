"""``plot_embeddings``: the trained character embeddings projected to 2-D with PCA and t-SNE, as
labelled PNGs (``scripts/plot_embeddings.py``, ``torch-lm-plot-embeddings``); the plots are
``torch_lm.reports.embeddings``."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

from torch_lm.cli.parsing import EXIT_FAILURE, EXIT_USAGE, OneLineParser, fail, parser_for
from torch_lm.reports.embeddings import DEFAULT_PERPLEXITY, plot_embeddings
from torch_lm.training.checkpoint import DEFAULT_CHECKPOINT, CheckpointError


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
    began = time.perf_counter()
    try:
        result = plot_embeddings(args.checkpoint, args.out_dir, args.perplexity, args.prefix)
    except (CheckpointError, OSError) as error:
        return fail(parser, str(error), EXIT_FAILURE)
    except ValueError as error:
        return fail(parser, str(error), EXIT_USAGE)
    print(
        f"wrote {result['pca_png']} and {result['tsne_png']} in {time.perf_counter() - began:.1f} s; "
        f"t-SNE KL {result['tsne_kl']:.4f} (NumPy reference {result['reference_tsne_kl']:.4f}), "
        f"trustworthiness {result['tsne_trustworthiness']:.4f} "
        f"({result['reference_tsne_trustworthiness']:.4f})",
        file=sys.stderr,
    )
    return 0
