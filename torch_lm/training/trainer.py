"""Training the NeuralLM on a character text: ``train`` and the ``Trainer`` behind it.

Each step is ``TrainingStep`` (``torch_lm.training.step``) on the batch ``BatchSampler`` gives for
that step. Everything that decides the numbers is either a pure function of the step (lr, batch)
or saved in the checkpoint (weights, AdamW moments, the EMA of the weights if any, the dropout
generator, the running loss), so a run resumed from ``last.pt`` reproduces the uninterrupted run
exactly on the CPU.

With ``ema_decay`` the step also keeps an exponential moving average of the weights
(``TrainingStep.ema``), and the average is what the run evaluates, samples, selects ``best.pt``
by, reports and saves as the checkpoint's ``model``; the weights being trained are saved beside
it (``torch_lm.training.checkpoint``), so a resume continues both exactly.

Host synchronisation happens only at log steps, evaluations and checkpoints: the running loss and
the first non-finite step are kept on the device and reported at the next sync point.

Data parallelism (``torch_lm.training.distributed``): with K ranks each step takes this rank's
``B/K`` rows of the global batch and ``DistributedDataParallel`` averages the gradients, so the
step is the single-process step. The logged train loss and the held-out loss are reduced over the
ranks; SIGINT/SIGTERM, the time budget and non-finite losses are agreed on by all ranks before
anyone acts; only rank 0 writes files. Each rank draws its own dropout masks (stream
``dropout/rank<r>``; rank 0's is the single-process stream), so with dropout > 0 a K-rank run is a
different, equally valid, sample of masks than a 1-process run; with dropout 0 the two agree to
rounding. Checkpoints hold every rank's dropout generator, so a resume with the same K is exact;
ranks that find no saved state (a larger K) reseed theirs from ``(seed, step)``.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm  # in a notebook, one widget bar updated in place

from numpy_ref.config import ModelConfig
from numpy_ref.validation import fail
from torch_lm.metrics import perplexity
from torch_lm.neural_lm import NeuralLM
from torch_lm.training.batches import BatchSampler, check_split_fits, split_ids, step_seed
from torch_lm.training.checkpoint import (
    BEST,
    LAST,
    build_checkpoint,
    prepare_run_dir,
    restore_training_state,
    save_checkpoint,
)
from torch_lm.training.config import DTYPES, TrainConfig, ema_min_steps, resolve_device
from torch_lm.training.distributed import Distributed, StopVote, shard_bounds
from torch_lm.training.heldout import HeldoutResult, sharded_heldout
from torch_lm.training.sampling import generate, sample_prompt
from torch_lm.training.signals import NonFiniteLossError, TrainingInterrupted, stop_on_signals
from torch_lm.training.step import build_training_step
from torch_lm.training.tensorboard_log import TensorBoardLogger
from torch_lm.training.vocab import CharVocab


def dropout_stream(rank: int) -> str:
    """Name of rank ``rank``'s dropout generator, both its seed stream and its checkpoint key;
    rank 0 keeps the single-process name, so 1-process runs and checkpoints are unchanged."""
    return "dropout" if rank == 0 else f"dropout/rank{rank}"


def build_model(model_config: ModelConfig, config: TrainConfig, device: torch.device) -> NeuralLM:
    """The model in the configured dtype, initialised from the seed, on the device, in train mode."""
    model = NeuralLM(model_config).to(DTYPES[config.dtype])
    model.reset_parameters(generator=torch.Generator().manual_seed(step_seed(config.seed, 0, "init")))
    return model.to(device).train()


def rank_data(
    ids: torch.Tensor, context: int, config: TrainConfig, dist: Distributed, device: torch.device
) -> tuple[BatchSampler, torch.Tensor, torch.Tensor]:
    """This rank's batches and share of the held-out positions, from the text's ids (N,).

    The sampler draws from the train split without its ``holdout_tail``. The held-out text is val,
    or that tail when there is one, so that a run made to choose something never sees val. This
    rank's share is (the ``context`` ids before it, its held-out ids): each rank scores its shard
    with the contexts the whole evaluation gives it (one rank: the whole split).
    """
    train_ids, val_ids = split_ids(ids)
    check_split_fits(len(train_ids), len(val_ids), context)
    train_ids, val_ids = train_ids.to(device), val_ids.to(device)
    trained_on = train_ids[: len(train_ids) - config.holdout_tail]  # (N - holdout,)
    if config.holdout_tail:
        train_ids, val_ids = trained_on, train_ids[len(trained_on) :]
    sampler = BatchSampler(
        trained_on,
        context,
        config.batch_size,
        config.seed,
        rank=dist.rank,
        world_size=dist.world_size,
        targets_per_row=config.targets_per_row,
    )
    start, stop = shard_bounds(len(val_ids), dist.rank, dist.world_size)
    stream = torch.cat([train_ids[len(train_ids) - context :], val_ids])
    return sampler, stream[start : start + context], val_ids[start:stop]


class Trainer:
    """State of one training run; ``train()`` builds one and calls ``run()``."""

    def __init__(
        self, model_config: ModelConfig, config: TrainConfig, text: str, distributed: Distributed | None = None
    ):
        self.dist = distributed or Distributed(resolve_device(config.device))
        self.device = self.dist.device
        # What the run records is what it takes here: the precision (never "auto"; a resume continues
        # it) and the EMA of the weights only where the run is long enough for one.
        self.config, self.model_config = config.resolved(self.device), model_config
        if config.ema_decay and not self.config.ema_decay and self.dist.is_main:
            print(
                f"no EMA of the weights: {config.max_steps} steps are too few for decay {config.ema_decay:g} "
                f"(the initial weights would keep {config.ema_decay**config.max_steps:.0%} of it; "
                f"it needs {ema_min_steps(config.ema_decay):,} steps)",
                file=sys.stderr,
            )
        config = self.config
        self.vocab = CharVocab.from_text(text)
        if model_config.vocab_size != len(self.vocab):
            fail(
                "train",
                f"model_config.vocab_size is {model_config.vocab_size} but the text has "
                f"{len(self.vocab)} distinct characters",
            )
        self.run_dir = Path(config.run_dir)
        self.heldout_split = "tail" if config.holdout_tail else "val"
        self.sampler, self.eval_prefix, self.eval_shard = rank_data(
            self.vocab.encode(text), model_config.context, config, self.dist, self.device
        )

        self.model = build_model(model_config, config, self.device)
        self.dropout_generator = torch.Generator(self.device).manual_seed(
            step_seed(config.seed, 0, dropout_stream(self.dist.rank))
        )
        self.step, self.best_val_loss, self.last_saved_step = 0, math.inf, None
        checkpoint = prepare_run_dir(
            self.run_dir, config.resume, self.dist.is_main, self.model, self.vocab, self.device
        )
        # DDP wraps after the restore: it broadcasts rank 0's weights (equal anyway) and hooks the
        # averaging. Log steps run the eager module, ordinary steps the compiled one if asked for.
        self.train_step = build_training_step(self.model, config, wrap=self.dist.wrap)
        if checkpoint is not None:
            self.step, self.best_val_loss = checkpoint["step"], checkpoint["best_val_loss"]
            restore_training_state(
                checkpoint,
                self.run_dir / LAST,
                self.train_step,
                self.dropout_generator,
                dropout_stream(self.dist.rank),
                config.seed,
                with_running_loss=self.dist.is_main,
            )
        # A resumed run replaces what the previous one logged after its checkpoint; events of
        # the checkpoint's own step were written before it was saved, so they stay.
        self.logger = TensorBoardLogger(
            self.run_dir, enabled=self.dist.is_main, purge_step=self.step + 1 if checkpoint is not None else None
        )
        self.train_history: list[tuple[int, float]] = []
        self.val_history: list[tuple[int, float]] = []
        self.last_eval: HeldoutResult | None = None
        self.train_seconds, self.trained_steps = 0.0, 0
        self._mark_throughput()

    @property
    def eval_model(self) -> NeuralLM:
        """The weights the run's figures come from: the EMA of the weights when the run keeps one
        (the same on every rank, like the weights it averages), else the model being trained."""
        ema = self.train_step.ema
        return self.model if ema is None else ema.module

    # ----------------------------------------------------------------------------- the loop
    def run(self) -> dict[str, Any]:
        """Train to ``max_steps`` (or the time budget), evaluating and checkpointing on the way."""
        config, status, start = self.config, "completed", time.monotonic()
        bar = tqdm(
            total=config.max_steps,
            initial=self.step,
            desc="train",
            unit="step",
            dynamic_ncols=True,
            disable=not self.logger.enabled,
        )
        try:
            with stop_on_signals() as stop_signal:
                self._mark_throughput()
                vote = StopVote(self.dist)
                while self.step < config.max_steps:
                    # Every rank stops at the same step, or the others would wait forever in
                    # the next gradient all-reduce.
                    interrupted, out_of_time = vote(
                        stop_signal["stop"], bool(config.time_budget) and time.monotonic() - start >= config.time_budget
                    )
                    if interrupted:
                        raise self._interrupt(stop_signal["signal"])
                    if out_of_time:
                        status = "time_budget"
                        break
                    x, y = self.sampler.batch(self.step)
                    self.train_step(
                        self.step,
                        x,
                        y,
                        capture=(self.step + 1) % config.log_interval == 0,
                        generator=self.dropout_generator,
                    )
                    self.step += 1
                    self._interval_steps += 1
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
        return run_summary(self, status, time.monotonic() - start)

    def _check_finite(self) -> None:
        """Raise ``NonFiniteLossError`` naming the first step whose loss was NaN or infinite on
        any rank (every rank raises together)."""
        bad_step = int(self.dist.all_reduce(self.train_step.first_bad_step.clone(), "min"))
        if bad_step != sys.maxsize:
            raise self._diverged(f"training loss became non-finite at step {bad_step}")

    def _diverged(self, what: str) -> NonFiniteLossError:
        """The error that stops a diverged run, naming the checkpoint left in place."""
        kept = (
            f"the last good checkpoint is {self.run_dir / LAST} (step {self.last_saved_step})"
            if self.last_saved_step is not None
            else "no checkpoint was written before it"
        )
        return NonFiniteLossError(f"{what}; stopped ({kept}); try a lower --lr or --grad-clip")

    def _mark_throughput(self) -> None:
        """Start a throughput interval (after evaluations too, so they do not count as training)."""
        self._interval_start, self._interval_steps = time.monotonic(), 0

    def _log(self, bar: tqdm) -> None:
        """A log step: the only per-interval host sync (loss, diagnostics, throughput)."""
        self._check_finite()
        elapsed = time.monotonic() - self._interval_start
        loss, tokens_per_sec = self.train_step.close_interval(
            self.logger, self.step, self._interval_steps, elapsed, self.config.targets_per_step, self.dist.all_reduce
        )
        self.train_seconds += elapsed
        self.trained_steps += self._interval_steps
        self.train_history.append((self.step, loss))
        bar.set_postfix(
            {"loss": f"{loss:.4f}", "ppl": f"{float(perplexity(loss)):.2f}", "tok/s": f"{tokens_per_sec:,.0f}"},
            refresh=False,
        )
        self._mark_throughput()

    def _evaluate_and_save(self, bar: tqdm) -> None:
        """Held-out loss, a sample, histograms; then ``last.pt`` (and ``best.pt`` if improved)."""
        self._check_finite()
        self.train_seconds += time.monotonic() - self._interval_start
        self.trained_steps += self._interval_steps
        result = sharded_heldout(
            self.eval_model,
            self.eval_prefix,
            self.eval_shard,
            self.model_config.context,
            self.config.eval_batch_size,
            self.dist.all_reduce,
        )
        if not math.isfinite(result.loss):
            raise self._diverged(f"held-out loss is non-finite at step {self.step}")
        self.last_eval = result
        self.val_history.append((self.step, result.loss))
        sample = self._sample() if self.dist.is_main else ""
        # Histograms: the trained weights, whose gradients they show beside them.
        self.logger.log_eval(self.step, result, self.model, sample, self.heldout_split)
        improved = result.loss < self.best_val_loss
        self.best_val_loss = min(self.best_val_loss, result.loss)
        self._save(also_best=improved)
        if self.logger.enabled:
            bar.write(
                f"step {self.step}: {self.heldout_split} loss {result.loss:.4f}, perplexity "
                f"{result.perplexity:.3f}{' (best)' if improved else ''}"
            )
        self._mark_throughput()

    def _sample(self) -> str:
        """A ``sample_length``-character sample; its generator is seeded by (seed, step) so that
        sampling never disturbs the training randomness."""
        if self.config.sample_length == 0:
            return ""
        generator = torch.Generator(self.device).manual_seed(step_seed(self.config.seed, self.step, "sample"))
        prompt = self.vocab.encode(sample_prompt(self.vocab)).to(self.device)[None]  # (1, 1)
        return self.vocab.decode(generate(self.eval_model, prompt, self.config.sample_length, generator=generator)[0])

    def _save(self, also_best: bool = False) -> None:
        """Atomically write ``last.pt`` (and the same checkpoint as ``best.pt``) on rank 0.

        Collective: every rank contributes its dropout generator state and running loss. Weights
        that became non-finite (a huge but finite loss can give a non-finite update) never
        replace a good checkpoint; DDP keeps them equal on every rank, so all ranks agree.
        """
        if not torch.stack([torch.isfinite(p).all() for p in self.model.parameters()]).all():
            raise self._diverged(f"weights became non-finite at step {self.step}")
        loss_sum, tokens = self.train_step.running_totals(self.dist.all_reduce)
        states = self.dist.all_gather(self.dropout_generator.get_state())
        if self.dist.is_main:
            self.logger.flush()
            checkpoint = build_checkpoint(
                self.model,
                self.train_step.optimizer,
                self.model_config,
                self.config.to_dict(),
                self.vocab,
                self.step,
                self.best_val_loss,
                {dropout_stream(rank): state for rank, state in enumerate(states)},
                loss_sum,
                tokens,
                ema=self.train_step.ema,
            )
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
        """The projector embedding (of ``eval_model``, the checkpoint's ``model``) and the hparams
        (whose metrics are the final ``loss/val``)."""
        self.logger.log_embedding(self.step, self.eval_model.state_dict()["embedding.weight"], self.vocab)
        self.logger.log_hparams(self.model_config.to_dict(), self.config.to_dict(), self.heldout_split)
        self.logger.close()


def run_summary(trainer: Trainer, status: str, elapsed: float) -> dict[str, Any]:
    """What ``train`` returns (JSON-serialisable)."""
    result = trainer.last_eval
    return {
        "status": status,
        "steps": trainer.step,
        "heldout": trainer.heldout_split,
        **result.to_dict(),
        "best_val_loss": trainer.best_val_loss,
        "train_loss": trainer.train_history[-1][1] if trainer.train_history else None,
        "train_history": [list(item) for item in trainer.train_history],
        "val_history": [list(item) for item in trainer.val_history],
        "tokens_per_sec": trainer.trained_steps * trainer.config.targets_per_step / max(trainer.train_seconds, 1e-9),
        "elapsed_seconds": elapsed,
        "parameters": trainer.model.num_parameters(),
        "device": str(trainer.device),
        "precision": trainer.config.precision,
        "ema_decay": trainer.config.ema_decay,
        "world_size": trainer.dist.world_size,
        "run_dir": str(trainer.run_dir),
    }


def train(
    model_config: ModelConfig, train_config: TrainConfig, text: str, distributed: Distributed | None = None
) -> dict[str, Any]:
    """Train a ``NeuralLM`` on ``text`` (split 90/10) and return a summary dict.

    ``distributed`` (from ``torch_lm.training.distributed.distributed_session``) makes this process
    one data-parallel rank; without it the run is a single process on ``train_config.device``.

    Writes TensorBoard events, ``metrics.jsonl``, ``last.pt`` and ``best.pt`` to
    ``train_config.run_dir``. ``model_config.vocab_size`` must equal the number of distinct
    characters of ``text``. Raises ``ValueError`` for bad settings, ``DataError``/``CheckpointError``
    for unusable inputs, ``NonFiniteLossError`` if the loss diverges and ``TrainingInterrupted`` on
    SIGINT or SIGTERM (after saving ``last.pt``). Seeds only its own generators (initialisation,
    batches, dropout, samples): the global torch RNG is left alone.
    """
    return Trainer(model_config, train_config, text, distributed).run()
