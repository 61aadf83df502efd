"""numpy_ref/projection.py (NumPy-only, no torch twin): PCA recovers a known rotation, t-SNE
calibrates its perplexities, its gradient matches central differences, it keeps well-separated
clusters apart, stays bounded and reaches scikit-learn's KL and trustworthiness whatever the last
bits of its input, and is deterministic; bad arguments are refused."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import manifold

from numpy_ref.gradcheck import numerical_gradient, rel_error
from numpy_ref.projection import (
    auto_learning_rate,
    conditional_probabilities,
    joint_probabilities,
    kl_and_gradient,
    pca,
    pca_initialisation,
    squared_distances,
    tsne,
)
from torch_lm.parity import assert_same

# The NumPy t-SNE and scikit-learn's exact t-SNE follow the same schedule but round differently
# (scikit-learn computes P in float32), and t-SNE is chaotic: the two land in different local
# optima of nearly the same quality. Measured over ten perturbed inputs (docs/tsne.md): |KL
# difference| <= 0.02 on the clusters below, <= 0.03 on the character embeddings; trustworthiness
# at most 0.01 lower.
KL_MARGIN = 0.05
TRUSTWORTHINESS_MARGIN = 0.02


def rotation(d: int, rng: np.random.Generator) -> np.ndarray:
    """A random d x d orthogonal matrix (QR of a Gaussian matrix)."""
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def test_pca_recovers_a_known_rotation():
    """Data with independent coordinates of std 5, 2, 0.5, rotated and shifted: PCA's directions
    are the rotated axes (up to sign), its scores the original coordinates, its ratios the variances."""
    rng = np.random.default_rng(0)
    latent = rng.standard_normal((500, 3)) * np.array([5.0, 2.0, 0.5])
    latent -= latent.mean(axis=0)
    latent = latent @ rotation(3, rng)  # make the sample axes exactly uncorrelated…
    _, _, vt = np.linalg.svd(latent, full_matrices=False)
    latent = latent @ vt.T  # …so the principal axes are e1, e2, e3
    r = rotation(3, rng)
    x = latent @ r.T + np.array([10.0, -3.0, 7.0])  # row i is R @ latent[i] + shift
    projected, components, ratio = pca(x, k=2)
    for j in range(2):
        sign = np.sign(components[j] @ r[:, j])
        np.testing.assert_allclose(components[j], sign * r[:, j], atol=1e-10)
        np.testing.assert_allclose(projected[:, j], sign * latent[:, j], atol=1e-9)
    variances = (latent**2).sum(axis=0)
    np.testing.assert_allclose(ratio, variances[:2] / variances.sum(), rtol=1e-10)
    np.testing.assert_allclose(components @ components.T, np.eye(2), atol=1e-12)


def test_pca_signs_are_fixed_so_plots_are_reproducible():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((30, 5))
    _, components, _ = pca(x, k=3)
    largest = components[np.arange(3), np.abs(components).argmax(axis=1)]
    assert (largest > 0).all()
    _, flipped, _ = pca(-x, k=3)  # negating the data flips every direction…
    np.testing.assert_allclose(flipped, components, atol=1e-12)  # …and the convention flips it back


@pytest.mark.parametrize("perplexity", [2.0, 5.0, 20.0])
def test_conditional_probabilities_hit_the_target_perplexity(perplexity):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((40, 6)) * rng.uniform(0.1, 10, (40, 1))  # very different densities
    p = conditional_probabilities(squared_distances(x), perplexity)
    entropy = -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0), axis=1)
    np.testing.assert_allclose(np.exp(entropy), perplexity, rtol=1e-4)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    assert np.all(np.diag(p) == 0)


def test_kl_gradient_matches_central_differences():
    rng = np.random.default_rng(3)
    p = joint_probabilities(rng.standard_normal((12, 4)), perplexity=4.0)
    y = rng.standard_normal((12, 2))
    _, gradient = kl_and_gradient(p, y)
    numerical = numerical_gradient(lambda _: kl_and_gradient(p, y)[0], y, h=1e-5)
    assert rel_error(numerical, gradient) < 1e-6


def clusters(seed: int = 0):
    """Four Gaussian clusters of 16 points in 16-D, centres ~40 apart, spread 1."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 10, (4, 16))
    x = np.concatenate([c + rng.standard_normal((16, 16)) for c in centres])
    return x, np.repeat(np.arange(4), 16)


def perturbed(x: np.ndarray, seed: int) -> np.ndarray:
    """x with every entry changed by about one part in 1e12 (seed 0: x itself)."""
    if seed == 0:
        return x
    return x * (1.0 + 1e-12 * np.random.default_rng(seed).standard_normal(x.shape))


def island_ratio(y: np.ndarray, labels: np.ndarray) -> float:
    """Closest distance between two clusters over the widest distance inside one."""
    d = np.sqrt(squared_distances(y))
    same = labels[:, None] == labels[None, :]
    np.fill_diagonal(same, False)
    return d[labels[:, None] != labels[None, :]].min() / d[same].max()


@pytest.mark.parametrize("learning_rate", ["auto", 100.0])
@pytest.mark.parametrize("perturbation", [0, 1, 2, 3, 4])
def test_tsne_keeps_well_separated_clusters_apart(perturbation, learning_rate):
    """Every cluster an island, and the embedding bounded, whatever the input's last bits (the
    trajectory itself is chaotic: these inputs take different paths to it), also at twice the
    "auto" learning rate, where a velocity carried across the end of the exaggeration would
    throw the clusters apart."""
    x, labels = clusters()
    y, kl = tsne(perturbed(x, perturbation), perplexity=10.0, learning_rate=learning_rate)
    assert island_ratio(y, labels) > 3
    assert np.abs(y).max() < 100  # a few cluster widths, not drifting apart
    assert 0 < kl < 0.3


@pytest.mark.parametrize("perturbation", [0, 1, 2])
def test_tsne_reaches_scikit_learns_kl_and_trustworthiness(perturbation):
    """The same points through scikit-learn's exact t-SNE (same schedule, PCA start, learning
    rate "auto"): final KL within KL_MARGIN, trustworthiness within TRUSTWORTHINESS_MARGIN."""
    x, _ = clusters()
    x = perturbed(x, perturbation)
    y, kl = tsne(x, perplexity=10.0)
    reference = manifold.TSNE(
        perplexity=10.0, init="pca", learning_rate="auto", method="exact", max_iter=2000, random_state=0
    )
    y_sklearn = reference.fit_transform(x)
    assert_same(kl, reference.kl_divergence_, "final KL", rtol=0.0, atol=KL_MARGIN)
    ours = manifold.trustworthiness(x, y, n_neighbors=5)
    theirs = manifold.trustworthiness(x, y_sklearn, n_neighbors=5)
    # One-sided: a better embedding than scikit-learn's is no failure.
    assert ours >= theirs - TRUSTWORTHINESS_MARGIN and ours > 0.95


def test_tsne_learning_rate_auto_and_pca_start_follow_scikit_learn():
    assert auto_learning_rate(65, 12.0) == 50.0  # small n: the floor
    assert auto_learning_rate(4800, 12.0) == 100.0  # n / 12 / 4
    x, _ = clusters()
    start, projected = pca_initialisation(x), pca(x)[0]
    np.testing.assert_allclose(start[:, 0].std(), 1e-4, rtol=1e-12)
    # scikit-learn's init="pca": the PCA scores divided by the std of the first, times 1e-4
    assert_same(start, projected / projected[:, 0].std() * 1e-4, "PCA start", rtol=1e-12, atol=0.0)


def test_tsne_is_deterministic():
    x, _ = clusters(seed=1)
    first, kl_first = tsne(x, perplexity=8.0, n_iter=300)
    again, kl_again = tsne(x, perplexity=8.0, n_iter=300)
    assert np.array_equal(first, again) and kl_first == kl_again
    random_first, _ = tsne(x, perplexity=8.0, seed=5, n_iter=300, init="random")
    random_again, _ = tsne(x, perplexity=8.0, seed=5, n_iter=300, init="random")
    other, _ = tsne(x, perplexity=8.0, seed=6, n_iter=300, init="random")
    assert np.array_equal(random_first, random_again)
    assert not np.allclose(random_first, other)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: pca(np.zeros(5)), "x must be 2-D"),
        (lambda: pca(np.zeros((1, 3))), "at least 2 points"),
        (lambda: pca(np.ones((4, 3)), k=4), "k must be at most"),
        (lambda: pca(np.array([[0.0, np.nan], [1.0, 2.0]])), "finite"),
        (lambda: tsne(np.ones((10, 3)), perplexity=9.0), r"perplexity must lie in .* = \[1, 9\)"),
        (lambda: tsne(np.ones((10, 3)), perplexity=0.5), "perplexity"),
        (lambda: tsne(np.ones((10, 3)), perplexity=3.0, n_iter=0), "n_iter"),
        (lambda: tsne(np.ones((10, 3)), perplexity=3.0, learning_rate=0.0), "learning_rate"),
        (lambda: tsne(np.ones((10, 3)), perplexity=3.0, learning_rate="fast"), "learning_rate"),
        (lambda: tsne(np.ones((10, 3)), perplexity=3.0, init="spectral"), "init must be"),
    ],
    ids=[
        "1-D",
        "one point",
        "k too big",
        "nan",
        "perplexity too big",
        "perplexity < 1",
        "n_iter 0",
        "lr 0",
        "lr word",
        "init",
    ],
)
def test_bad_arguments_are_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()
