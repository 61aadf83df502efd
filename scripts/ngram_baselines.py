"""Count n-gram baselines on Tiny Shakespeare under the held-out protocol (docs/DESIGN.md §3, §5).

Without ``--orders``/``--smoothing`` it reproduces the reference table of docs/DESIGN.md §5 (uniform,
unigram, unsmoothed bigram, add-k 4-gram, Kneser-Ney 3- and 6-gram, modified KN 7-gram); with
either, it runs every order x smoothing pair asked for. The models live in ``numpy_ref.ngram``
and ``torch_lm.ngram``; this script only reads the text, splits it and prints the table.

    python scripts/ngram_baselines.py
    python scripts/ngram_baselines.py --orders 3,5,7 --smoothing kn,mkn --engine torch --json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a clone without `pip install -e .`
    sys.path.insert(0, str(REPO))
DEFAULT_DATA = REPO / "data" / "tinyshakespeare.txt"
TRAIN_FRACTION = 0.9
SMOOTHINGS = ("addk", "kn", "mkn")
# docs/DESIGN.md §5: (label, order, smoothing, k, scored on); discount is --discount for every KN row
REFERENCE_MODELS = (
    ("unigram, unsmoothed", 1, "addk", 0.0, "val"),
    ("bigram, unsmoothed", 2, "addk", 0.0, "train"),
    ("bigram, unsmoothed", 2, "addk", 0.0, "val"),
    ("add-k 4-gram, k=0.1", 4, "addk", 0.1, "val"),
    ("interpolated KN 3-gram", 3, "kn", 0.0, "val"),
    ("interpolated KN 6-gram", 6, "kn", 0.0, "val"),
    ("modified KN 7-gram", 7, "mkn", 0.0, "val"),
)


def read_ids(path: Path) -> tuple[np.ndarray, int]:
    """Characters of a UTF-8 file as ids into its sorted character set: ((T,) int64, V)."""
    codepoints = np.frombuffer(path.read_text(encoding="utf-8").encode("utf-32-le"), dtype=np.uint32)
    vocab = np.unique(codepoints)
    return np.searchsorted(vocab, codepoints).astype(np.int64), len(vocab)


def _orders(text: str) -> list[int]:
    try:
        orders = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not orders or min(orders) < 1:
        raise argparse.ArgumentTypeError(f"every order must be >= 1, got {text!r}")
    return orders


def _smoothings(text: str) -> list[str]:
    names = text.split(",")
    unknown = [name for name in names if name not in SMOOTHINGS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown smoothing {unknown[0]!r}; "
                                         f"choose from {','.join(SMOOTHINGS)}")
    return names


def _number(text: str, low: float, high: float, closed_low: bool, what: str) -> float:
    """``text`` as a float in [low, high) (closed_low) or (low, high); else argparse's error."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (low <= value if closed_low else low < value) or not value < high:
        raise argparse.ArgumentTypeError(f"{what}, got {text!r}")
    return value


def _k(text: str) -> float:
    return _number(text, 0.0, math.inf, True, "k must be a finite number >= 0")


def _discount(text: str) -> float:
    return _number(text, 0.0, 1.0, False, "discount must lie in the open interval (0, 1)")


def _threads(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"threads must be a positive integer, got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="UTF-8 text file")
    parser.add_argument("--orders", type=_orders, help="comma-separated orders, e.g. 3,5,7 "
                        "(default with --smoothing: 3,5,7; neither: the docs/DESIGN.md §5 reference table)")
    parser.add_argument("--smoothing", type=_smoothings, help="comma-separated, from addk,kn,mkn "
                        "(default with --orders: mkn)")
    parser.add_argument("--k", type=_k, default=0.1, help="add-k pseudo-count (0 = unsmoothed)")
    parser.add_argument("--discount", type=_discount, default=0.75,
                        help="Kneser-Ney discount D (also modified KN's fallback)")
    parser.add_argument("--engine", choices=("numpy", "torch"), default="numpy")
    parser.add_argument("--device", default="cpu", help="torch device for --engine torch")
    parser.add_argument("--threads", type=_threads, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    return parser


def model_specs(args: argparse.Namespace) -> list[tuple[str, int, str, float, str]]:
    """(label, order, smoothing, k, scored on) for every row to run."""
    if args.orders is None and args.smoothing is None:
        return list(REFERENCE_MODELS)
    specs = []
    for smoothing in args.smoothing or ["mkn"]:
        label = f"add-k k={args.k:g}" if smoothing == "addk" else smoothing
        specs += [(f"{label} {order}-gram", order, smoothing, args.k, "val")
                  for order in args.orders or [3, 5, 7]]
    return specs


def make_engine(args: argparse.Namespace):
    """(model class, array converter) of the chosen engine; torch is imported only if asked for."""
    if args.engine == "numpy":
        from numpy_ref.ngram import NGramLM
        return NGramLM, np.asarray
    import torch
    from torch_lm.ngram import NGramLM
    if args.threads:
        torch.set_num_threads(args.threads)
    return NGramLM, lambda ids: torch.as_tensor(ids, device=args.device)


def run(args: argparse.Namespace) -> list[dict]:
    """Fit and score every requested model; one result dict per row."""
    ids, vocab_size = read_ids(args.data)
    n_train = int(TRAIN_FRACTION * len(ids))
    model_class, convert = make_engine(args)
    all_ids, train_ids = convert(ids), convert(ids[:n_train])
    rows = [{"model": "uniform", "order": 0, "smoothing": "none", "scored_on": "val",
             "loss": math.log(vocab_size), "seconds": 0.0}]
    for label, order, smoothing, k, scored_on in model_specs(args):
        began = time.perf_counter()
        model = model_class.fit(train_ids, order, vocab_size, smoothing, k=k, discount=args.discount)
        # held-out: score val with history from the end of train; in-sample: train after its first n-1
        loss = model.score(all_ids, n_train) if scored_on == "val" else model.score(train_ids, order - 1)
        rows.append({"model": label, "order": order, "smoothing": smoothing, "scored_on": scored_on,
                     "loss": loss, "seconds": time.perf_counter() - began})
    for row in rows:
        row.update(perplexity=math.exp(row["loss"]), bits_per_char=row["loss"] / math.log(2))
    return rows


def format_table(rows: list[dict]) -> str:
    lines = [f"{'model':<26} {'on':<5} {'nats/char':>9} {'ppl':>8} {'bits/char':>9} {'seconds':>8}"]
    lines += [f"{r['model']:<26} {r['scored_on']:<5} {r['loss']:>9.4f} {r['perplexity']:>8.2f} "
              f"{r['bits_per_char']:>9.4f} {r['seconds']:>8.2f}" for r in rows]
    return "\n".join(lines)


def to_json(rows: list[dict]) -> str:
    """Strict JSON: an infinite loss (a token of probability 0) becomes null, not Infinity."""
    return json.dumps([{key: None if isinstance(value, float) and not math.isfinite(value) else value
                        for key, value in row.items()} for row in rows], indent=2)


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.data.is_file():
        parser.error(f"--data: no file at {args.data}; run python scripts/download_data.py "
                     "or pass --data PATH")
    try:
        rows = run(args)
    except ValueError as error:  # the library's argument checks, e.g. a text shorter than the order
        parser.error(str(error))
    print(to_json(rows) if args.json else format_table(rows))


if __name__ == "__main__":
    sys.exit(main())
