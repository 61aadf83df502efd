"""The compressor's model kinds, their settings, and how each is built from a checkpoint (and, for
the kinds fitted on it, the train text).

    neural            the NeuralLM of the checkpoint (the default)
    neural-dynamic    the NeuralLM under dynamic evaluation (the "rms" rule)
    kn                modified Kneser-Ney fitted on the train text
    kn-growing        modified Kneser-Ney refitted every ``block`` characters on train + the text seen
    mixture           lam * neural + (1 - lam) * kn
    mixture-context   neural and kn mixed with a weight from the context
    mixture-dynamic   neural-dynamic and kn-growing mixed with a weight from the context

Settings are what the report chose on the train slice (``reports/compare.json``: the KN order,
lam, the context weights, the dynamic evaluation's settings). The header stores them, floats as
float16, and both sides use exactly the stored values, so a file decodes with its checkpoint and
data alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from numpy_ref.validation import fail
from torch_lm.compression.container import FINGERPRINT_BYTES, CompressedFileError, Reader, varint
from torch_lm.compression.predictors import (
    ContextMixturePredictor,
    CountPredictor,
    DynamicNeuralPredictor,
    GrowingCountPredictor,
    MixturePredictor,
    NeuralPredictor,
    Predictor,
)
from torch_lm.ngram import NGramLM
from torch_lm.reports.mixtures import GROWING_BLOCK, ContextWeights
from torch_lm.training.dynamic import RULES, DynamicSettings

KINDS = ("neural", "neural-dynamic", "kn", "kn-growing", "mixture", "mixture-context", "mixture-dynamic")
DEFAULT_KIND = "neural"
DEFAULT_REPORT = "reports/compare.json"
DEFAULT_KN_ORDER = 7  # used when there is no report to read the order chosen on the train slice from


def uses_train(kind: str) -> bool:
    """Whether the kind is fitted on, or adapts from, the train text (all but the static NeuralLM)."""
    return kind != "neural"


def uses_neural(kind: str) -> bool:
    return kind.startswith("neural") or kind.startswith("mixture")


def uses_counts(kind: str) -> bool:
    return kind.startswith("kn") or kind.startswith("mixture")


def is_dynamic(kind: str) -> bool:
    return kind in ("neural-dynamic", "mixture-dynamic")


def is_growing(kind: str) -> bool:
    return kind in ("kn-growing", "mixture-dynamic")


def has_context_weights(kind: str) -> bool:
    return kind in ("mixture-context", "mixture-dynamic")


def half(x: float) -> float:
    """x rounded to float16, the precision the header stores settings in."""
    return float(np.float16(x))


@dataclass(frozen=True)
class Settings:
    """A model kind and the settings it uses (each field only where the kind uses it)."""

    kind: str
    data: bytes = b""  # fingerprint of the text the kind fits on (``uses_train``)
    kn_order: int = 0
    block: int = 0
    dynamic: DynamicSettings | None = None
    lam: float = 0.0
    weights: tuple[float, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            fail("Settings", f"kind must be one of {KINDS}, got {self.kind!r}")

    def rounded(self) -> Settings:
        """The same settings with every float as the header stores it (float16)."""
        dynamic = self.dynamic and replace(self.dynamic, lr=half(self.dynamic.lr), decay=half(self.dynamic.decay))
        return replace(self, dynamic=dynamic, lam=half(self.lam), weights=tuple(half(w) for w in self.weights))

    def pack(self) -> bytes:
        """The header's settings bytes (the kind travels beside them)."""
        out = bytearray(self.data if uses_train(self.kind) else b"")
        if uses_counts(self.kind):
            out.append(self.kn_order)
        if is_growing(self.kind):
            out += varint(self.block)
        if is_dynamic(self.kind):
            out += varint(self.dynamic.segment)
            out += np.array([self.dynamic.lr, self.dynamic.decay], dtype="<f2").tobytes()
            out.append(RULES.index(self.dynamic.rule))
        if self.kind == "mixture":
            out += np.array([self.lam], dtype="<f2").tobytes()
        if has_context_weights(self.kind):
            out += np.array(self.weights, dtype="<f2").tobytes()
        return bytes(out)

    @classmethod
    def unpack(cls, kind_index: int, packed: bytes) -> Settings:
        """Inverse of ``pack``; ``CompressedFileError`` for an unknown kind or malformed bytes."""
        if kind_index >= len(KINDS):
            raise CompressedFileError(f"the file names model kind {kind_index}, unknown to this torch-lm")
        kind, reader, values = KINDS[kind_index], Reader(packed), {}
        if uses_train(kind):
            values["data"] = reader.take(FINGERPRINT_BYTES)
        if uses_counts(kind):
            values["kn_order"] = reader.u8()
        if is_growing(kind):
            values["block"] = reader.varint()
        try:
            if is_dynamic(kind):
                segment, lr, decay = reader.varint(), reader.f16(), reader.f16()
                values["dynamic"] = DynamicSettings(segment, lr, decay, RULES[reader.u8()])
            if kind == "mixture":
                values["lam"] = reader.f16()
            if has_context_weights(kind):
                values["weights"] = tuple(reader.f16() for _ in range(values["kn_order"] + 2))
        except CompressedFileError:
            raise
        except (ValueError, IndexError) as error:
            raise CompressedFileError(f"the file's {kind} settings are corrupted ({error})") from None
        if reader.rest():
            raise CompressedFileError(f"the file's {kind} settings are corrupted: {len(reader.rest())} bytes too many")
        return cls(kind, **values)

    def describe(self) -> str:
        """One line for people: the kind and its settings."""
        parts = [self.kind]
        if uses_counts(self.kind):
            parts.append(f"KN order {self.kn_order}")
        if is_growing(self.kind):
            parts.append(f"refit every {self.block:,} characters")
        if is_dynamic(self.kind):
            d = self.dynamic
            parts.append(f"segment {d.segment}, {d.rule} lr {d.lr:.4g}, decay {d.decay:.4g}")
        if self.kind == "mixture":
            parts.append(f"lam {self.lam:.4g}")
        if has_context_weights(self.kind):
            parts.append("weights " + " ".join(f"{w:.3g}" for w in self.weights))
        return ", ".join(parts)


def read_report(path: str | Path | None) -> dict | None:
    """The report's JSON (``torch-lm-compare`` writes it), or None if there is no such file."""
    if path is None or not Path(path).is_file():
        return None
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read the report {path}: {error}") from None


def settings_from_report(kind: str, report: dict | None, data: bytes, report_path: str | Path) -> Settings:
    """The settings of ``kind``: the report's choices where it has them, else the defaults; a kind
    whose weights only the report fits refuses without it. ``data`` is the train text's
    fingerprint. Floats are rounded as the header stores them."""
    if kind not in KINDS:
        fail("compress", f"--model must be one of {', '.join(KINDS)}, got {kind!r}")
    needs_report = kind.startswith("mixture")
    if needs_report and report is None:
        fail(
            "compress",
            f"--model {kind} needs the weights the report fits: {report_path} not found (run torch-lm-compare)",
        )
    report = report or {}
    try:
        order = int(report.get("kn_order", {}).get("order", DEFAULT_KN_ORDER))
        dynamic = DynamicSettings(**report["dynamic"]["settings"]) if "dynamic" in report else DynamicSettings()
        lam = float(report["mixture"]["lambda"]) if kind == "mixture" else 0.0
        key = {"mixture-context": "context_mixture", "mixture-dynamic": "dynamic"}.get(kind)
        weights = tuple(float(w) for w in report[key]["weights"]) if key else ()
    except (KeyError, TypeError) as error:
        fail(
            "compress",
            f"the report {report_path} lacks the {kind} settings ({error}); regenerate it with torch-lm-compare",
        )
    return Settings(
        kind,
        data=data if uses_train(kind) else b"",
        kn_order=order if uses_counts(kind) else 0,
        block=GROWING_BLOCK if is_growing(kind) else 0,
        dynamic=dynamic if is_dynamic(kind) else None,
        lam=lam,
        weights=weights,
    ).rounded()


def build_predictor(settings: Settings, model: torch.nn.Module, train_ids: torch.Tensor | None) -> Predictor:
    """The predictor of ``settings``: ``model`` a NeuralLM on the CPU in eval mode, ``train_ids``
    (T,) the train text (needed by every kind but ``neural``)."""
    kind, V = settings.kind, model.config.vocab_size
    if uses_train(kind) and train_ids is None:
        fail("build_predictor", f"--model {kind} needs the train text")
    neural = None
    if uses_neural(kind):
        neural = (
            DynamicNeuralPredictor(model, train_ids, settings.dynamic) if is_dynamic(kind) else NeuralPredictor(model)
        )
    counts = None
    if uses_counts(kind):
        if is_growing(kind):
            counts = GrowingCountPredictor(train_ids, settings.kn_order, V, settings.block)
        else:
            counts = CountPredictor(NGramLM.fit(train_ids, settings.kn_order, V, "mkn"))
    if kind == "mixture":
        return MixturePredictor(neural, counts, settings.lam)
    if has_context_weights(kind):
        weights = ContextWeights(torch.tensor(settings.weights, dtype=torch.float64), settings.kn_order)
        return ContextMixturePredictor(neural, counts, weights)
    return neural if neural is not None else counts
