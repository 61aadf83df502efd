"""2-D projections of a few vectors (the character embeddings, Exercise 3.9): PCA and exact t-SNE.

NumPy-only analysis with no torch twin: it runs on weights after training and has no gradient
to compare, so there is nothing for a second engine to prove (``scripts/plot_embeddings.py``
uses it). It lives in ``numpy_ref`` because it is plain NumPy that can be read on its own.

**PCA** (``pca``): centre the rows, take the SVD ``Xc = U S Vt``; the principal directions are
the rows of ``Vt`` (the eigenvectors of the covariance ``Xc.T Xc / (n - 1)``, with eigenvalues
``S**2 / (n - 1)``), and the projection is ``Xc @ Vt[:k].T = U[:, :k] S[:k]``. The sign of each
direction is fixed (largest-magnitude entry positive) so the plot is reproducible.

**t-SNE** (``tsne``; van der Maaten & Hinton 2008), exact, O(n^2) per iteration, which is nothing
for 65 points (Barnes-Hut approximations only pay off for thousands):

1. For every point i, a Gaussian over the others, p(j|i) ~ exp(-beta_i ||x_i - x_j||^2), with the
   precision beta_i found by binary search so that the distribution's perplexity
   exp(H(P_i)) equals ``perplexity`` (an effective number of neighbours): dense regions get a
   narrow kernel, sparse ones a wide one.
2. Symmetrise: p_ij = (p(j|i) + p(i|j)) / 2n, so every point contributes to the cost.
3. In 2-D, a Student-t (one degree of freedom) similarity q_ij ~ (1 + ||y_i - y_j||^2)^-1,
   whose heavy tail lets moderately distant points sit far apart (no "crowding").
4. Minimise KL(P || Q) by gradient descent, dC/dy_i = 4 sum_j (p_ij - q_ij)(y_i - y_j)/(1 + d_ij^2),
   on scikit-learn's schedule for its exact method (``sklearn.manifold.TSNE(method="exact")``),
   so that the two can be cross-checked on the same points:

   * start from the PCA projection scaled so its first coordinate has standard deviation 1e-4
     (deterministic, and it keeps the global layout, which a random start leaves to chance);
   * the learning rate ``"auto"`` is max(n / early_exaggeration / 4, 50);
   * 250 iterations with P multiplied by ``early_exaggeration`` (12) and momentum 0.5, then the
     rest with momentum 0.8, **each phase starting from a zero update and unit gains**: a velocity
     built up under the exaggerated attraction and carried into the phase where that attraction
     is gone throws the clusters apart, and they may never come back (``docs/tsne.md``);
   * per-coordinate adaptive gains (delta-bar-delta), floored at 0.01;
   * at most ``n_iter`` iterations (2000; scikit-learn's default is 1000, which leaves a point
     thrown far out early still on its slow way back on the character embeddings), stopping
     once 300 iterations bring no lower KL.

Why keep it beside scikit-learn (which the report's figure uses): the exact algorithm for 65
points is ~50 lines of NumPy that can be read and tested on its own (calibrated perplexities,
gradient against central differences, separated clusters stay separated); the tests check that
it reaches scikit-learn's KL within a stated margin and the same trustworthiness.
"""

from __future__ import annotations

import numbers

import numpy as np

from numpy_ref.validation import check_ndim, check_positive_int, fail

_BETA_SEARCH_STEPS = 100  # bisection on log(beta): ~1e-30 relative precision, far below the tolerance
_PERPLEXITY_TOLERANCE = 1e-5  # |H - log(perplexity)| in nats at which the search stops
_P_FLOOR = 1e-12  # keeps log(p / q) finite for pairs the Gaussian gives 0


def _check_points(where: str, x) -> np.ndarray:
    """x as a float64 (n, d) array with n >= 2 finite rows."""
    x = np.asarray(x, dtype=np.float64)
    check_ndim(where, "x", x.shape, (2,))
    if x.shape[0] < 2 or x.shape[1] < 1:
        fail(where, f"x must hold at least 2 points of at least 1 dimension, got shape {x.shape}")
    if not np.isfinite(x).all():
        fail(where, "x must be finite (no NaN or inf)")
    return x


# ----------------------------------------------------------------------------- PCA
def pca(x, k: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Principal components of the rows of x (n, d).

    Returns ``(projected (n, k), components (k, d), explained_variance_ratio (k,))``: the centred
    rows projected on the first k directions, those unit directions (rows, orthonormal, each
    signed so its largest-magnitude entry is positive), and the share of the total variance each
    explains.
    """
    where = "pca"
    x = _check_points(where, x)
    k = check_positive_int(where, "k", k)
    if k > min(x.shape):
        fail(where, f"k must be at most min(n, d) = {min(x.shape)} for x of shape {x.shape}, got {k}")
    centred = x - x.mean(axis=0)  # (n, d)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)  # s (r,), vt (r, d)
    components = vt[:k]  # (k, d)
    rows = np.arange(k)
    components = components * np.sign(components[rows, np.abs(components).argmax(axis=1)])[:, None]
    variance = s**2
    total = variance.sum()
    ratio = variance[:k] / total if total > 0 else np.zeros(k)
    return centred @ components.T, components, ratio  # (n, k)


# ----------------------------------------------------------------------------- t-SNE
def squared_distances(x: np.ndarray) -> np.ndarray:
    """||x_i - x_j||^2 for every pair: x (n, d) -> (n, n), exactly 0 on the diagonal, >= 0."""
    sq = (x**2).sum(axis=1)
    d = sq[:, None] + sq[None, :] - 2.0 * x @ x.T  # (n, n)
    np.fill_diagonal(d, 0.0)
    return np.maximum(d, 0.0)  # rounding can dip below 0


def conditional_probabilities(distances: np.ndarray, perplexity: float) -> np.ndarray:
    """p(j|i) for every i, each row's Gaussian precision set by binary search on its perplexity.

    distances (n, n) squared distances -> (n, n), rows summing to 1, zero diagonal; each row's
    entropy H = -sum p log p is within 1e-5 nats of log(perplexity).
    """
    n = distances.shape[0]
    target = np.log(perplexity)
    probs = np.zeros((n, n))
    for i in range(n):
        d = np.delete(distances[i], i)
        d = d - d.min()  # shifting all distances leaves p(j|i) unchanged, avoids underflow
        low, high = -np.inf, np.inf  # bounds on log(beta)
        log_beta = -np.log(max(np.mean(d), 1e-12))
        for _ in range(_BETA_SEARCH_STEPS):
            p = np.exp(-np.exp(log_beta) * d)
            p /= p.sum()
            entropy = -np.sum(p * np.log(np.maximum(p, 1e-300)))
            if abs(entropy - target) < _PERPLEXITY_TOLERANCE:
                break
            if entropy > target:  # too flat: sharpen (larger beta)
                low = log_beta
                log_beta = log_beta + 1.0 if high == np.inf else (log_beta + high) / 2
            else:
                high = log_beta
                log_beta = log_beta - 1.0 if low == -np.inf else (log_beta + low) / 2
        probs[i, np.arange(n) != i] = p
    return probs


def joint_probabilities(x: np.ndarray, perplexity: float) -> np.ndarray:
    """Symmetric p_ij = (p(j|i) + p(i|j)) / 2n, floored at 1e-12 off the diagonal: (n, n), sum ~1."""
    conditional = conditional_probabilities(squared_distances(x), perplexity)
    p = (conditional + conditional.T) / (2 * x.shape[0])
    p = np.maximum(p, _P_FLOOR)
    np.fill_diagonal(p, 0.0)
    return p


def kl_and_gradient(p: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """KL(P || Q) of the embedding y (n, 2) and its gradient (n, 2), Q the Student-t similarities."""
    kernel = 1.0 / (1.0 + squared_distances(y))  # (n, n)
    np.fill_diagonal(kernel, 0.0)
    q = np.maximum(kernel / kernel.sum(), _P_FLOOR)
    off_diagonal = ~np.eye(len(y), dtype=bool)
    kl = float(np.sum(p[off_diagonal] * np.log(p[off_diagonal] / q[off_diagonal])))
    weights = (p - kernel / kernel.sum()) * kernel  # (n, n)
    gradient = 4.0 * (weights.sum(axis=1)[:, None] * y - weights @ y)  # sum_j w_ij (y_i - y_j)
    return kl, gradient


def pca_initialisation(x: np.ndarray) -> np.ndarray:
    """The first two principal coordinates of x (n, d), scaled so the first has std 1e-4: (n, 2)."""
    y, _, _ = pca(x, k=min(2, *x.shape))
    if y.shape[1] < 2:  # one input dimension: a flat second axis
        y = np.concatenate([y, np.zeros((len(y), 1))], axis=1)
    scale = y[:, 0].std()
    return y / scale * 1e-4 if scale > 0 else y


def auto_learning_rate(n: int, early_exaggeration: float) -> float:
    """scikit-learn's ``learning_rate="auto"``: max(n / early_exaggeration / 4, 50)."""
    return max(n / early_exaggeration / 4.0, 50.0)


def _descend(p: np.ndarray, y: np.ndarray, iterations: int, momentum: float, learning_rate: float) -> np.ndarray:
    """``iterations`` steps of momentum gradient descent with delta-bar-delta gains from y (n, 2)."""
    update, gains = np.zeros_like(y), np.ones_like(y)
    for _ in range(iterations):
        _, gradient = kl_and_gradient(p, y)
        # A coordinate whose gradient still points the way it moved (sign opposite to the last
        # update) gets a larger step; one whose gradient flipped, a smaller one.
        still_moving = update * gradient < 0.0
        gains = np.maximum(np.where(still_moving, gains + 0.2, gains * 0.8), 0.01)
        update = momentum * update - learning_rate * gains * gradient
        y = y + update
    return y


def tsne(
    x,
    perplexity: float = 15.0,
    seed: int = 0,
    n_iter: int = 2000,
    learning_rate: float | str = "auto",
    early_exaggeration: float = 12.0,
    exaggeration_iters: int = 250,
    init: str = "pca",
) -> tuple[np.ndarray, float]:
    """Exact t-SNE of the rows of x (n, d) into 2-D (see the module docstring).

    Returns ``(y (n, 2), kl)``: the embedding and its final KL(P || Q). ``init`` is ``"pca"``
    (deterministic; ``seed`` unused) or ``"random"`` (N(0, 1e-4) drawn with ``seed``). The same
    x, settings and seed give the same y, bit for bit. ``perplexity`` must lie in [1, n - 1).
    """
    where = "tsne"
    x = _check_points(where, x)
    n = x.shape[0]
    if isinstance(perplexity, bool) or not isinstance(perplexity, numbers.Real) or not 1.0 <= perplexity < n - 1:
        fail(where, f"perplexity must lie in [1, n - 1) = [1, {n - 1}) for {n} points, got {perplexity!r}")
    n_iter = check_positive_int(where, "n_iter", n_iter)
    if learning_rate == "auto":
        learning_rate = auto_learning_rate(n, early_exaggeration)
    if (isinstance(learning_rate, str) or not learning_rate > 0) or not early_exaggeration >= 1:
        fail(
            where,
            f"learning_rate must be > 0 or 'auto' and early_exaggeration >= 1, got "
            f"{learning_rate!r} and {early_exaggeration!r}",
        )
    if init not in ("pca", "random"):
        fail(where, f"init must be 'pca' or 'random', got {init!r}")
    p = joint_probabilities(x, perplexity)
    if init == "pca":
        y = pca_initialisation(x)
    else:
        y = np.random.default_rng(seed).normal(0.0, 1e-4, (n, 2))
    exaggerated = min(exaggeration_iters, n_iter)
    y = _descend(p * early_exaggeration, y, exaggerated, momentum=0.5, learning_rate=learning_rate)
    y = _descend(p, y, n_iter - exaggerated, momentum=0.8, learning_rate=learning_rate)
    y = y - y.mean(axis=0)
    return y, kl_and_gradient(p, y)[0]
