"""The one training step of the NeuralLM, and the optimiser and schedule it runs with.

``TrainingStep``, built by ``build_training_step``, is what real runs take (``Trainer``), what the
benchmark times (``torch_lm.bench``, through its ``laps`` hook) and what the trajectory parity
compares with the NumPy step (``numpy_ref.trajectory.train_step``)::

    lr = schedule(step)                   # pure function of the step: warm-up, then cosine
    logits, loss = forward(x, y)          # dropout from ``generator``, or injected ``masks``;
                                          # under the run's autocast (float32 or bfloat16 products)
    loss.backward()                       # [activation statistics, gradient norms when capturing]
    clip the global gradient norm; optimiser step
    [update the EMA of the weights]       # when the run keeps one (``make_ema``)
    running loss and the first non-finite step, kept on the device (no host sync)

``make_optimizer`` builds AdamW (torch's fused kernel, or the op-by-op path that
``numpy_ref.optim.AdamW`` mirrors) or SGD on ``parameter_groups``; ``make_ema`` the exponential
moving average of the weights (``numpy_ref.optim.EMA`` is its twin).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from numpy_ref.optim import no_decay_keys, warmup_cosine_lr, warmup_length
from torch_lm.diagnostics import grad_norms, summarize_activations
from torch_lm.metrics import RunningMean
from torch_lm.training.precision import autocast, resolve_precision

OPTIMIZERS = ("adamw", "sgd")


@dataclass(frozen=True)
class OptimizerSettings:
    """What ``make_optimizer`` builds: AdamW (``betas``, ``fused``) or SGD (``momentum``).

    ``weight_decay`` applies to the Linear weight matrices only (``parameter_groups``). ``fused``
    takes AdamW's fused kernel where this torch has one for the parameters' device.
    """

    kind: str = "adamw"
    lr: float = 2e-3
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.99)
    momentum: float = 0.9
    fused: bool = True

    def __post_init__(self) -> None:
        if self.kind not in OPTIMIZERS:
            raise ValueError(f"OptimizerSettings: kind must be one of {OPTIMIZERS}, got {self.kind!r}")


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two groups: weight decay on the Linear weight matrices, none on the rest (``no_decay_keys``,
    shared with the NumPy optimiser of the trajectory parity).

    Biases and LayerNorm gains/shifts are not decayed: they set offsets and scales rather than
    the model's capacity, and pulling a LayerNorm gain towards 0 just shrinks the signal. The
    embedding is not decayed because decoupled decay shrinks every row at every step, while a
    rare character's row only gets a gradient when that character is in the batch: its vector
    would be eroded towards 0 between its few updates.
    """
    named = dict(model.named_parameters())
    exempt = no_decay_keys(named)
    return [
        {"params": [p for k, p in named.items() if k not in exempt], "weight_decay": weight_decay},
        {"params": [p for k, p in named.items() if k in exempt], "weight_decay": 0.0},
    ]


def make_optimizer(model: torch.nn.Module, settings: OptimizerSettings) -> torch.optim.Optimizer:
    """torch's AdamW or SGD on ``parameter_groups(model, settings.weight_decay)``.

    The fused AdamW computes the same update as the single-tensor path but not in the same order,
    so the two differ in the last bit or so per step; torch versions or devices without a fused
    AdamW (the CPU before torch 2.4) fall back to the single-tensor path.
    """
    groups = parameter_groups(model, settings.weight_decay)
    if settings.kind == "sgd":
        return torch.optim.SGD(groups, lr=settings.lr, momentum=settings.momentum)
    if settings.fused:
        try:
            return torch.optim.AdamW(groups, lr=settings.lr, betas=settings.betas, fused=True)
        except RuntimeError:  # "fused=True requires ... supported devices": this torch has none
            pass
    return torch.optim.AdamW(groups, lr=settings.lr, betas=settings.betas)


def make_ema(model: torch.nn.Module, decay: float) -> AveragedModel | None:
    """The exponential moving average of ``model``'s parameters that ``TrainingStep`` updates after
    every optimiser step, or None when ``decay`` is 0 (off); its twin is ``numpy_ref.optim.EMA``.

    torch's maintained EMA, ``AveragedModel`` with ``get_ema_multi_avg_fn(decay)``: its first
    update copies the parameters, every later one is ``torch._foreach_lerp_(ema, param, 1 - decay)``.
    ``use_buffers=False``: only parameters are averaged (the NeuralLM has no buffers). Its update
    count ``n_averaged`` stays on the CPU, where ``AveragedModel`` creates it (the module is not
    moved after), so the test for the first update reads it without waiting for a GPU. The average
    is never trained, so its parameters ask for no gradient.
    """
    if decay == 0:
        return None
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=False)
    return ema.requires_grad_(False)


def warmup_cosine(lr: float, min_lr: float, warmup_steps: int, max_steps: int) -> Callable[[int], float]:
    """The learning rate of the 0-based ``step``: linear warm-up over ``warmup_steps``, then a half
    cosine from ``lr`` down to ``min_lr`` at ``max_steps`` (``numpy_ref.optim.warmup_cosine_lr``,
    the schedule of both trajectory-parity engines). A pure function of the step, so resuming
    needs no scheduler state. The warm-up takes at most a tenth of the run (``warmup_length``)."""
    warmup = warmup_length(warmup_steps, max_steps)
    return lambda step: warmup_cosine_lr(step, lr, warmup, max_steps, min_lr)


class SequenceForward(torch.nn.Module):
    """A NeuralLM whose ``forward`` is its sequence forward: ``(idx (B, T + P - 1), targets (B, P))
    -> (logits (B, P, V), loss)``, for the wrappers that call ``forward`` (DDP, ``torch.compile``).
    Holds the model, so parameters and their gradients are the model's own."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, **kwargs):
        return self.model.forward_sequence(idx, targets, **kwargs)


def training_forward(model: torch.nn.Module, targets_per_row: int) -> torch.nn.Module:
    """What a training step calls on a ``BatchSampler`` batch: the window forward for one target
    per row, the sequence forward (``SequenceForward``) for more."""
    return model if targets_per_row == 1 else SequenceForward(model)


class _NoLaps:
    def lap(self, name: str) -> None:
        pass


class TrainingStep:
    """One optimiser step; it also keeps the running loss and the first non-finite step.

    ``forward`` runs ordinary steps (the module itself, its ``DistributedDataParallel`` wrapper or
    its ``torch.compile``); steps that ``capture`` diagnostics run ``capture_forward`` (eager, so
    the activation hooks do not force a recompilation; same parameters, same maths). ``laps``, an
    object with ``lap(name)``, is told when the forward, backward, diagnostics ("log_work"),
    clipping + optimiser + EMA ("optimiser") and bookkeeping ("logging") end: the benchmark's timer.
    ``ema`` (``make_ema``), when given, is updated from ``model`` after every optimiser step; with
    data parallelism every rank holds the same weights after the step, so every rank's average
    stays the same without any communication.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        schedule: Callable[[int], float],
        grad_clip: float,
        *,
        forward: Callable | None = None,
        capture_forward: Callable | None = None,
        autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
        ema: AveragedModel | None = None,
    ):
        self.model = model
        self.optimizer = optimizer
        self.schedule = schedule
        self.grad_clip = grad_clip
        self.forward = model if forward is None else forward
        self.capture_forward = model if capture_forward is None else capture_forward
        self.autocast = autocast
        self.ema = ema
        device = next(model.parameters()).device
        self.running = RunningMean()
        # Device-side: the first step (1-based) whose loss was not finite, sys.maxsize if none.
        self.first_bad_step = torch.full((), sys.maxsize, dtype=torch.int64, device=device)
        self.grad_norms: dict[str, float] = {}  # of the latest capture step
        self.activation_stats: dict[str, dict[str, float]] = {}

    def __call__(
        self,
        step: int,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        capture: bool = False,
        generator: torch.Generator | None = None,
        masks: dict[str, torch.Tensor] | None = None,
        laps=None,
    ) -> torch.Tensor:
        """Step ``step`` (0-based) on the batch x (B, T), y (B,) (or sequence rows x (B, T + P - 1),
        y (B, P) for a ``SequenceForward``); returns the detached loss, the mean over y."""
        laps = laps or _NoLaps()
        lr = self.schedule(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with self.model.capture_activations() if capture else contextlib.nullcontext({}) as acts, self.autocast():
            forward = self.capture_forward if capture else self.forward
            _, loss = forward(x, y, generator=generator, masks=masks)
        laps.lap("forward")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        laps.lap("backward")
        if capture:
            # Before clipping: the norms show what the data asked for, not what clipping allowed.
            # With DDP the gradients are already averaged over the ranks (the global batch's);
            # the activation statistics are this rank's rows.
            self.activation_stats = summarize_activations(acts, self.model.config.activation)
            self.grad_norms = grad_norms(self.model)
            laps.lap("log_work")
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        laps.lap("optimiser")
        loss = loss.detach()
        self.running.update(loss.double() * y.numel(), y.numel())
        self.first_bad_step = torch.where(
            torch.isfinite(loss), self.first_bad_step, self.first_bad_step.clamp(max=step + 1)
        )
        laps.lap("logging")
        return loss

    def log(self, logger, step: int, loss: float, tokens_per_sec: float) -> None:
        """A log step's scalars after ``step`` steps: the interval's mean ``loss``, the learning
        rate of the last step, the throughput and the last capture step's diagnostics."""
        logger.log_train(step, loss, self.schedule(step - 1), tokens_per_sec, self.grad_norms, self.activation_stats)

    def running_totals(self, reduce=None) -> tuple[float, int]:
        """(sum of token losses, tokens) since the running loss last started over, summed over the
        ranks by ``reduce`` (an all-reduce) when given."""
        device = self.first_bad_step.device
        totals = torch.tensor([self.running.total, self.running.count], dtype=torch.float64, device=device)
        loss_sum, tokens = (totals if reduce is None else reduce(totals)).tolist()
        return loss_sum, int(tokens)

    def close_interval(
        self, logger, step: int, steps: int, seconds: float, targets_per_step: int, reduce=None
    ) -> tuple[float, float]:
        """The log step that ends an interval of ``steps`` steps taking ``seconds``, after step
        ``step``: the interval's token-weighted mean loss (summed over the ranks by ``reduce``, an
        all-reduce, when given) and its targets per second, logged with ``log``; the running loss
        starts over. Returns ``(loss, tokens_per_sec)``. One host sync: the totals' read-back."""
        loss_sum, tokens = self.running_totals(reduce)
        self.running.reset()
        loss, tokens_per_sec = loss_sum / tokens, steps * targets_per_step / max(seconds, 1e-9)
        self.log(logger, step, loss, tokens_per_sec)
        return loss, tokens_per_sec


def build_training_step(model: torch.nn.Module, config, optimizer: OptimizerSettings | None = None, wrap=None):
    """The training step of a run of ``config`` (a ``TrainConfig``), built once for the trainer, the
    benchmark and the trajectory parity: the forward for its rows (``training_forward``: window or
    sequence), wrapped by ``wrap`` (``DistributedDataParallel``) and compiled when ``config.compile``
    asks, under the autocast of ``config.precision`` (resolved for the model's device); the
    optimiser of ``config.optimizer_settings()`` (or ``optimizer``); its schedule and gradient
    clipping; the EMA of the weights when ``config.ema_decay`` asks (``make_ema``). Log steps run
    the eager forward (``capture_forward``)."""
    device = next(model.parameters()).device
    precision = resolve_precision(config.precision, config.dtype, device)
    ema = make_ema(model, config.ema_decay)  # a copy of the plain module, before any wrapper hooks it
    forward = training_forward(model, config.targets_per_row)
    forward = forward if wrap is None else wrap(forward)
    return TrainingStep(
        model,
        make_optimizer(model, optimizer or config.optimizer_settings()),
        config.lr_at,
        config.grad_clip,
        forward=torch.compile(forward) if config.compile else forward,
        capture_forward=forward,
        autocast=lambda: autocast(precision, device),
        ema=ema,
    )
