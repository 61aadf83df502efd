"""numpy_ref/projection.py (NumPy-only, no torch twin): PCA recovers a known rotation, t-SNE
calibrates its perplexities, its gradient matches central differences, it keeps well-separated
clusters apart and is deterministic for a seed; bad arguments are refused."""

from __future__ import annotations

import numpy as np
import pytest

from numpy_ref.gradcheck import numerical_gradient, rel_error
from numpy_ref.projection import (conditional_probabilities, joint_probabilities, kl_and_gradient,
                                  pca, squared_distances, tsne)


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
    latent = latent @ rotation(3, rng)                     # make the sample axes exactly uncorrelated…
    _, _, vt = np.linalg.svd(latent, full_matrices=False)
    latent = latent @ vt.T                                 # …so the principal axes are e1, e2, e3
    r = rotation(3, rng)
    x = latent @ r.T + np.array([10.0, -3.0, 7.0])          # row i is R @ latent[i] + shift
    projected, components, ratio = pca(x, k=2)
    for j in range(2):
        sign = np.sign(components[j] @ r[:, j])
        np.testing.assert_allclose(components[j], sign * r[:, j], atol=1e-10)
        np.testing.assert_allclose(projected[:, j], sign * latent[:, j], atol=1e-9)
    variances = (latent ** 2).sum(axis=0)
    np.testing.assert_allclose(ratio, variances[:2] / variances.sum(), rtol=1e-10)
    np.testing.assert_allclose(components @ components.T, np.eye(2), atol=1e-12)


def test_pca_signs_are_fixed_so_plots_are_reproducible():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((30, 5))
    _, components, _ = pca(x, k=3)
    largest = components[np.arange(3), np.abs(components).argmax(axis=1)]
    assert (largest > 0).all()
    _, flipped, _ = pca(-x, k=3)                           # negating the data flips every direction…
    np.testing.assert_allclose(flipped, components, atol=1e-12)  # …and the convention flips it back


@pytest.mark.parametrize("perplexity", [2.0, 5.0, 20.0])
def test_conditional_probabilities_hit_the_target_perplexity(perplexity):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((40, 6)) * rng.uniform(0.1, 10, (40, 1))    # very different densities
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


def test_tsne_keeps_well_separated_clusters_apart():
    x, labels = clusters()
    y, kl = tsne(x, perplexity=10.0, seed=0)
    d = np.sqrt(squared_distances(y))
    same = labels[:, None] == labels[None, :]
    np.fill_diagonal(same, False)
    widest_cluster = d[same].max()
    closest_clusters = d[labels[:, None] != labels[None, :]].min()
    assert closest_clusters > 3 * widest_cluster           # every cluster is an island
    assert 0 < kl < 1


def test_tsne_is_deterministic_for_a_seed():
    x, _ = clusters(seed=1)
    first, kl_first = tsne(x, perplexity=8.0, seed=5, n_iter=300)
    again, kl_again = tsne(x, perplexity=8.0, seed=5, n_iter=300)
    other, _ = tsne(x, perplexity=8.0, seed=6, n_iter=300)
    assert np.array_equal(first, again) and kl_first == kl_again
    assert not np.allclose(first, other)


@pytest.mark.parametrize("call, message", [
    (lambda: pca(np.zeros(5)), "x must be 2-D"),
    (lambda: pca(np.zeros((1, 3))), "at least 2 points"),
    (lambda: pca(np.ones((4, 3)), k=4), "k must be at most"),
    (lambda: pca(np.array([[0.0, np.nan], [1.0, 2.0]])), "finite"),
    (lambda: tsne(np.ones((10, 3)), perplexity=9.0), r"perplexity must lie in .* = \[1, 9\)"),
    (lambda: tsne(np.ones((10, 3)), perplexity=0.5), "perplexity"),
    (lambda: tsne(np.ones((10, 3)), perplexity=3.0, n_iter=0), "n_iter"),
    (lambda: tsne(np.ones((10, 3)), perplexity=3.0, learning_rate=0.0), "learning_rate"),
], ids=["1-D", "one point", "k too big", "nan", "perplexity too big", "perplexity < 1", "n_iter 0", "lr 0"])
def test_bad_arguments_are_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()
