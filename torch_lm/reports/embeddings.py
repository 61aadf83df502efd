"""Exercise 3.9: the trained character embeddings projected to 2-D with PCA and t-SNE, as labelled PNGs.

``scripts/plot_embeddings.py`` calls ``plot_embeddings``. PCA is the NumPy reference's
(``numpy_ref.projection.pca``, SVD); the t-SNE is scikit-learn's exact method (PCA start, learning
rate "auto"), the maintained implementation, and the NumPy reference's t-SNE runs beside it on the
same points as a cross-check: both KLs are in the figure's title and in the returned numbers.

Every point is labelled with the vocabulary's readable label (``<space>``, ``<newline>``) and
coloured by kind: vowels, consonants, capitals, digits, punctuation, whitespace, so one can see
whether the model put similar characters together (e.g. vowels apart from consonants, a capital
near its lower-case letter).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from numpy_ref.projection import pca, tsne
from torch_lm.training.checkpoint import CheckpointError, checkpoint_vocab, require_checkpoint
from torch_lm.training.vocab import CharVocab

CATEGORIES = ("vowel", "consonant", "capital", "digit", "punctuation", "whitespace")
DEFAULT_PERPLEXITY = 15.0
TSNE_ITERATIONS = 2000  # both t-SNEs stop earlier once 300 iterations bring no lower KL


def category(ch: str) -> str:
    """The kind of a character: vowel / consonant (lower-case letters), capital, digit,
    whitespace, or punctuation (everything else)."""
    if ch.isspace():
        return "whitespace"
    if ch.isdigit():
        return "digit"
    if ch.isalpha():
        if ch.isupper():
            return "capital"
        return "vowel" if ch in "aeiou" else "consonant"
    return "punctuation"


def embeddings(checkpoint: dict) -> tuple[np.ndarray, CharVocab]:
    """The character vectors (V, E) as float64 and the vocabulary of a checkpoint."""
    weight = checkpoint["model"].get("embedding.weight")
    if weight is None:
        raise CheckpointError("the checkpoint has no embedding.weight: not a NeuralLM checkpoint")
    return weight.detach().double().cpu().numpy(), checkpoint_vocab(checkpoint)


def plot_points(points: np.ndarray, vocab: CharVocab, title: str, path: str | Path) -> Path:
    """Scatter points (V, 2) coloured by ``category``, each labelled, with a legend; saved at ``path``."""
    from torch_lm.reports.figures import COLORS, figure, save

    chars = vocab.to_list()
    kinds = [category(ch) for ch in chars]
    fig, ax = figure(9.0, 7.5)
    for color, kind in zip(COLORS, CATEGORIES):
        chosen = [i for i, k in enumerate(kinds) if k == kind]
        if chosen:
            ax.scatter(points[chosen, 0], points[chosen, 1], s=28, color=color, label=kind, alpha=0.85)
    for i, ch in enumerate(chars):
        ax.annotate(
            vocab.label(ch),
            points[i],
            textcoords="offset points",
            xytext=(4, 3),
            fontsize=9,
            color=COLORS[CATEGORIES.index(kinds[i])],
        )
    ax.set_title(title)
    ax.grid(alpha=0.25)
    ax.legend(loc="best", fontsize=9)
    return save(fig, path)


def sklearn_tsne(x: np.ndarray, perplexity: float) -> tuple[np.ndarray, float]:
    """scikit-learn's exact t-SNE of the rows of x (n, d): ``(y (n, 2), final KL)``, with the
    NumPy reference's iteration budget (``TSNE_ITERATIONS``) so the two are compared like for like.
    Deterministic: the PCA start leaves nothing to a seed."""
    from sklearn.manifold import TSNE

    model = TSNE(
        n_components=2,
        perplexity=perplexity,
        init="pca",
        learning_rate="auto",
        method="exact",
        max_iter=TSNE_ITERATIONS,
        random_state=0,
    )
    return model.fit_transform(x).astype(np.float64), float(model.kl_divergence_)


def tsne_trustworthiness(x: np.ndarray, y: np.ndarray, neighbours: int = 5) -> float:
    """How well y (n, 2) keeps each point's ``neighbours`` nearest neighbours of x (n, d): 1 is perfect."""
    from sklearn.manifold import trustworthiness

    return float(trustworthiness(x, y, n_neighbors=neighbours))


def check_perplexity(perplexity: float, vocab_size: int) -> None:
    """Raise ``ValueError`` unless the t-SNE ``perplexity`` fits a vocabulary of ``vocab_size``
    characters: at least 1 and below V - 1."""
    if not 1.0 <= perplexity < vocab_size - 1:
        raise ValueError(
            f"--perplexity must lie in [1, {vocab_size - 1}) for this {vocab_size}-character "
            f"vocabulary, got {perplexity:g}"
        )


def plot_embeddings(
    checkpoint_path: str | Path, out_dir: str | Path, perplexity: float = DEFAULT_PERPLEXITY, prefix: str = "embeddings"
) -> dict:
    """Write ``<out_dir>/<prefix>_pca.png`` and ``..._tsne.png``; return their paths and the numbers.

    Raises ``CheckpointError`` for a missing or unusable checkpoint and ``ValueError`` when
    ``perplexity`` does not fit the vocabulary (``check_perplexity``).
    """
    weight, vocab = embeddings(require_checkpoint(checkpoint_path))
    check_perplexity(perplexity, len(vocab))
    return plot_embedding_maps(weight, vocab, out_dir, perplexity, prefix)


def plot_embedding_maps(
    weight: np.ndarray, vocab: CharVocab, out_dir: str | Path, perplexity: float, prefix: str = "embeddings"
) -> dict:
    """``plot_embeddings`` of character vectors weight (V, E) already read from a checkpoint."""
    projected, _, ratio = pca(weight, k=2)
    tsne_points, kl = sklearn_tsne(weight, perplexity)
    reference_points, reference_kl = tsne(weight, perplexity=perplexity, n_iter=TSNE_ITERATIONS)
    out_dir = Path(out_dir)
    pca_path = plot_points(
        projected,
        vocab,
        f"Character embeddings, PCA (PC1 {ratio[0]:.1%}, PC2 {ratio[1]:.1%} of the variance, E = {weight.shape[1]})",
        out_dir / f"{prefix}_pca.png",
    )
    tsne_path = plot_points(
        tsne_points,
        vocab,
        f"Character embeddings, t-SNE (scikit-learn, perplexity "
        f"{perplexity:g}, KL {kl:.3f}; NumPy reference KL "
        f"{reference_kl:.3f})",
        out_dir / f"{prefix}_tsne.png",
    )
    return {
        "pca_png": str(pca_path),
        "tsne_png": str(tsne_path),
        "explained_variance": ratio.tolist(),
        "tsne_kl": kl,
        "reference_tsne_kl": reference_kl,
        "tsne_trustworthiness": tsne_trustworthiness(weight, tsne_points),
        "reference_tsne_trustworthiness": tsne_trustworthiness(weight, reference_points),
        "pca": projected,
        "tsne": tsne_points,
        "reference_tsne": reference_points,
    }
