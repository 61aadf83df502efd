"""A tiny trained NeuralLM, its text and the settings of every model kind, for the compressor's
tests: everything the coder needs, built in seconds."""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from conftest import synthetic_text

from numpy_ref.config import ModelConfig
from torch_lm.compression.codec import Sources
from torch_lm.compression.models import Settings, settings_from_report
from torch_lm.training.config import TrainConfig
from torch_lm.training.trainer import train

# What a report would have chosen (torch-lm-compare writes these keys); small segments and blocks
# so a short text crosses several adaptation steps and refits.
REPORT = {
    "kn_order": {"order": 3},
    "mixture": {"lambda": 0.6},
    "context_mixture": {"weights": [0.2, -0.5, 0.3, 0.8, -0.4]},
    "dynamic": {
        "settings": {"segment": 20, "lr": 3e-4, "decay": 0.01, "rule": "rms"},
        "weights": [0.1, 0.4, -0.2, 0.5, -0.3],
    },
}
BLOCK = 50  # refits of the growing count model in the tests


@dataclass
class Coding:
    """The fixture: its directory, text file, checkpoint, report and loaded sources."""

    path: Path
    text_path: Path
    checkpoint: Path
    report: Path
    text: str

    def sources(self) -> Sources:
        sources = Sources.load(self.checkpoint, str(self.text_path))
        sources.load_train()
        return sources

    def settings(self, kind: str) -> Settings:
        sources = self.sources()
        settings = settings_from_report(kind, REPORT, sources.data, self.report)
        if settings.block:
            settings = replace(settings, block=BLOCK)
        return settings


@pytest.fixture(scope="session", name="coding")
def coding_fixture(tmp_path_factory) -> Coding:
    """A 40-step NeuralLM (context 4, gated units) on 3,000 characters of synthetic text."""
    path = tmp_path_factory.mktemp("compression")
    text = synthetic_text(3000, seed=5)
    (path / "text.txt").write_text(text)
    (path / "report.json").write_text(json.dumps(REPORT))
    model = ModelConfig(vocab_size=len(set(text)), context=4, embed_dim=8, hidden_dim=16, fusion=(2, 2))
    run = TrainConfig(
        batch_size=32,
        max_steps=40,
        eval_interval=20,
        log_interval=10,
        sample_length=10,
        eval_batch_size=1024,
        device="cpu",
        run_dir=str(path / "run"),
    )
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        train(model, run, text)
    return Coding(path, path / "text.txt", path / "run" / "last.pt", path / "report.json", text)
