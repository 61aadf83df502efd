"""Checkpoints: ``last.pt`` / ``best.pt``, written atomically and read with ``weights_only=True``.

A checkpoint is a dict of plain data and tensors — nothing else — so that it loads with
``torch.load(..., weights_only=True)``, which refuses any pickled object that could run code:

=================  ==========================================================================
``format_version`` int, ``FORMAT_VERSION``
``model``          the ``state_dict()`` (tensors) of the weights the run's figures come from: the
                   trained model's, or with ``ema_decay`` the exponential moving average's, so
                   every reader (evaluate, generate, the reports) takes the model as reported
``optimizer``      the optimizer's ``state_dict()`` (tensors, numbers, lists, tuples, None)
``model_config``   ``ModelConfig.to_dict()``
``train_config``   ``TrainConfig.to_dict()``
``vocab``          the characters in id order, a list of str
``step``           optimizer steps completed
``rng``            ``{"dropout": ByteTensor}``: the state of the training's dropout generator
                   (data-parallel runs add ``"dropout/rank<r>"`` for every rank r > 0)
``best_val_loss``  best held-out loss so far (``inf`` before the first evaluation)
``running``        ``{"loss_sum": float, "tokens": int}``: the train-loss accumulator of the
                   current log interval (summed over data-parallel ranks), so a resumed run
                   logs the same numbers
=================  ==========================================================================

With ``ema_decay`` two more keys let ``--resume`` continue exactly (a checkpoint without them, of
a run without EMA or an older one, loads as before: its ``model`` is the trained weights):

=====================  ======================================================================
``training_weights``   the ``state_dict()`` of the model being trained (the optimiser's)
``ema_updates``        int, the average's update count (``AveragedModel.n_averaged``)
=====================  ======================================================================

Training draws randomness only from its own dropout generator (saved) and from generators seeded
by ``(seed, step)`` (initialisation, batches, samples; nothing to save). It never uses torch's
global generator, NumPy's or Python's ``random``, so no other RNG state needs saving.
"""

from __future__ import annotations

import io
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from torch.optim.swa_utils import AveragedModel

from numpy_ref.config import ModelConfig
from torch_lm.neural_lm import NeuralLM
from torch_lm.training.batches import step_seed
from torch_lm.training.config import DTYPES
from torch_lm.training.text import write_atomically
from torch_lm.training.vocab import CharVocab

FORMAT_VERSION = 1
LAST = "last.pt"
BEST = "best.pt"
DEFAULT_CHECKPOINT = "runs/default/last.pt"  # the last step's: best.pt is selected on val

# key -> type its value must have after loading (a structural check before anything uses it).
_SCHEMA: dict[str, type | tuple[type, ...]] = {
    "format_version": int,
    "model": dict,
    "optimizer": dict,
    "model_config": dict,
    "train_config": dict,
    "vocab": list,
    "step": int,
    "rng": dict,
    "best_val_loss": float,
    "running": dict,
}
# Keys only a run with an EMA of the weights writes, and their types when present.
_EMA_SCHEMA: dict[str, type] = {"training_weights": dict, "ema_updates": int}


class CheckpointError(ValueError):
    """The checkpoint cannot be used; the message is one line naming the file and the problem."""


def build_checkpoint(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    model_config: ModelConfig,
    train_config_dict: dict,
    vocab: CharVocab,
    step: int,
    best_val_loss: float,
    rng: dict[str, torch.Tensor],
    running_loss_sum: float,
    running_tokens: int,
    ema: AveragedModel | None = None,
) -> dict[str, Any]:
    """The checkpoint dict described in the module docstring; with ``ema``, its ``model`` is the
    average's weights and ``model``'s go under ``training_weights``."""
    checkpoint = {
        "format_version": FORMAT_VERSION,
        "model": model.state_dict() if ema is None else ema.module.state_dict(),
        "optimizer": optimizer.state_dict(),
        "model_config": model_config.to_dict(),
        "train_config": dict(train_config_dict),
        "vocab": vocab.to_list(),
        "step": int(step),
        "rng": {name: state.cpu() for name, state in rng.items()},
        "best_val_loss": float(best_val_loss),
        "running": {"loss_sum": float(running_loss_sum), "tokens": int(running_tokens)},
    }
    if ema is not None:
        checkpoint |= {"training_weights": model.state_dict(), "ema_updates": int(ema.n_averaged)}
    return checkpoint


def save_checkpoint(path: str | os.PathLike, checkpoint: dict[str, Any]) -> Path:
    """Write ``checkpoint`` to ``path`` atomically; return the path.

    ``torch.save`` serialises it in memory, then ``torch_lm.training.text.write_atomically`` writes the
    bytes to a temporary file in the same directory, fsyncs it, renames it over ``path`` and
    fsyncs the directory: a crash at any moment leaves either the previous checkpoint or the
    complete new one, never a torn file. (In memory first: a checkpoint of this project's models
    is a few MB, and one writer of the atomic protocol is easier to trust than two.)
    """
    path = Path(path)
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    write_atomically(path, buffer.getbuffer())
    return path


def remove_stale_temporaries(run_dir: str | os.PathLike) -> list[Path]:
    """Delete the temporary files a crash (e.g. kill -9) left behind in the middle of
    ``save_checkpoint`` for ``last.pt``/``best.pt``; return their paths.

    Only for the start of a run, when no save can be in flight: each leftover may be as large as
    a checkpoint, and a run that crashes repeatedly would otherwise pile them up.
    """
    run_dir = Path(run_dir)
    stale = [tmp for name in (LAST, BEST) for tmp in run_dir.glob(f".{name}.*.tmp")]
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return stale


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` and check its structure.

    Raises ``CheckpointError`` (one line) for a missing, truncated or garbage file, for a file that
    holds pickled objects other than plain data (possibly code, refused unexecuted), and for a
    dict that lacks a key or has a value of the wrong type.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        # weights_only names the first non-allowlisted global it met (e.g. posix.system).
        refused = re.search(r"GLOBAL (\S+)", str(error))
        if refused:
            raise CheckpointError(
                f"refusing checkpoint {path}: it references {refused.group(1)}, which is not "
                f"plain data (possibly code); only checkpoints written by torch-lm are accepted"
            ) from None
        raise CheckpointError(
            f"cannot read checkpoint {path}: not a torch checkpoint (unsupported pickle content)"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise CheckpointError(
            f"cannot read checkpoint {path}: truncated or not a torch checkpoint ({_one_line(error)})"
        ) from None
    _check_structure(path, checkpoint)
    return checkpoint


def _one_line(error: BaseException, limit: int = 160) -> str:
    """An exception's message with all whitespace collapsed, shortened: errors stay one line."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_structure(path: Path, checkpoint: object) -> None:
    """Raise ``CheckpointError`` unless ``checkpoint`` matches ``_SCHEMA`` and its vocab/config parse."""
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(checkpoint).__name__}, not a torch-lm checkpoint dict")
    missing = sorted(set(_SCHEMA) - set(checkpoint))
    if missing:
        raise CheckpointError(f"checkpoint {path} is not a torch-lm checkpoint: missing {missing}")
    present = {key: kind for key, kind in _EMA_SCHEMA.items() if key in checkpoint}
    if len(present) == 1:
        raise CheckpointError(f"checkpoint {path} is not a torch-lm checkpoint: {sorted(present)} without the other")
    for key, kind in (_SCHEMA | present).items():
        if not isinstance(checkpoint[key], kind) or isinstance(checkpoint[key], bool):
            raise CheckpointError(
                f"checkpoint {path}: {key!r} should be a {kind.__name__}, got {type(checkpoint[key]).__name__}"
            )
    if checkpoint["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {checkpoint['format_version']}"
            f"; this torch-lm reads version {FORMAT_VERSION}"
        )
    try:
        CharVocab.from_list(checkpoint["vocab"])
        ModelConfig.from_dict(checkpoint["model_config"])
    except (ValueError, TypeError) as error:
        raise CheckpointError(f"checkpoint {path}: {_one_line(error)}") from None


def checkpoint_vocab(checkpoint: dict[str, Any]) -> CharVocab:
    """The checkpoint's vocabulary."""
    return CharVocab.from_list(checkpoint["vocab"])


def checkpoint_model_config(checkpoint: dict[str, Any]) -> ModelConfig:
    """The checkpoint's ``ModelConfig``."""
    return ModelConfig.from_dict(checkpoint["model_config"])


def check_vocab_matches(path: str | os.PathLike, checkpoint: dict[str, Any], vocab: CharVocab) -> None:
    """Raise ``CheckpointError`` unless the checkpoint was trained on exactly ``vocab``.

    Ids are positions in the vocabulary, so even one added or missing character shifts every id
    after it and the embedding rows would mean different characters.
    """
    saved = checkpoint_vocab(checkpoint)
    if saved == vocab:
        return
    extra = sorted(set(vocab.to_list()) - set(saved.to_list()))
    gone = sorted(set(saved.to_list()) - set(vocab.to_list()))
    detail = (
        "; ".join(
            part
            for part in (
                f"the data adds {[CharVocab.label(c) for c in extra]}" if extra else "",
                f"the data lacks {[CharVocab.label(c) for c in gone]}" if gone else "",
            )
            if part
        )
        or "same characters in a different order"
    )
    raise CheckpointError(
        f"checkpoint {path} has a {len(saved)}-character vocabulary that does "
        f"not match the data's {len(vocab)} characters ({detail})"
    )


def check_model_config_matches(path: str | os.PathLike, checkpoint: dict[str, Any], model_config: ModelConfig) -> None:
    """Raise ``CheckpointError`` naming every field where ``model_config`` differs from the saved one."""
    saved = checkpoint["model_config"]
    wanted = model_config.to_dict()
    diffs = [f"{key} {saved.get(key)!r} vs {wanted[key]!r}" for key in wanted if saved.get(key) != wanted[key]]
    if diffs:
        raise CheckpointError(
            f"checkpoint {path} was trained with a different model (checkpoint vs requested: {', '.join(diffs)})"
        )


def load_model_state(
    path: str | os.PathLike, model: torch.nn.Module, checkpoint: dict[str, Any], key: str = "model"
) -> None:
    """``model.load_state_dict(checkpoint[key])`` with a one-line ``CheckpointError`` on mismatch."""
    try:
        model.load_state_dict(checkpoint[key])
    except RuntimeError as error:
        raise CheckpointError(f"checkpoint {path}: model weights do not fit its config ({_one_line(error)})") from None


def require_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint at ``path`` (``load_checkpoint``); if there is no file, the error names the
    command that writes it (training saves ``best.pt`` and ``last.pt`` into its ``--run-dir``)."""
    if not Path(path).is_file():
        raise CheckpointError(
            f"checkpoint {path} not found; train it first with: python scripts/train.py --run-dir {Path(path).parent}"
        )
    return load_checkpoint(path)


def model_from_checkpoint(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[NeuralLM, CharVocab]:
    """The checkpoint's NeuralLM (in the dtype it was trained in, so float64 weights stay float64,
    on ``device``, eval mode) and its vocabulary."""
    checkpoint = require_checkpoint(path)
    model = NeuralLM(checkpoint_model_config(checkpoint))
    model.to(DTYPES.get(checkpoint["train_config"].get("dtype"), torch.float32))
    load_model_state(path, model, checkpoint)
    return model.to(device).eval(), checkpoint_vocab(checkpoint)


def refuse_existing_run(run_dir: str | os.PathLike) -> None:
    """Raise ``ValueError`` if ``run_dir`` already holds a run (a ``last.pt``): a fresh run there
    would overwrite it and interleave two TensorBoard curves."""
    last = Path(run_dir) / LAST
    if last.exists():
        raise ValueError(
            f"train: {last} already exists; pass --resume to continue that run or choose another --run-dir"
        )


def prepare_run_dir(
    run_dir: Path, resume: bool, is_main: bool, model: torch.nn.Module, vocab: CharVocab, device: torch.device
) -> dict[str, Any] | None:
    """The checkpoint a run resumes from (its weights already loaded into ``model``), or None for
    a fresh run, which refuses a run dir that already holds ``last.pt``: it would overwrite that
    run and interleave two TensorBoard curves. Leftover temporary files are removed (rank 0)."""
    last = run_dir / LAST
    if is_main:
        remove_stale_temporaries(run_dir)
    if not resume:
        refuse_existing_run(run_dir)
        return None
    if not last.exists():
        raise CheckpointError(f"--resume: no checkpoint at {last}")
    checkpoint = load_checkpoint(last, map_location=device)
    check_vocab_matches(last, checkpoint, vocab)
    check_model_config_matches(last, checkpoint, model.config)
    # The weights training continues from: with an EMA, ``model`` holds the average instead.
    load_model_state(last, model, checkpoint, "training_weights" if "training_weights" in checkpoint else "model")
    return checkpoint


def restore_training_state(
    checkpoint: dict[str, Any],
    path: Path,
    train_step,
    dropout_generator: torch.Generator,
    stream: str,
    seed: int,
    with_running_loss: bool,
) -> None:
    """The optimiser state, the EMA of the weights, this rank's dropout generator (``stream``) and,
    ``with_running_loss``, the running loss of ``checkpoint`` into a run's ``TrainingStep`` and
    generator.

    A run with an EMA takes the saved average and its update count back; from a checkpoint without
    them (a run that kept no average) its average starts over, at the next step's weights.

    A rank that finds no saved generator (more ranks than the run that saved it) reseeds it from
    ``(seed, step)``: a fresh stream, still reproducible. The saved running loss is the sum over
    all ranks, so only one rank takes it back.
    """
    try:
        train_step.optimizer.load_state_dict(checkpoint["optimizer"])
        if train_step.ema is not None and "ema_updates" in checkpoint:
            train_step.ema.module.load_state_dict(checkpoint["model"])
            train_step.ema.n_averaged.fill_(checkpoint["ema_updates"])
        if stream in checkpoint["rng"]:
            dropout_generator.set_state(checkpoint["rng"][stream].cpu())
        else:
            dropout_generator.manual_seed(step_seed(seed, checkpoint["step"], stream))
        if with_running_loss:
            running = checkpoint["running"]
            train_step.running.update(running["loss_sum"], running["tokens"])
    except (KeyError, ValueError, RuntimeError, TypeError, AttributeError) as error:
        raise CheckpointError(
            f"checkpoint {path}: optimizer, EMA, RNG or running-loss state does not fit ({_one_line(error)})"
        ) from None
