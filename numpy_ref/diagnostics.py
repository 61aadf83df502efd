"""Training diagnostics of the NeuralLM (NN exercise 10), NumPy side.

* ``shape_report``: (layer name, output shape) of every layer, read from the forward's cache;
* ``activation_stats``: mean, std and fraction of saturated (tanh, gated) or dead (ReLU) units
  of every hidden layer's post-activation output;
* ``grad_norms``: L2 norm of each layer's gradient, and the global norm as "total";
* ``overfit_tiny_batch``: plain SGD with the hand backward on one batch; the loss must reach ~0,
  or the model or its gradients are broken.

``torch_lm/diagnostics.py`` returns the same dicts for the same model and batch
(``parity_tests/test_diagnostics.py``), which the training loop logs to TensorBoard.
"""

from __future__ import annotations

import math

import numpy as np

from numpy_ref.config import ModelConfig
from numpy_ref.neural_lm import hidden_activations, layer_names, layer_shapes, neural_lm_backward, neural_lm_forward
from numpy_ref.validation import fail

# A tanh unit with |a| above this passes less than 1 - 0.97² ≈ 6 % of its gradient: saturated.
# The same bound on a gated unit's output t * s = tanh(filter) * sigmoid(gate) holds only when
# |t| > 0.97 and s > 0.97: the filter then passes < 6 % of its gradient and the gate s (1 - s) < 3 %,
# so the unit is saturated in both halves. (A closed gate cannot be told from a filter at 0 by the
# output alone, so it is not counted.)
TANH_SATURATION = 0.97
STAT_NAMES = ("mean", "std", "frac_saturated_or_dead")


def saturated_or_dead(a: np.ndarray, activation: str) -> np.ndarray:
    """Boolean mask of units that barely learn: |a| > TANH_SATURATION (tanh, gated), a == 0 (ReLU)."""
    return a == 0 if activation == "relu" else np.abs(a) > TANH_SATURATION


def summarize_activations(activations: dict[str, np.ndarray], activation: str) -> dict[str, dict[str, float]]:
    """{layer: {"mean", "std" (population, ddof 0), "frac_saturated_or_dead"}} over all entries."""
    return {
        name: dict(zip(STAT_NAMES, (float(a.mean()), float(a.std()), float(saturated_or_dead(a, activation).mean()))))
        for name, a in activations.items()
    }


def shape_report(params, idx, config: ModelConfig) -> list[tuple[str, tuple[int, ...]]]:
    """[(layer name, output shape)] of an eval-mode forward on idx (B, T), in forward order."""
    *_, cache = neural_lm_forward(params, idx, config)
    return layer_shapes(cache)


def activation_stats(params, idx, config: ModelConfig) -> dict[str, dict[str, float]]:
    """``summarize_activations`` of every hidden layer in an eval-mode forward on idx (B, T)."""
    *_, cache = neural_lm_forward(params, idx, config)
    return summarize_activations(hidden_activations(cache), config.activation)


def grad_norms(grads: dict[str, np.ndarray], config: ModelConfig) -> dict[str, float]:
    """{layer: L2 norm over the layer's parameter gradients, ..., "total": global L2 norm}.

    grads are keyed like the params; a key "hidden.0.linear.weight" belongs to layer "hidden.0".
    """
    layers = layer_names(config)
    squares = dict.fromkeys(layers, 0.0)
    for key, g in grads.items():
        owners = [layer for layer in layers if key.startswith(layer + ".")]
        if not owners:
            fail("grad_norms", f"gradient {key!r} belongs to none of the layers {layers}")
        squares[owners[0]] += float(np.linalg.norm(g.ravel())) ** 2
    norms = {layer: math.sqrt(s) for layer, s in squares.items()}
    return norms | {"total": math.sqrt(sum(squares.values()))}


def overfit_tiny_batch(params, idx, targets, config: ModelConfig, steps: int = 300, lr: float = 1.0) -> list[float]:
    """Train a copy of ``params`` on one batch with plain SGD; the loss before every step.

    idx (B, T), targets (B,). Dropout is off (eval-mode forward): the question is whether the
    model and its hand backward can fit, and regularisation would only blur the answer.
    Returns ``steps`` floats; they fall to ~0 when the B contexts are distinct.
    """
    params = {name: p.copy() for name, p in params.items()}
    losses = []
    for _ in range(steps):
        _, loss, cache = neural_lm_forward(params, idx, config, targets)
        grads = neural_lm_backward(cache)
        for name, g in grads.items():
            params[name] -= lr * g
        losses.append(float(loss))
    return losses
