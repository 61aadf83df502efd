"""Stage 3's implementation exercises (3.5 to 3.8) as checks of a learner's code, under the
sheet's own names and signatures.

Where the sheet fixes a name, the check holds the learner to it: ``Embedding(vocab_size, dim)``
with ``W``, ``forward(indices)``, ``backward(grad, indices)`` accumulating into ``W_grad``;
``NeuralLM(vocab_size, embed_dim, hidden_dim, context_size)`` with ``forward(context_indices)``
and ``loss(logits, targets)``; ``stable_softmax(z)``, ``log_softmax(z)``;
``train_epoch(model, data, optimizer)`` returning the perplexity. Where the sheet leaves a name
open (the NeuralLM's weights), the check tests behaviour, and compares the logits with
``torch_lm``'s NeuralLM when the weights carry the optional names ``embedding.W`` (or ``E``),
``W1``, ``b1``, ``W2``, ``b2`` (README, "Checking your own code").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from numpy_ref.config import ModelConfig
from torch_lm.exercises.core import Exercise, Failure, Mistake, expect, fail
from torch_lm.exercises.learner import call, require, require_written
from torch_lm.parity import Case, run_torch
from torch_lm.parity.components import CROSS_ENTROPY, EMBEDDING, LOG_SOFTMAX, NEURAL_LM, SOFTMAX


@dataclass
class Batch:
    """What ``train_epoch`` iterates over and ``NeuralLM.train_step`` receives: ``context``
    [batch, context_size] token ids and ``targets`` [batch], the id after each context."""

    context: np.ndarray
    targets: np.ndarray

    @property
    def n_tokens(self) -> int:
        return len(self.targets)


# ----------------------------------------------------------------------------- 3.5
def _buffered_scatter(W_shape, indices, grad):
    W_grad = np.zeros(W_shape)
    W_grad[indices] += grad  # each repeated id keeps only one of its gradients
    return W_grad


EMBEDDING_GRAD_MISTAKES = [
    Mistake(
        "only repeated ids are wrong: W_grad[indices] += grad keeps one gradient per repeated id; np.add.at adds them all",
        _buffered_scatter,
    ),
]
INDICES = np.array([[2, 0, 2], [2, 4, 0]])  # id 2 three times, 0 twice, 1, 3 and 5 never


def check_embedding(namespace) -> None:
    Embedding = require(namespace, "Embedding")
    table = call("Embedding(50, 8)", Embedding, 50, 8)
    W = getattr(table, "W", None)
    if np.shape(W) != (50, 8):
        raise fail("Embedding(50, 8).W", "shape (50, 8)", f"shape {np.shape(W)}", "W is a (vocab_size, dim) table")
    _check_initial_scale(call("Embedding(1000, 64)", Embedding, 1000, 64).W)

    rng = np.random.default_rng(35)
    weight, grad = rng.standard_normal((6, 3)), rng.standard_normal(INDICES.shape + (3,))
    torch_run = run_torch(EMBEDDING, Case({"weight": weight}, {"idx": INDICES}, upstream={"out": grad}))
    table = call("Embedding(6, 3)", Embedding, 6, 3)
    table.W = weight.copy()
    table.W_grad = np.zeros_like(weight)
    out = call("Embedding.forward", table.forward, INDICES.copy())
    expect(out, torch_run.outputs["out"], "embeddings")
    call("Embedding.backward", table.backward, grad.copy(), INDICES.copy(), allow_none=True)
    W_grad = getattr(table, "W_grad", None)
    if W_grad is None:
        raise fail("Embedding.W_grad", "an array (6, 3)", "nothing", "backward accumulates into self.W_grad")
    expect(W_grad, torch_run.grads["weight"], "W_grad", EMBEDDING_GRAD_MISTAKES, (weight.shape, INDICES, grad))


def _check_initial_scale(W) -> None:
    """64,000 draws of N(0, 0.01²): the sample std lies within 0.2 % of 0.01; 5 % is allowed."""
    std = float(np.std(W))
    if not 0.0095 <= std <= 0.0105:
        cause = "N(0, 1) draws without the sheet's scale: np.random.randn(vocab_size, dim) * 0.01"
        if not math.isclose(std, 1.0, rel_tol=0.05):
            cause = "the table starts as N(0, 1) draws times 0.01, a std of 0.01"
        raise fail("Embedding(1000, 64).W std", "0.01", f"{std:.6g}", cause)


# ----------------------------------------------------------------------------- 3.6
V, E, H, C = 13, 4, 16, 3  # the NeuralLM the check builds: vocab, embed, hidden, context
LOSS_MISTAKES = [
    Mistake("a sum over the batch where the loss is the mean", lambda z, t: _mean_ce(z, t) * len(t)),
    Mistake("log base 2: the loss is in nats", lambda z, t: _mean_ce(z, t) / math.log(2)),
]


def _mean_ce(logits, targets):
    return run_torch(CROSS_ENTROPY, Case({"logits": logits}, {"targets": targets})).outputs["loss"]


def check_neural_lm(namespace) -> None:
    NeuralLM = require(namespace, "NeuralLM")
    require_written("NeuralLM.__init__", NeuralLM.__init__)
    model = call(f"NeuralLM({V}, {E}, {H}, {C})", NeuralLM, V, E, H, C)
    rng = np.random.default_rng(36)
    idx, targets = rng.integers(0, V, (5, C)), rng.integers(0, V, 5)
    logits = _logits(model, idx)
    if logits.shape != (5, V) or not np.all(np.isfinite(logits)):
        raise fail(
            "logits", f"finite, shape (5, {V})", f"shape {logits.shape}", "forward returns [batch, vocab_size] logits"
        )
    expect(_logits(model, idx[:1]), logits[:1], "logits of row 0 alone")
    _check_context_is_used(model, idx, logits)
    for z in (logits, 1000.0 + rng.standard_normal((4, V))):  # the second overflows exp unless the max is subtracted
        t = targets[: len(z)]
        expect(call("NeuralLM.loss", model.loss, z.copy(), t.copy()), _mean_ce(z, t), "loss", LOSS_MISTAKES, (z, t))
    _check_named_weights(model, idx, logits)
    if hasattr(model, "train_step"):
        _check_training(model, rng)


def _logits(model, idx) -> np.ndarray:
    return np.asarray(call("NeuralLM.forward", model.forward, idx.copy()), dtype=np.float64)


def _check_context_is_used(model, idx, logits) -> None:
    for j in range(C):
        changed = idx.copy()
        changed[:, j] = (idx[:, j] + 1) % V
        if np.allclose(_logits(model, changed), logits, rtol=0, atol=0):
            raise fail(
                "logits",
                f"a change when context position {j} changes",
                "no change",
                "the hidden layer sees the whole context: embed, flatten each row, then the hidden layer",
            )


def _check_named_weights(model, idx, logits) -> None:
    """With the optional names, the logits must be torch_lm's flat NeuralLM's (tanh or ReLU)."""
    params = _torch_params(model)
    if params is None:
        return
    failures = []
    for activation in ("tanh", "relu"):
        config = ModelConfig(V, C, E, H, fusion=(), n_blocks=0, activation=activation, norm=False, dropout=0.0)
        expected = run_torch(NEURAL_LM, Case(params, {"config": config, "idx": idx})).outputs["logits"]
        try:
            expect(logits, expected, f"logits (torch_lm NeuralLM, {activation})")
            return
        except Failure as failure:
            failures.append(failure)
    raise Failure(
        failures[0].mismatch, "with these weights the logits are neither tanh(x W1 + b1) W2 + b2 nor its ReLU form"
    )


def _torch_params(model) -> dict | None:
    """The learner's weights keyed like torch_lm's flat NeuralLM, or None without the names."""
    table = getattr(getattr(model, "embedding", None), "W", getattr(model, "E", None))
    weights = [getattr(model, name, None) for name in ("W1", "b1", "W2", "b2")]
    if table is None or any(w is None for w in weights):
        return None
    W1, b1, W2, b2 = (np.asarray(w, np.float64) for w in weights)
    return {
        "embedding.weight": np.asarray(table, np.float64),
        "hidden.0.linear.weight": W1.T if W1.shape == (C * E, H) else W1,  # torch's layout: (out, in)
        "hidden.0.linear.bias": b1,
        "output.weight": W2.T if W2.shape == (H, V) else W2,
        "output.bias": b2,
    }


def _check_training(model, rng) -> None:
    batch = Batch(rng.integers(0, V, (8, C)), rng.integers(0, V, 8))
    losses = [float(call("NeuralLM.train_step", model.train_step, batch)) for _ in range(50)]
    if not losses[-1] < losses[0] - 1e-3:
        raise fail(
            "train_step loss after 50 steps on one batch",
            f"below {losses[0]:.6g}",
            f"{losses[-1]:.6g}",
            "the loss does not fall: check the gradient's sign and that every weight is updated",
        )


# ----------------------------------------------------------------------------- 3.7
def _softmax_all(z):
    e = np.exp(z - z.max())
    return e / e.sum()


SOFTMAX_MISTAKES = [
    Mistake("normalised over the whole array: reduce the last axis, axis=-1 with keepdims=True", _softmax_all),
    Mistake(
        "normalised over axis 0: each row (the last axis) is a distribution",
        lambda z: np.exp(z) / np.exp(z).sum(axis=0),
    ),
]
LOG_SOFTMAX_MISTAKES = [
    Mistake(
        "log(softmax(z)) gives -inf where softmax underflows to 0: z - max - log(sum(exp(z - max)))",
        lambda z: np.log(
            np.exp(z - z.max(axis=-1, keepdims=True))
            / np.exp(z - z.max(axis=-1, keepdims=True)).sum(axis=-1, keepdims=True)
        ),
    ),
    Mistake(
        "normalised over the whole array: reduce the last axis, axis=-1 with keepdims=True",
        lambda z: np.log(_softmax_all(z)),
    ),
]


def softmax_cases():
    rng = np.random.default_rng(37)
    yield np.array([1.0, 2.0, 3.0])
    yield np.array([1000.0, 0.0, -1000.0])  # exp(1000) overflows; exp(-2000) underflows
    yield 5.0 * rng.standard_normal((4, 6))
    yield np.array([[1000.0, 999.0, 0.0], [-5.0, 0.0, 5.0]])


def check_softmax(namespace) -> None:
    softmax, log_softmax = require(namespace, "stable_softmax"), require(namespace, "log_softmax")
    for z in softmax_cases():
        expected = run_torch(SOFTMAX, Case({"x": z})).outputs["out"]
        expect(call("stable_softmax", softmax, z.copy()), expected, "stable_softmax(z)", SOFTMAX_MISTAKES, (z,))
        expected = run_torch(LOG_SOFTMAX, Case({"x": z})).outputs["out"]
        expect(call("log_softmax", log_softmax, z.copy()), expected, "log_softmax(z)", LOG_SOFTMAX_MISTAKES, (z,))


# ----------------------------------------------------------------------------- 3.8
class _RecordedModel:
    """A model whose ``train_step`` returns preset losses, one per call, and counts the calls."""

    def __init__(self, losses):
        self.losses, self.calls = list(losses), 0

    def train_step(self, batch):
        loss = self.losses[self.calls % len(self.losses)]
        self.calls += 1
        return loss


class _Optimizer:
    """An optimiser that does nothing: the recorded model has no parameters to update."""

    def step(self):
        pass

    def zero_grad(self):
        pass


SIZES, LOSSES = [10, 1, 50, 3], [2.0, 5.0, 1.5, 3.0]  # batches of very different sizes
WEIGHTED = sum(loss * n for loss, n in zip(LOSSES, SIZES)) / sum(SIZES)
EPOCH_MISTAKES = [
    Mistake("an unweighted mean of the batch losses: weight each by batch.n_tokens", lambda: math.exp(np.mean(LOSSES))),
    Mistake("2 ** avg_loss is for a loss in bits; this one is in nats: math.exp(avg_loss)", lambda: 2**WEIGHTED),
    Mistake("returns the average loss; the perplexity is exp(avg_loss)", lambda: WEIGHTED),
    Mistake(
        "the exponential of the total, not of the average: divide by n_tokens", lambda: math.exp(WEIGHTED * sum(SIZES))
    ),
    Mistake("total_loss adds each loss without its weight batch.n_tokens", lambda: math.exp(sum(LOSSES) / sum(SIZES))),
]


def check_train_epoch(namespace) -> None:
    train_epoch = require(namespace, "train_epoch")
    model = _RecordedModel(LOSSES)
    data = [Batch(np.zeros((n, 3), np.int64), np.zeros(n, np.int64)) for n in SIZES]
    perplexity = call("train_epoch", train_epoch, model, data, _Optimizer())
    if model.calls != len(data):
        raise fail(
            "train_step calls",
            f"{len(data)}, one per batch",
            f"{model.calls}",
            "call model.train_step(batch) once per batch",
        )
    expect(perplexity, math.exp(WEIGHTED), "perplexity", EPOCH_MISTAKES)


EXERCISES = [
    Exercise(
        "3.5",
        "embedding from scratch",
        ("Embedding",),
        "Embedding(vocab_size, dim): W, forward(indices), backward(grad, indices) -> W_grad",
        check_embedding,
    ),
    Exercise(
        "3.6",
        "two-layer neural LM",
        ("NeuralLM",),
        "NeuralLM(vocab_size, embed_dim, hidden_dim, context_size): forward(context_indices), loss(logits, targets)",
        check_neural_lm,
    ),
    Exercise(
        "3.7",
        "softmax stability",
        ("stable_softmax", "log_softmax"),
        "stable_softmax(z) -> p; log_softmax(z) -> log p",
        check_softmax,
    ),
    Exercise(
        "3.8",
        "perplexity tracking",
        ("train_epoch",),
        "train_epoch(model, data, optimizer) -> perplexity",
        check_train_epoch,
    ),
]
