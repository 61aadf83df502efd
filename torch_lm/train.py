"""Training the NeuralLM on a character text: ``TrainConfig`` and ``train``.

SIDE-ONLY: this module exists in ``torch_lm`` only (docs/DESIGN.md §1).

One optimizer step::

    lr = lr_at(step)                      # pure function of the step: warmup, then cosine
    x, y = sampler.batch(step)            # pure function of (seed, step)
    logits, loss = model(x, y, generator=dropout_generator)
    loss.backward(); [grad norms, activation stats on log steps]; clip; AdamW step

Everything that decides the numbers is either a pure function of the step (lr, batch) or saved in
the checkpoint (weights, AdamW moments, the dropout generator, the running loss), so a run resumed
from ``last.pt`` reproduces the uninterrupted run exactly on the CPU.

Host synchronisation happens only at log steps, evaluations and checkpoints: the running loss is
accumulated on the device, and non-finite losses are tracked there too (the first bad step is
remembered) and reported at the next sync point.

Data parallelism (``torch_lm.distributed``): with K ranks each step takes this rank's ``B/K``
rows of the global batch and ``DistributedDataParallel`` averages the gradients, so the step is
the single-process step. The logged train loss and the held-out loss are reduced over the ranks;
SIGINT/SIGTERM, the time budget and non-finite losses are agreed on by all ranks before anyone
acts; only rank 0 writes files. Each rank draws its own dropout masks (stream
``dropout/rank<r>``; rank 0's is the single-process stream), so with dropout > 0 a K-rank run is
a different — equally valid — sample of masks than a 1-process run; with dropout 0 the two
agree to rounding (~1e-15 in float64). Checkpoints hold every rank's dropout generator, so a
resume with the same K is exact; ranks that find no saved state (a larger K) reseed theirs from
``(seed, step)``.
"""

from __future__ import annotations

import contextlib
import math
import re
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from tqdm import tqdm

from numpy_ref.config import ModelConfig
from numpy_ref.optim import no_decay_keys, warmup_cosine_lr
from numpy_ref.validation import (check_nonnegative_float, check_positive_float,
                                  check_positive_int, fail)
from torch_lm.checkpoint import (BEST, LAST, CheckpointError, build_checkpoint,
                                 check_model_config_matches, check_vocab_matches, load_checkpoint,
                                 load_model_state, remove_stale_temporaries, save_checkpoint)
from torch_lm.data import (BatchSampler, CharVocab, HeldoutResult, check_split_fits, heldout_loss,
                           split_ids, step_seed)
from torch_lm.diagnostics import grad_norms, summarize_activations
from torch_lm.distributed import DistEnv, Distributed, StopVote, shard_bounds
from torch_lm.metrics import RunningMean, bits_per_char, perplexity
from torch_lm.neural_lm import NeuralLM
from torch_lm.tensorboard_log import TensorBoardLogger

DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")
# Parameter dtypes. No bfloat16/float16 autocast: the project's modules compute softmax and
# LayerNorm statistics by hand, and under autocast those would run in 16 bits.
DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, logging and run settings (the model's are in ``ModelConfig``).

    ``batch_size`` is the global batch (data-parallel ranks split it). ``lr`` warms up linearly
    over ``warmup_steps`` and then follows a cosine down to ``min_lr`` at ``max_steps``.
    ``grad_clip`` is the max global gradient norm (0 = off). ``time_budget`` stops training after
    that many wall-clock seconds of this process (0 = no limit); the lr schedule still refers to
    ``max_steps``. Every ``log_interval`` steps the running train loss and diagnostics are logged,
    every ``eval_interval`` steps the held-out loss is computed (``eval_batch_size`` windows per
    forward), a ``sample_length``-character sample is generated and ``last.pt``/``best.pt`` are
    saved in ``run_dir``; every ``checkpoint_interval`` steps (0 = only at evaluations)
    ``last.pt`` is saved as well, so a crash loses at most that many steps. ``resume`` continues
    from ``run_dir/last.pt``. ``holdout_tail`` characters at the end of the train split are left
    out of the training batches, so that something else (a mixture weight) can be tuned on text
    the model never saw; evaluation is unchanged. ``fused_optimizer`` takes AdamW's fused kernel
    where torch has one (``make_optimizer``); ``compile`` runs the forward under ``torch.compile``.
    """

    batch_size: int = 512
    lr: float = 2e-3
    min_lr: float = 2e-4
    warmup_steps: int = 200
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.99)
    grad_clip: float = 1.0
    max_steps: int = 18000
    time_budget: float = 0.0
    eval_interval: int = 2000
    log_interval: int = 50
    checkpoint_interval: int = 0
    eval_batch_size: int = 4096
    sample_length: int = 300
    seed: int = 1337
    device: str = "auto"
    dtype: str = "float32"
    run_dir: str = "runs/default"
    resume: bool = False
    compile: bool = False
    fused_optimizer: bool = True
    holdout_tail: int = 0

    def __post_init__(self) -> None:
        where = "TrainConfig"
        for name in ("batch_size", "max_steps", "eval_interval", "log_interval", "eval_batch_size"):
            check_positive_int(where, name, getattr(self, name))
        for name in ("warmup_steps", "sample_length", "seed", "checkpoint_interval"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                fail(where, f"{name} must be an integer >= 0, got {value!r}")
        check_positive_float(where, "lr", self.lr)
        for name in ("min_lr", "weight_decay", "grad_clip", "time_budget"):
            check_nonnegative_float(where, name, getattr(self, name))
        if self.min_lr > self.lr:
            fail(where, f"min_lr must not exceed lr, got min_lr={self.min_lr!r} > lr={self.lr!r}")
        object.__setattr__(self, "betas", tuple(self.betas))
        if len(self.betas) != 2 or not all(
                isinstance(b, (int, float)) and not isinstance(b, bool) and 0.0 <= b < 1.0
                for b in self.betas):
            fail(where, f"betas must be two numbers in [0, 1), got {self.betas!r}")
        if not isinstance(self.device, str) or not DEVICE_PATTERN.fullmatch(self.device):
            fail(where, f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.dtype not in DTYPES:
            fail(where, f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if not isinstance(self.run_dir, str) or not self.run_dir:
            fail(where, f"run_dir must be a non-empty path, got {self.run_dir!r}")
        for name in ("resume", "compile", "fused_optimizer"):
            if not isinstance(getattr(self, name), bool):
                fail(where, f"{name} must be True or False, got {getattr(self, name)!r}")

    def to_dict(self) -> dict:
        """A plain dict (lists, not tuples) for checkpoints, JSON and TensorBoard hparams."""
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """Inverse of ``to_dict``; unknown keys are an error."""
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            fail("TrainConfig", f"unknown keys {unknown}; known keys are "
                                f"{sorted(cls.__dataclass_fields__)}")
        return cls(**d)


class NonFiniteLossError(RuntimeError):
    """The training or held-out loss (or the weights) became NaN or infinite; training stopped."""


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM: ``last.pt`` was saved at ``step``; ``--resume`` continues from there.

    ``signum`` is the signal that stopped this process (SIGINT when another rank's vote did).
    """

    def __init__(self, step: int, checkpoint: Path, signum: int = signal.SIGINT):
        how = "" if signum == signal.SIGINT else f" ({signal.Signals(signum).name})"
        super().__init__(f"interrupted{how} at step {step}; saved {checkpoint} "
                         f"(continue with --resume)")
        self.step = step
        self.checkpoint = checkpoint
        self.signum = int(signum)


# ---------------------------------------------------------------------------------------------
# Pure helpers
# ---------------------------------------------------------------------------------------------

def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda``/``cuda:N`` only if that device exists."""
    if not DEVICE_PATTERN.fullmatch(name):
        fail("device", f"must be auto, cpu, cuda or cuda:N, got {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            fail("device", f"{name} requested but CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            fail("device", f"{name} requested but only {torch.cuda.device_count()} CUDA "
                           f"device(s) exist")
    return device


def rank_device(name: str, env: DistEnv) -> torch.device:
    """The device of one data-parallel rank: ``cpu``, or with CUDA the GPU ``cuda:LOCAL_RANK``.

    With one process this is ``resolve_device``. With several, ``auto`` and ``cuda`` mean each
    rank's own GPU; an explicit ``cuda:N`` is refused, because it would put every rank of a
    machine on the same GPU.
    """
    if env.world_size == 1:
        return resolve_device(name)
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if name not in ("auto", "cuda"):
        fail("device", f"with {env.world_size} data-parallel ranks use cuda (each rank takes "
                       f"cuda:LOCAL_RANK) or cpu, not {name!r}")
    return resolve_device(f"cuda:{env.local_rank}")


def dropout_stream(rank: int) -> str:
    """Name of rank ``rank``'s dropout generator, both its seed stream and its checkpoint key;
    rank 0 keeps the single-process name, so 1-process runs and checkpoints are unchanged."""
    return "dropout" if rank == 0 else f"dropout/rank{rank}"


def lr_at(step: int, config: TrainConfig) -> float:
    """Learning rate of the step with 0-based index ``step``: a pure function, so resuming needs
    no scheduler state. Linear warmup over ``warmup_steps``, then a half cosine from ``lr`` down
    to ``min_lr`` at ``max_steps``: ``numpy_ref.optim.warmup_cosine_lr``, the schedule whose
    NumPy/torch trajectories ``parity_tests/test_trajectory.py`` proves equal. A run shorter
    than the warmup warms up over its whole length.
    """
    warmup = min(config.warmup_steps, config.max_steps)
    return warmup_cosine_lr(step, config.lr, warmup, config.max_steps, config.min_lr)


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on the Linear weight matrices only (``no_decay_keys``, shared
    with the NumPy optimiser of the trajectory parity).

    Biases and LayerNorm gains/shifts are not decayed: they set offsets and scales rather than
    the model's capacity, and pulling a LayerNorm gain towards 0 just shrinks the signal. The
    embedding is not decayed because decoupled decay shrinks every row at every step, while a
    rare character's row only gets a gradient when that character is in the batch: its vector
    would be eroded towards 0 between its few updates.
    """
    named = dict(model.named_parameters())
    exempt = no_decay_keys(named)
    return [{"params": [p for k, p in named.items() if k not in exempt], "weight_decay": weight_decay},
            {"params": [p for k, p in named.items() if k in exempt], "weight_decay": 0.0}]


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """The trainer's AdamW on ``parameter_groups``, fused when ``config.fused_optimizer`` allows.

    The fused kernel updates every parameter in one pass per tensor instead of one op per term of
    the update (measured on 2 CPU cores, default model: 1.0 against 2.0 ms per step, see
    reports/BENCH.md). It computes the same update as the single-tensor path that
    ``numpy_ref.optim.AdamW`` mirrors op by op, but not in the same order, so the two differ in
    the last bit or so per step (the trajectory parity keeps the single-tensor path:
    ``torch_lm.trajectory.make_optimizer``). Torch versions or devices without a fused AdamW
    (CPU before torch 2.4) fall back to the default implementation.
    """
    groups = parameter_groups(model, config.weight_decay)
    if config.fused_optimizer:
        try:
            return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, fused=True)
        except RuntimeError:  # "fused=True requires ... supported devices": this torch has none
            pass
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas)


def sample_prompt(vocab: CharVocab) -> str:
    """Samples start at a new line when the vocabulary has one (as the plays' speeches do)."""
    return "\n" if "\n" in vocab else vocab.to_list()[0]


# Ctrl-C, and the polite stop of ``kill``, batch schedulers, ``docker stop`` and torchrun's agent.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[dict[str, Any]]:
    """Within the block, SIGINT or SIGTERM sets ``flag["stop"]`` (and ``flag["signal"]``) instead
    of ending the process, so the loop can finish its step and save ``last.pt``; a second one
    raises KeyboardInterrupt at once. The previous handlers are restored on exit.

    Signal handlers can only be installed from the main thread; elsewhere the flag never flips.
    """
    flag: dict[str, Any] = {"stop": False, "signal": signal.SIGINT}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag["stop"]:
            raise KeyboardInterrupt
        flag["stop"], flag["signal"] = True, signum

    previous = {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}
    try:
        yield flag
    finally:
        for signum, handler_before in previous.items():
            signal.signal(signum, handler_before)


# ---------------------------------------------------------------------------------------------
# The training run
# ---------------------------------------------------------------------------------------------

class Trainer:
    """State of one training run; ``train()`` builds one and calls ``run()``."""

    def __init__(self, model_config: ModelConfig, config: TrainConfig, text: str,
                 distributed: Distributed | None = None):
        self.config = config
        self.dist = distributed or Distributed(resolve_device(config.device))
        self.device = self.dist.device
        self.vocab = CharVocab.from_text(text)
        if model_config.vocab_size != len(self.vocab):
            fail("train", f"model_config.vocab_size is {model_config.vocab_size} but the text has "
                          f"{len(self.vocab)} distinct characters")
        self.model_config = model_config
        self.run_dir = Path(config.run_dir)

        ids = self.vocab.encode(text)
        self.train_ids, self.val_ids = split_ids(ids)
        check_split_fits(len(self.train_ids), len(self.val_ids), model_config.context)
        self.train_ids = self.train_ids.to(self.device)
        self.val_ids = self.val_ids.to(self.device)
        trained_on = self.train_ids[:len(self.train_ids) - config.holdout_tail]  # (N - holdout,)
        self.sampler = BatchSampler(trained_on, model_config.context, config.batch_size,
                                    config.seed, rank=self.dist.rank,
                                    world_size=self.dist.world_size)
        self.eval_prefix, self.eval_shard = self._eval_shard()

        self.model = self._build_model()
        self.optimizer = make_optimizer(self.model, config)
        self.dropout_generator = torch.Generator(self.device).manual_seed(
            step_seed(config.seed, 0, dropout_stream(self.dist.rank)))
        self.step = 0
        self.best_val_loss = math.inf
        self.running = RunningMean()
        self.last_saved_step: int | None = None
        checkpoint = self._prepare_run_dir()
        if checkpoint is not None:
            self._restore(checkpoint)
        # After the restore: DDP broadcasts rank 0's weights (equal anyway) and hooks averaging.
        self.parallel_model = self.dist.wrap(self.model)
        # Compiled forward for ordinary steps; log steps use the eager module so the activation
        # hooks do not force a recompilation (same parameters, same maths).
        self.compiled_model = (torch.compile(self.parallel_model) if config.compile
                               else self.parallel_model)

        # Device-side bookkeeping: no host sync per step.
        self.first_bad_step = torch.full((), sys.maxsize, dtype=torch.int64, device=self.device)
        # A resumed run replaces what the previous one logged after its checkpoint; events of
        # the checkpoint's own step were written before it was saved, so they stay.
        purge_step = self.step + 1 if checkpoint is not None else None
        self.logger = TensorBoardLogger(self.run_dir, enabled=self.dist.is_main,
                                        purge_step=purge_step)
        self.train_history: list[tuple[int, float]] = []
        self.val_history: list[tuple[int, float]] = []
        self.last_eval: HeldoutResult | None = None
        self.train_seconds = 0.0
        self.trained_steps = 0
        self.grad_norms: dict[str, float] = {}
        self.activation_stats: dict[str, dict[str, float]] = {}
        self._mark_throughput()

    # ----------------------------------------------------------------------------- setup
    def _build_model(self) -> NeuralLM:
        """The model in the configured dtype, initialised from the seed, on the device."""
        model = NeuralLM(self.model_config).to(DTYPES[self.config.dtype])
        model.reset_parameters(generator=torch.Generator().manual_seed(
            step_seed(self.config.seed, 0, "init")))
        return model.to(self.device).train()

    def _eval_shard(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's share of the held-out positions and the ``context`` ids before it.

        ``heldout_loss(model, prefix, shard)`` then predicts exactly the shard's positions with
        the same contexts the whole evaluation gives them; with one rank it is the whole split.
        """
        context = self.model_config.context
        start, stop = shard_bounds(len(self.val_ids), self.dist.rank, self.dist.world_size)
        stream = torch.cat([self.train_ids[len(self.train_ids) - context:], self.val_ids])
        return stream[start:start + context], self.val_ids[start:stop]

    def _prepare_run_dir(self) -> dict | None:
        """The checkpoint to resume from, or None for a fresh run.

        A fresh run refuses a run dir that already holds ``last.pt``: it would overwrite that run's
        checkpoints and interleave two runs in one TensorBoard curve.
        """
        last = self.run_dir / LAST
        if self.dist.is_main:
            remove_stale_temporaries(self.run_dir)
        if not self.config.resume:
            if last.exists():
                fail("train", f"{last} already exists; pass --resume to continue that run or "
                              f"choose another --run-dir")
            return None
        if not last.exists():
            raise CheckpointError(f"--resume: no checkpoint at {last}")
        checkpoint = load_checkpoint(last, map_location=self.device)
        check_vocab_matches(last, checkpoint, self.vocab)
        check_model_config_matches(last, checkpoint, self.model_config)
        return checkpoint

    def _restore(self, checkpoint: dict) -> None:
        """Weights, AdamW state, dropout generator, step, best loss and running loss from ``last.pt``.

        The running loss saved is the sum over all ranks, so only rank 0 takes it back.
        """
        path = self.run_dir / LAST
        load_model_state(path, self.model, checkpoint)
        self.step = checkpoint["step"]
        self.best_val_loss = checkpoint["best_val_loss"]
        stream = dropout_stream(self.dist.rank)
        try:
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            if stream in checkpoint["rng"]:
                self.dropout_generator.set_state(checkpoint["rng"][stream].cpu())
            else:  # more ranks than the run that saved it: a fresh stream, still reproducible
                self.dropout_generator.manual_seed(step_seed(self.config.seed, self.step, stream))
            if self.dist.is_main:
                self.running.update(checkpoint["running"]["loss_sum"],
                                    checkpoint["running"]["tokens"])
        except (KeyError, ValueError, RuntimeError, TypeError, AttributeError) as error:
            raise CheckpointError(f"checkpoint {path}: optimizer, RNG or running-loss state does "
                                  f"not fit ({' '.join(str(error).split())[:160]})") from None

    # ----------------------------------------------------------------------------- the loop
    def run(self) -> dict[str, Any]:
        """Train to ``max_steps`` (or the time budget), evaluating and checkpointing on the way."""
        config = self.config
        status = "completed"
        start = time.monotonic()
        bar = tqdm(total=config.max_steps, initial=self.step, desc="train", unit="step",
                   dynamic_ncols=True, disable=not self.logger.enabled)
        try:
            with stop_on_signals() as stop_signal:
                self._mark_throughput()
                vote = StopVote(self.dist)
                while self.step < config.max_steps:
                    # Every rank stops at the same step, or the others would wait forever in
                    # the next gradient all-reduce.
                    interrupted, out_of_time = vote(
                        stop_signal["stop"],
                        bool(config.time_budget) and time.monotonic() - start >= config.time_budget)
                    if interrupted:
                        raise self._interrupt(stop_signal["signal"])
                    if out_of_time:
                        status = "time_budget"
                        break
                    self._train_step(capture=(self.step + 1) % config.log_interval == 0)
                    bar.update(1)
                    if self.step % config.log_interval == 0:
                        self._log(bar)
                    if self.step % config.eval_interval == 0:
                        self._evaluate_and_save(bar)
                    elif config.checkpoint_interval and self.step % config.checkpoint_interval == 0:
                        self._check_finite()
                        self._save()
                vote.settle()
                if self.last_eval is None or self.val_history[-1][0] != self.step:
                    self._evaluate_and_save(bar)
        except BaseException:
            self.logger.close()
            raise
        finally:
            bar.close()
        self._log_end_of_run()
        return self._summary(status, time.monotonic() - start)

    def _train_step(self, capture: bool) -> None:
        """One AdamW step; with ``capture``, also measure activations and gradient norms."""
        config, step = self.config, self.step
        lr = lr_at(step, config)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        x, y = self.sampler.batch(step)
        with (self.model.capture_activations() if capture else contextlib.nullcontext({})) as acts:
            forward = self.parallel_model if capture else self.compiled_model
            _, loss = forward(x, y, generator=self.dropout_generator)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if capture:
            # Before clipping: the norms show what the data asked for, not what clipping allowed.
            # With DDP the gradients are already averaged over the ranks (the global batch's);
            # the activation statistics are this rank's rows.
            self.activation_stats = summarize_activations(acts, self.model_config.activation)
            self.grad_norms = grad_norms(self.model)
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
        self.optimizer.step()

        loss = loss.detach()
        self.running.update(loss.double() * len(y), len(y))
        self.first_bad_step = torch.where(torch.isfinite(loss), self.first_bad_step,
                                          self.first_bad_step.clamp(max=step + 1))
        self.step += 1
        self._interval_steps += 1

    def _check_finite(self) -> None:
        """Raise ``NonFiniteLossError`` naming the first step whose loss was NaN or infinite on
        any rank (every rank raises together)."""
        bad_step = int(self.dist.all_reduce(self.first_bad_step.clone(), "min"))
        if bad_step != sys.maxsize:
            raise self._diverged(f"training loss became non-finite at step {bad_step}")

    def _check_finite_weights(self) -> None:
        """Raise ``NonFiniteLossError`` if a weight is NaN or infinite: a huge but finite loss can
        produce a non-finite update, and such weights must never replace a good checkpoint.

        DDP keeps the weights identical on every rank, so all ranks reach the same verdict.
        """
        finite = torch.stack([torch.isfinite(p).all() for p in self.model.parameters()]).all()
        if not finite:
            raise self._diverged(f"weights became non-finite at step {self.step}")

    def _diverged(self, what: str) -> NonFiniteLossError:
        """The error that stops a diverged run, naming the checkpoint left in place."""
        kept = (f"the last good checkpoint is {self.run_dir / LAST} (step "
                f"{self.last_saved_step})" if self.last_saved_step is not None
                else "no checkpoint was written before it")
        return NonFiniteLossError(f"{what}; stopped ({kept}); try a lower --lr or --grad-clip")

    def _mark_throughput(self) -> None:
        """Start a throughput interval (after evaluations too, so they do not count as training)."""
        self._interval_start = time.monotonic()
        self._interval_steps = 0

    def _log(self, bar: tqdm) -> None:
        """A log step: the only per-interval host sync (loss, diagnostics, throughput)."""
        self._check_finite()
        loss_sum, tokens = self._running_totals()
        loss = loss_sum / tokens
        self.running.reset()
        elapsed = time.monotonic() - self._interval_start
        tokens_per_sec = self._interval_steps * self.config.batch_size / max(elapsed, 1e-9)
        self.train_seconds += elapsed
        self.trained_steps += self._interval_steps
        self.logger.log_train(self.step, loss, lr_at(self.step - 1, self.config), tokens_per_sec,
                              self.grad_norms, self.activation_stats)
        self.train_history.append((self.step, loss))
        bar.set_postfix({"loss": f"{loss:.4f}", "ppl": f"{float(perplexity(loss)):.2f}",
                         "tok/s": f"{tokens_per_sec:,.0f}"}, refresh=False)
        self._mark_throughput()

    def _running_totals(self) -> tuple[float, int]:
        """(sum of token losses, tokens) of the current log interval over all ranks."""
        totals = torch.tensor([self.running.total, self.running.count], dtype=torch.float64,
                              device=self.device)
        loss_sum, tokens = self.dist.all_reduce(totals).tolist()
        return loss_sum, int(tokens)

    def _heldout(self) -> HeldoutResult:
        """The held-out protocol over every val position: each rank evaluates its shard and the
        (sum of losses, positions) pairs are summed, so each position counts exactly once."""
        loss_sum, positions = 0.0, 0
        if len(self.eval_shard):
            shard = heldout_loss(self.model, self.eval_prefix, self.eval_shard,
                                 self.model_config.context, self.config.eval_batch_size,
                                 self.device)
            loss_sum, positions = shard.loss * shard.positions, shard.positions
        totals = torch.tensor([loss_sum, positions], dtype=torch.float64, device=self.device)
        loss_sum, positions = self.dist.all_reduce(totals).tolist()
        mean = loss_sum / positions
        return HeldoutResult(loss=mean, perplexity=float(perplexity(mean)),
                             bpc=float(bits_per_char(mean)), positions=int(positions))

    def _evaluate_and_save(self, bar: tqdm) -> None:
        """Held-out loss, a sample, histograms; then ``last.pt`` (and ``best.pt`` if improved)."""
        self._check_finite()
        self.train_seconds += time.monotonic() - self._interval_start
        self.trained_steps += self._interval_steps
        result = self._heldout()
        if not math.isfinite(result.loss):
            raise self._diverged(f"held-out loss is non-finite at step {self.step}")
        self.last_eval = result
        self.val_history.append((self.step, result.loss))
        self.logger.log_eval(self.step, result, self.model,
                             self._sample() if self.dist.is_main else "")
        improved = result.loss < self.best_val_loss
        self.best_val_loss = min(self.best_val_loss, result.loss)
        self._save(also_best=improved)
        if self.logger.enabled:
            bar.write(f"step {self.step}: val loss {result.loss:.4f}, perplexity "
                      f"{result.perplexity:.3f}{' (best)' if improved else ''}")
        self._mark_throughput()

    def _sample(self) -> str:
        """A ``sample_length``-character sample; its generator is seeded by (seed, step) so that
        sampling never disturbs the training randomness."""
        if self.config.sample_length == 0:
            return ""
        generator = torch.Generator(self.device).manual_seed(
            step_seed(self.config.seed, self.step, "sample"))
        prompt = self.vocab.encode(sample_prompt(self.vocab)).to(self.device)[None]  # (1, 1)
        ids = self.model.generate(prompt, self.config.sample_length, generator=generator)
        return self.vocab.decode(ids[0])

    def _save(self, also_best: bool = False) -> None:
        """Atomically write ``last.pt`` (and the same checkpoint as ``best.pt``) on rank 0.

        Collective: every rank contributes its dropout generator state and running loss.
        """
        self._check_finite_weights()
        loss_sum, tokens = self._running_totals()
        states = self.dist.all_gather(self.dropout_generator.get_state())
        if self.dist.is_main:
            self.logger.flush()
            checkpoint = build_checkpoint(
                self.model, self.optimizer, self.model_config, self.config.to_dict(), self.vocab,
                self.step, self.best_val_loss,
                {dropout_stream(rank): state for rank, state in enumerate(states)},
                loss_sum, tokens)
            save_checkpoint(self.run_dir / LAST, checkpoint)
            if also_best:
                save_checkpoint(self.run_dir / BEST, checkpoint)
        self.last_saved_step = self.step

    def _interrupt(self, signum: int) -> TrainingInterrupted:
        """Save ``last.pt`` at the current step (if the loss is still finite) for ``--resume``."""
        self._check_finite()
        self._save()
        # No rank exits (and makes torchrun stop the others) before rank 0 has written last.pt.
        self.dist.barrier()
        self.logger.close()
        return TrainingInterrupted(self.step, self.run_dir / LAST, signum)

    def _log_end_of_run(self) -> None:
        """The projector embedding and the hparams (whose metrics are the final ``loss/val``)."""
        self.logger.log_embedding(self.step, self.model.state_dict()["embedding.weight"],
                                  self.vocab)
        self.logger.log_hparams(self.model_config.to_dict(), self.config.to_dict())
        self.logger.close()

    def _summary(self, status: str, elapsed: float) -> dict[str, Any]:
        """What ``train`` returns (JSON-serialisable)."""
        result = self.last_eval
        return {
            "status": status,
            "steps": self.step,
            "val_loss": result.loss,
            "val_ppl": result.perplexity,
            "bpc": result.bpc,
            "positions": result.positions,
            "best_val_loss": self.best_val_loss,
            "train_loss": self.train_history[-1][1] if self.train_history else None,
            "train_history": [list(item) for item in self.train_history],
            "val_history": [list(item) for item in self.val_history],
            "tokens_per_sec": self.trained_steps * self.config.batch_size
                              / max(self.train_seconds, 1e-9),
            "elapsed_seconds": elapsed,
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "device": str(self.device),
            "world_size": self.dist.world_size,
            "run_dir": str(self.run_dir),
        }


def train(model_config: ModelConfig, train_config: TrainConfig, text: str,
          distributed: Distributed | None = None) -> dict[str, Any]:
    """Train a ``NeuralLM`` on ``text`` (split 90/10) and return a summary dict.

    ``distributed`` (from ``torch_lm.distributed.distributed_session``) makes this process one
    data-parallel rank; without it the run is a single process on ``train_config.device``.

    Writes TensorBoard events, ``last.pt`` and ``best.pt`` to ``train_config.run_dir``.
    ``model_config.vocab_size`` must equal the number of distinct characters of ``text``.
    Raises ``ValueError`` for bad settings, ``DataError``/``CheckpointError`` for unusable
    inputs, ``NonFiniteLossError`` if the loss diverges and ``TrainingInterrupted`` on SIGINT or
    SIGTERM (after saving ``last.pt``). Seeds only its own generators (initialisation, batches,
    dropout, samples): the global torch RNG is left alone.
    """
    return Trainer(model_config, train_config, text, distributed).run()
