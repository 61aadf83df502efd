"""Training diagnostics of the NeuralLM (NN exercise 10), PyTorch side.

The same dicts as ``numpy_ref/diagnostics.py`` (proof: ``parity_tests/test_diagnostics.py``).
``grad_norms`` and ``summarize_activations`` are called by the training loop at every log step,
so each costs one host sync, whatever the number of layers.
"""

from __future__ import annotations

import contextlib
import copy

import torch
from torch import nn

from numpy_ref.diagnostics import STAT_NAMES, TANH_SATURATION
from numpy_ref.validation import fail


def saturated_or_dead(a: torch.Tensor, activation: str) -> torch.Tensor:
    """Boolean mask of units that barely learn: |a| > TANH_SATURATION (tanh, gated), a == 0 (ReLU);
    ``numpy_ref.diagnostics.TANH_SATURATION`` says why the gated unit shares tanh's bound."""
    return a == 0 if activation == "relu" else a.abs() > TANH_SATURATION


def summarize_activations(activations: dict[str, torch.Tensor], activation: str) -> dict[str, dict[str, float]]:
    """{layer: {"mean", "std" (population), "frac_saturated_or_dead"}}, with one host sync.

    ``activations`` as filled by ``NeuralLM.capture_activations()``.
    """
    rows = [
        torch.stack([a.mean(), a.std(correction=0), saturated_or_dead(a, activation).to(a.dtype).mean()])
        for a in activations.values()
    ]
    values = torch.stack(rows).tolist()  # (L, 3)
    return {name: dict(zip(STAT_NAMES, row)) for name, row in zip(activations, values)}


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    """Evaluation mode (no dropout, so no generator is consumed) inside the block, then restored."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@torch.no_grad()
def shape_report(model: nn.Module, idx: torch.Tensor) -> list[tuple[str, tuple[int, ...]]]:
    """[(layer name, output shape)] of an eval-mode forward on idx (B, T), by forward hooks."""
    shapes = []

    def recorder(name):
        def hook(module, inputs, output):
            shapes.append((name, tuple(output.shape)))

        return hook

    handles = [model.get_submodule(name).register_forward_hook(recorder(name)) for name in model.layer_names()]
    try:
        with _eval_mode(model):
            model(idx)
    finally:
        for handle in handles:
            handle.remove()
    return shapes


@torch.no_grad()
def activation_stats(model: nn.Module, idx: torch.Tensor) -> dict[str, dict[str, float]]:
    """``summarize_activations`` of every hidden layer in an eval-mode forward on idx (B, T)."""
    with _eval_mode(model), model.capture_activations() as acts:
        model(idx)
    return summarize_activations(acts, model.config.activation)


def grad_norms(model: nn.Module) -> dict[str, float]:
    """{layer: L2 norm of the layer's parameter gradients, ..., "total": global L2 norm}.

    Reads ``.grad`` only (no clipping, no copies kept) and syncs with the device once.
    """
    layers = model.layer_names()
    grads, owner = [], []
    for i, name in enumerate(layers):
        for param_name, p in model.get_submodule(name).named_parameters():
            if p.grad is None:
                fail("grad_norms", f"{name}.{param_name} has no gradient; call loss.backward() first")
            grads.append(p.grad)
            owner.append(i)
    # One fused kernel for all per-parameter norms (what clip_grad_norm_ uses).
    squares = torch.stack(torch._foreach_norm(grads)).square()  # (P,)
    index = torch.tensor(owner, device=squares.device)
    per_layer = squares.new_zeros(len(layers)).index_add_(0, index, squares)  # (L,)
    values = torch.cat([per_layer, squares.sum().reshape(1)]).sqrt().tolist()  # (L + 1,)
    return dict(zip([*layers, "total"], values))


def overfit_tiny_batch(
    model: nn.Module,
    idx: torch.Tensor,
    targets: torch.Tensor,
    steps: int = 200,
    lr: float = 1e-2,
    optimizer: str = "adam",
) -> list[float]:
    """Train a copy of ``model`` on one batch; the loss before every step.

    idx (B, T), targets (B,); optimizer "adam" or "sgd". The copy is in eval mode (no dropout):
    the question is whether the model can fit, and regularisation would only blur the answer.
    Returns ``steps`` floats, which fall to ~0 when the B contexts are distinct.
    """
    optimizers = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}
    if optimizer not in optimizers:
        fail("overfit_tiny_batch", f"optimizer must be one of {sorted(optimizers)}, got {optimizer!r}")
    model = copy.deepcopy(model).eval()
    opt = optimizers[optimizer](model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        _, loss = model(idx, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    return torch.stack(losses).tolist()
