"""Shared fixtures for the suite: one torch thread, the dtype pairs every parity test runs in, a
seeded generator, and running the commands on a small text with a tiny model and no network.

Moving arrays between the engines and comparing them is the harness's (``torch_lm.parity``).
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from torch_lm.parity import DTYPE_IDS, DTYPE_PAIRS
from torch_lm.training.text import DEFAULT_DATA_PATH

# The tests that need Tiny Shakespeare find it where the project does (data/), and say how to put
# it there when it is absent; the rest of the suite runs without it.
TINY_SHAKESPEARE = DEFAULT_DATA_PATH
needs_tiny_shakespeare = pytest.mark.skipif(
    not TINY_SHAKESPEARE.is_file(),
    reason="needs Tiny Shakespeare in data/: python scripts/download_data.py (offline: --from FILE)",
)


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Every test runs torch on one intra-op thread: the tensors here are small, so threads only
    add overhead, and on a shared 2-core machine two threads spin against other processes and
    run ~10-100x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(params=DTYPE_PAIRS, ids=DTYPE_IDS)
def dtypes(request):
    """Parametrises a test over float64 and float32: yields ``(np_dtype, torch_dtype)``."""
    return request.param


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded NumPy generator, fresh for every test."""
    return np.random.default_rng(1234)


# ---------------------------------------------------------------------------------------------
# Runs of the commands: a small text, a tiny model, no network
# ---------------------------------------------------------------------------------------------
REPO = Path(__file__).resolve().parents[1]
WORDS = "to be or not the king queen hath thee thou my lord good night sweet prince".split()
# Every download in these tests goes to a proxy that refuses connections: never the network.
OFFLINE = {
    "http_proxy": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "no_proxy": "",
}
TINY_MODEL = [
    "--context",
    "4",
    "--embed-dim",
    "8",
    "--hidden-dim",
    "16",
    "--fusion",
    "2,2",
    "--batch-size",
    "32",
    "--eval-batch-size",
    "1024",
    "--sample-length",
    "20",
    "--device",
    "cpu",
    "--seed",
    "3",
]


def synthetic_text(n_chars: int = 3000, seed: int = 0) -> str:
    """Lines of random words: learnable structure, spaces and newlines, ~20 characters."""
    rng = random.Random(seed)
    lines = []
    while sum(map(len, lines)) < n_chars:
        lines.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 7))) + "\n")
    return "".join(lines)[:n_chars]


def script(name: str, *args: str, cwd: Path, repo: Path = REPO, **popen) -> subprocess.CompletedProcess:
    """Run ``python <repo>/scripts/<name>.py args`` with one thread and no network."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **OFFLINE}
    command = [sys.executable, str(repo / "scripts" / f"{name}.py"), *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, **popen)


def call(capsys, main, *args: str) -> tuple[int, str]:
    """``main(args)`` -> (exit code, stderr), argparse's SystemExit included."""
    try:
        code = main(list(args))
    except SystemExit as stop:
        code = stop.code
    return code, capsys.readouterr().err


def assert_in_process_error(outcome: tuple[int, str], code: int, pattern: str) -> None:
    exit_code, err = outcome
    assert exit_code == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and re.search(pattern, lines[0]), err
