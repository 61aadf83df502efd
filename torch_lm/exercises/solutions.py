"""Reference solutions of both exercise sheets, under the names and signatures of the exercise
notebooks' stubs (``notebooks/exercises/``): what ``torch-lm-check`` passes in full.

Plain NumPy, one exercise per block, the line each exercise teaches written out rather than
imported from ``numpy_ref`` (the reference library organises the same mathematics by component,
with caches and input checks). ``python scripts/check.py torch_lm/exercises/solutions.py``
reports PASS for every exercise.
"""

from __future__ import annotations

import math

import numpy as np


# ----------------------------------------------------------------------------- Neural Networks
# nn1: the affine layer
def affine(x, W, b):
    """z = W x + b for one example: x (D_in,), W (D_out, D_in), b (D_out,) -> z (D_out,)."""
    return W @ x + b


# nn2: ReLU and its derivative
def relu(z):
    """max(0, z), entrywise."""
    return np.maximum(0.0, z)


def relu_derivative(z):
    """1 where z > 0, else 0 (at the kink z = 0 too, the convention torch follows)."""
    return (z > 0).astype(float)


# nn3: a two-layer forward pass
def two_layer_forward(x, W1, W2):
    """h = ReLU(W1 x), y = W2 h: x (D_in,), W1 (H, D_in), W2 (D_out, H) -> (h (H,), y (D_out,))."""
    h = np.maximum(0.0, W1 @ x)
    y = W2 @ h
    return h, y


# nn4: softmax cross-entropy
def softmax_cross_entropy(logits, target):
    """p = softmax(logits) and loss = -log p[target]: logits (V,), target an int -> (p (V,), loss)."""
    e = np.exp(logits - logits.max())  # the largest exponent is 0: nothing overflows
    p = e / e.sum()
    return p, -np.log(p[target])


# nn5: the affine layer's weight gradient
def affine_weight_grad(dZ, x):
    """dW = outer(dZ, x): dZ (D_out,), x (D_in,) -> dW (D_out, D_in), W's layout."""
    return np.outer(dZ, x)


# nn6: the central difference
def central_difference(f, w, eps):
    """(f(w + eps) - f(w - eps)) / (2 eps), the derivative of a scalar f at w with error O(eps²)."""
    return (f(w + eps) - f(w - eps)) / (2 * eps)


# nn7: initialisation scales
def xavier_std(fan_in, fan_out):
    """Glorot's std, sqrt(2 / (fan_in + fan_out)): keeps the variance of signals and gradients."""
    return math.sqrt(2 / (fan_in + fan_out))


def he_std(fan_in):
    """He's std, sqrt(2 / fan_in): a ReLU zeroes half the signal, so the variance is doubled."""
    return math.sqrt(2 / fan_in)


# nn8: inverted dropout
def inverted_dropout(h, mask, p_drop):
    """h * mask / (1 - p_drop): mask is 1 for a kept unit, so E[output] = h."""
    return h * mask / (1 - p_drop)


# nn9: LayerNorm of one vector
def layer_norm(x, eps=1e-5):
    """(x - mean) / sqrt(var + eps) with the biased variance (divide by D): x (D,) -> (D,)."""
    return (x - x.mean()) / np.sqrt(x.var() + eps)


# nn10: the diagnostics checklist
def diagnostics_checklist():
    """Four checks that catch most broken networks, from the input to the loss."""
    return [
        "the tensor shapes through every layer are the ones intended",
        "the model can overfit one tiny batch: its loss falls to about 0",
        "activation statistics are healthy: no layer dead or saturated",
        "the gradient norm of every layer is tracked and neither vanishes nor explodes",
    ]


# ----------------------------------------------------------------------------- Stage 3
# 3.5: an embedding layer
class Embedding:
    """A (vocab_size, dim) table: forward looks rows up, backward scatter-adds into W_grad."""

    def __init__(self, vocab_size: int, dim: int):
        self.W = np.random.randn(vocab_size, dim) * 0.01
        self.W_grad = np.zeros_like(self.W)

    def forward(self, indices: np.ndarray) -> np.ndarray:
        """indices [batch_size, seq_len] -> embeddings [batch_size, seq_len, dim]."""
        return self.W[indices]

    def backward(self, grad: np.ndarray, indices: np.ndarray) -> None:
        """Accumulate grad [batch_size, seq_len, dim] into W_grad: a repeated id adds every time."""
        np.add.at(self.W_grad, indices, grad)


# 3.6: a two-layer neural language model (Bengio et al. 2003)
class NeuralLM:
    """embedding -> flatten -> tanh hidden layer -> logits.

    The weights carry the optional names the checker reads for full parity with torch_lm's
    NeuralLM: ``embedding.W`` (V, E), ``W1`` (C*E, H), ``b1`` (H,), ``W2`` (H, V), ``b2`` (V,).
    """

    def __init__(self, vocab_size, embed_dim, hidden_dim, context_size, lr=0.1, seed=0):
        rng = np.random.default_rng(seed)
        self.embedding = Embedding(vocab_size, embed_dim)
        self.W1 = rng.standard_normal((context_size * embed_dim, hidden_dim)) / math.sqrt(context_size * embed_dim)
        self.b1 = np.zeros(hidden_dim)
        self.W2 = rng.standard_normal((hidden_dim, vocab_size)) * 0.01
        self.b2 = np.zeros(vocab_size)
        self.lr = lr

    def forward(self, context_indices):
        """context_indices [batch, context_size] -> logits [batch, vocab_size]."""
        self._indices = context_indices
        self._x = self.embedding.forward(context_indices).reshape(len(context_indices), -1)  # (B, C*E)
        self._h = np.tanh(self._x @ self.W1 + self.b1)  # (B, H)
        return self._h @ self.W2 + self.b2  # (B, V)

    def loss(self, logits, targets):
        """Mean cross-entropy of logits [batch, vocab] against targets [batch], by log-sum-exp."""
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        return -log_p[np.arange(len(targets)), targets].mean()

    def train_step(self, batch):
        """One SGD step on ``batch`` (``context`` [batch, context_size], ``targets`` [batch]);
        returns its mean loss before the step."""
        logits = self.forward(batch.context)
        loss = self.loss(logits, batch.targets)
        dlogits = np.exp(logits - logits.max(axis=1, keepdims=True))
        dlogits /= dlogits.sum(axis=1, keepdims=True)  # softmax: d loss / d logits = p - onehot
        dlogits[np.arange(len(batch.targets)), batch.targets] -= 1
        dlogits /= len(batch.targets)  # d mean loss / d logits
        dh = dlogits @ self.W2.T * (1 - self._h**2)  # back through tanh
        dx = dh @ self.W1.T
        self.embedding.W_grad = np.zeros_like(self.embedding.W)
        self.embedding.backward(dx.reshape(*self._indices.shape, -1), self._indices)
        self.W2 -= self.lr * self._h.T @ dlogits
        self.b2 -= self.lr * dlogits.sum(axis=0)
        self.W1 -= self.lr * self._x.T @ dh
        self.b1 -= self.lr * dh.sum(axis=0)
        self.embedding.W -= self.lr * self.embedding.W_grad
        return float(loss)


# 3.7: a numerically stable softmax and log-softmax
def stable_softmax(z):
    """softmax over the last axis; subtracting the row max changes nothing but keeps exp <= 1."""
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def log_softmax(z):
    """log softmax over the last axis by log-sum-exp: finite where softmax underflows to 0."""
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


# 3.8: perplexity tracking
def train_epoch(model, data, optimizer):
    """One pass over ``data`` (batches) with ``model.train_step``; the epoch's perplexity."""
    total_loss = 0.0
    n_tokens = 0
    for batch in data:
        loss = model.train_step(batch)
        total_loss += loss * batch.n_tokens
        n_tokens += batch.n_tokens
    avg_loss = total_loss / n_tokens
    return math.exp(avg_loss)
