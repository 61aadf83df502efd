"""Compress and decompress: one loop over the text, run by both sides.

The encoder knows each character and records the distribution it was predicted under; the decoder
decodes each character from the same distribution, then tells the predictor. Both run the same
``Predictor`` through ``run`` on the same threads (the header's BLAS thread count, one torch
thread), so every float operation happens in the same order on both sides.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from torch_lm.compression import coder
from torch_lm.compression.container import (
    CompressedFileError,
    Header,
    fingerprint,
    pack,
    text_crc,
    unpack,
)
from torch_lm.compression.models import KINDS, Settings, build_predictor, uses_train
from torch_lm.compression.predictors import Predictor
from torch_lm.training.batches import split_ids
from torch_lm.training.checkpoint import model_from_checkpoint
from torch_lm.training.text import load_text
from torch_lm.training.vocab import CharVocab

DEFAULT_THREADS = 2
PROGRESS_EVERY = 1024  # characters between progress-bar updates (an update costs more than a character)


@dataclass
class Sources:
    """What both sides build a model from: the checkpoint's NeuralLM (CPU, eval) and vocabulary,
    the checkpoint's fingerprint, and the data's train and val ids with its fingerprint (None
    until needed)."""

    model: torch.nn.Module
    vocab: CharVocab
    checkpoint: bytes
    data_path: str | None = None
    train_ids: torch.Tensor | None = None
    val_ids: torch.Tensor | None = None
    data: bytes = b""

    @classmethod
    def load(cls, checkpoint: str | Path, data_path: str | None = None) -> Sources:
        model, vocab = model_from_checkpoint(checkpoint, "cpu")
        return cls(model, vocab, fingerprint(Path(checkpoint).read_bytes()), data_path)

    def load_train(self) -> None:
        """Read the text (the project's data file unless ``data_path``), once."""
        if self.train_ids is not None:
            return
        text = load_text(self.data_path)
        try:
            ids = self.vocab.encode(text)
        except ValueError as error:
            raise ValueError(
                f"the data does not fit the checkpoint: {str(error).removeprefix('CharVocab.encode: ')}"
            ) from None
        (self.train_ids, self.val_ids), self.data = split_ids(ids), fingerprint(text.encode("utf-8"))


@dataclass(frozen=True)
class Compressed:
    """A compressed file's bytes, the code length the model promised (sum of -log2 p, bits) and
    the number of characters."""

    data: bytes
    ideal_bits: float
    characters: int


def prediction_threads() -> int:
    """The BLAS threads a compression predicts on: two where the machine has them. A matrix-vector
    product at one character per call is bound by reading the weights, and two cores read twice
    as fast; the count goes into the header, so decoding splits every product the same way."""
    return min(DEFAULT_THREADS, os.cpu_count() or 1)


@contextlib.contextmanager
def fixed_threads(blas: int) -> Iterator[None]:
    """``blas`` BLAS threads (NumPy's matrix products) and one torch thread (dynamic evaluation's
    step), restored after: a product split over another number of threads may add in another
    order, and the decoder must repeat the encoder's every rounding."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(blas, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(threads)


def run(
    predictor: Predictor, length: int, choose: Callable[[int, np.ndarray], int], threads: int, progress: bool
) -> None:
    """The one loop: for j < length, ``choose(j, distribution of character j)`` gives character j,
    which the predictor then sees; on ``threads`` BLAS threads."""
    with fixed_threads(threads), tqdm(total=length, unit="char", disable=not progress, leave=False) as bar:
        probs = predictor.reset() if length else None
        for j in range(length):
            symbol = choose(j, probs)
            if j + 1 < length:
                probs = predictor.step(symbol)
            if (j + 1) % PROGRESS_EVERY == 0 or j + 1 == length:
                bar.update(j + 1 - bar.n)


def encode_text(text: str, vocab: CharVocab) -> np.ndarray:
    """The ids of ``text`` (N,), or a one-line error naming the characters outside ``vocab``."""
    try:
        return vocab.encode(text).numpy()
    except ValueError as error:
        raise ValueError(
            f"the text has characters outside the checkpoint's vocabulary: {str(error).removeprefix('CharVocab.encode: ')}"
        ) from None


def compress(text: str, settings: Settings, sources: Sources, progress: bool = False) -> Compressed:
    """The file's bytes for ``text`` under the model of ``settings``."""
    symbols = encode_text(text, sources.vocab)
    if uses_train(settings.kind):
        sources.load_train()
    predictor = build_predictor(settings, sources.model, sources.train_ids)
    encoder = coder.Encoder()

    def known(j: int, row: np.ndarray) -> int:
        encoder.encode(symbols[j], row)
        return int(symbols[j])

    threads = prediction_threads()
    run(predictor, len(symbols), known, threads, progress)
    kind = KINDS.index(settings.kind)
    header = Header(kind, threads, settings.pack(), sources.checkpoint, len(symbols), text_crc(text))
    return Compressed(pack(header, encoder.words()), encoder.bits, len(symbols))


def read_header(data: bytes, sources: Sources) -> tuple[Header, Settings, np.ndarray]:
    """The header, settings and coded words of a file, refused in one line if this checkpoint or
    data cannot decode it."""
    header, words = unpack(data)
    settings = Settings.unpack(header.kind, header.settings)
    if header.checkpoint != sources.checkpoint:
        raise CompressedFileError(
            f"the file was compressed with another checkpoint (sha256 {header.checkpoint.hex()}..., "
            f"this one {sources.checkpoint.hex()}...)"
        )
    if uses_train(settings.kind):
        sources.load_train()
        if settings.data != sources.data:
            raise CompressedFileError(
                f"the file's {settings.kind} model was fitted on another text (sha256 {settings.data.hex()}..., "
                f"this data {sources.data.hex()}...)"
            )
    return header, settings, words


def decompress(data: bytes, sources: Sources, progress: bool = False) -> str:
    """The text of a compressed file; ``CompressedFileError`` in one line if it cannot be."""
    header, settings, words = read_header(data, sources)
    predictor = build_predictor(settings, sources.model, sources.train_ids)
    decoder, symbols = coder.Decoder(words), np.empty(header.length, dtype=np.int64)

    def decoded(j: int, row: np.ndarray) -> int:
        symbols[j] = decoder.decode(row)
        return int(symbols[j])

    run(predictor, header.length, decoded, header.threads, progress)
    text = sources.vocab.decode(symbols.tolist())
    if text_crc(text) != header.text_crc:
        raise CompressedFileError(
            "the decoded text fails its checksum: the model predicted differently than when compressing "
            "(another machine or torch build, or a corrupted file)"
        )
    return text


def timed(work: Callable[[], object]) -> tuple[object, float]:
    """(work(), seconds it took)."""
    start = time.perf_counter()
    result = work()
    return result, time.perf_counter() - start
