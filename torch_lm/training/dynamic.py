"""Dynamic evaluation of the NeuralLM (Krause et al. 2018, "Dynamic Evaluation of Neural Sequence
Models"): the held-out text is scored segment by segment, and after a segment is scored the model
takes a gradient step on it, so every prediction still uses only the characters before it::

    for each segment s_i of P consecutive targets (with its context):
        log p(s_i | everything before it)      <- scored with the current weights theta
        g = d mean loss(s_i) / d theta
        theta -= lr * g / (rms + eps)              ("rms": per-weight step sizes from train gradients)
        theta += decay * norm * (theta_0 - theta)  (pulled back toward the trained weights theta_0)

``rule="sgd"`` takes the plain step ``theta -= lr * g`` and a uniform decay. For ``"rms"``, ``rms``
is the root mean square of each weight's gradient over segments of the history (the train text,
for val), and ``norm = rms / mean(rms)`` makes weights that train moved a lot return faster (each
``decay * norm`` clipped at 1), as in the paper. The trained model is never modified: a copy adapts.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch

from numpy_ref.validation import check_nonnegative_float, check_positive_int, fail
from torch_lm.training.heldout import HeldoutResult, heldout_stream, pick, rows

RULES = ("rms", "sgd")
RMS_SEGMENTS = 256  # history segments whose gradients give the per-weight scale of the "rms" rule
RMS_EPS = 2e-5  # Krause et al.'s epsilon: weights whose train gradients are ~0 (rare characters' rows) must not take huge steps


@dataclass(frozen=True)
class DynamicSettings:
    """How dynamic evaluation adapts: ``segment`` targets per gradient step, step size ``lr``,
    ``decay`` toward the trained weights per step, update ``rule`` ("rms" or "sgd")."""

    # Chosen on the train tail by a model trained without it (docs/EXPERIMENTS.md).
    segment: int = 50
    lr: float = 2e-4
    decay: float = 0.001
    rule: str = "rms"

    def __post_init__(self) -> None:
        where = "DynamicSettings"
        check_positive_int(where, "segment", self.segment)
        check_nonnegative_float(where, "lr", self.lr)
        check_nonnegative_float(where, "decay", self.decay)
        if self.decay > 1:
            fail(where, f"decay must lie in [0, 1], got {self.decay!r}")
        if self.rule not in RULES:
            fail(where, f"rule must be one of {RULES}, got {self.rule!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def gradient_rms(model: torch.nn.Module, history: torch.Tensor, settings: DynamicSettings) -> list[torch.Tensor]:
    """Per-weight root mean square of the segment-loss gradient over ``RMS_SEGMENTS`` segments of
    ``history`` spread evenly over it (eval mode, so no dropout): the "rms" rule's step scale."""
    context = model.config.context
    span = settings.segment + context - 1
    starts = torch.linspace(0, len(history) - span - 1, RMS_SEGMENTS).long().unique().tolist()
    squares = [torch.zeros_like(p) for p in model.parameters()]
    for start in starts:
        idx = history[None, start : start + span]
        targets = history[None, start + context : start + context + settings.segment]
        model.zero_grad(set_to_none=True)
        _, loss = model.forward_sequence(idx, targets)
        loss.backward()
        torch._foreach_addcmul_(squares, [p.grad for p in model.parameters()], [p.grad for p in model.parameters()])
    return [torch.sqrt(s / len(starts)) for s in squares]


class Adaptation:
    """A copy of a NeuralLM that adapts to a text segment by segment (the rule of the module
    docstring): ``step`` scores one segment with the current weights, then takes the gradient step
    on it. The one definition of the update, for ``dynamic_log_probs`` and the compressor
    (``torch_lm.compression``), which predicts from ``model``'s parameters between steps.

    ``model`` (a NeuralLM with ``forward_sequence``) is copied and put in eval mode; the original
    is left as it was. ``history`` (H,) ids give the "rms" rule's per-weight scale.
    """

    def __init__(self, model: torch.nn.Module, history: torch.Tensor, settings: DynamicSettings):
        context = model.config.context
        if len(history) < context + settings.segment + 1:
            fail("dynamic evaluation", f"needs more than {context + settings.segment} history ids, got {len(history)}")
        self.settings = settings
        self.model = copy.deepcopy(model).eval()
        self.params = list(self.model.parameters())
        for p in self.params:
            p.requires_grad_(True)
        self.trained = [p.detach().clone() for p in self.params]
        history = history.to(next(self.model.parameters()).device)
        if settings.rule == "rms":
            rms = gradient_rms(self.model, history, settings)
            self.scale = [1.0 / (r + RMS_EPS) for r in rms]
            mean_rms = torch.cat([r.flatten() for r in rms]).mean()
            self.pull = [torch.clamp(settings.decay * r / mean_rms, max=1.0) for r in rms]
        else:
            self.scale = [torch.ones_like(p) for p in self.params]
            self.pull = [torch.full_like(p, settings.decay) for p in self.params]

    def step(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Score one segment, then adapt to it: idx (1, P + C - 1), targets (1, P) -> the logits
        (1, P, V) of the weights before the step, detached. Updates the parameters in place."""
        settings, params = self.settings, self.params
        self.model.zero_grad(set_to_none=True)
        logits, loss = self.model.forward_sequence(idx, targets)  # (1, P, V)
        loss.backward()
        with torch.no_grad():
            steps = torch._foreach_mul([p.grad for p in params], self.scale)
            torch._foreach_add_(params, steps, alpha=-settings.lr)
            back = torch._foreach_sub(self.trained, params)
            torch._foreach_mul_(back, self.pull)
            torch._foreach_add_(params, back)
        return logits.detach()


def dynamic_log_probs(
    model: torch.nn.Module, history: torch.Tensor, targets: torch.Tensor, settings: DynamicSettings
) -> torch.Tensor:
    """log p(next character) at every target, as the adapting model predicted it before it saw
    that target's segment: history (H >= context,), targets (N,) -> (N, V) float64 on the CPU.

    ``model`` is copied and adapted (``Adaptation``); the original is left as it was.
    """
    adaptation = Adaptation(model, history, settings)
    device = next(adaptation.model.parameters()).device
    stream = heldout_stream(history.to(device), targets.to(device), model.config.context)
    scored = []
    for idx, y in rows(stream, model.config.context, settings.segment):  # one segment of P targets per row
        logits = adaptation.step(idx, y)  # (1, P, V)
        scored.append(torch.log_softmax(logits[0].double(), dim=-1).cpu())
    return torch.cat(scored)


def dynamic_heldout(
    model: torch.nn.Module, history: torch.Tensor, targets: torch.Tensor, settings: DynamicSettings
) -> HeldoutResult:
    """The held-out figures of dynamic evaluation on ``targets`` after ``history``."""
    log_probs = dynamic_log_probs(model, history, targets, settings)
    return HeldoutResult.from_target_log_probs(pick(log_probs, targets))
