"""Shared helpers for the suite: moving arrays between the two engines and comparing them, and
running the commands on a small text with a tiny model and no network.

Tolerances follow docs/DESIGN.md §2: ``torch.testing.assert_close`` defaults for the dtype compared
(float64: rtol 1e-7, atol 1e-7; float32: rtol 1.3e-6, atol 1e-5).
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
import torch

from torch_lm.training.data import DEFAULT_DATA_PATH

# The tests that need Tiny Shakespeare find it where the project does (data/), and say how to put
# it there when it is absent; the rest of the suite runs without it.
TINY_SHAKESPEARE = DEFAULT_DATA_PATH
needs_tiny_shakespeare = pytest.mark.skipif(
    not TINY_SHAKESPEARE.is_file(),
    reason="needs Tiny Shakespeare in data/: python scripts/download_data.py (offline: --from FILE)",
)

# (numpy dtype, torch dtype) pairs every parity test runs in.
DTYPE_PAIRS = [(np.float64, torch.float64), (np.float32, torch.float32)]
DTYPE_IDS = ["float64", "float32"]


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


def to_torch(array, dtype: torch.dtype | None = None, requires_grad: bool = False) -> torch.Tensor:
    """A torch copy of a NumPy array (integer arrays become int64), optionally a grad leaf."""
    tensor = torch.from_numpy(np.array(array, copy=True))
    if dtype is not None:
        tensor = tensor.to(dtype)
    return tensor.requires_grad_(requires_grad)


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A NumPy copy of a tensor (detached, on CPU)."""
    return tensor.detach().cpu().numpy().copy()


def state_dict_to_numpy(module: torch.nn.Module) -> dict[str, np.ndarray]:
    """``module.state_dict()`` as a dict of NumPy arrays, keys unchanged."""
    return {name: to_numpy(value) for name, value in module.state_dict().items()}


def grads_to_numpy(module: torch.nn.Module) -> dict[str, np.ndarray]:
    """The ``.grad`` of every parameter, keyed like ``state_dict()``."""
    return {name: to_numpy(p.grad) for name, p in module.named_parameters()}


def assert_close(actual, expected, **kwargs) -> None:
    """``torch.testing.assert_close`` over tensors, arrays, scalars or dicts of them.

    NumPy values are converted to tensors so that the dtype-dependent default tolerances
    apply; dict keys must match exactly (so a missing gradient is a failure, not a skip).
    """
    if isinstance(expected, Mapping):
        assert isinstance(actual, Mapping), f"expected a dict, got {type(actual).__name__}"
        assert sorted(actual) == sorted(expected), f"keys differ: {sorted(actual)} vs {sorted(expected)}"
        for key in expected:
            try:
                assert_close(actual[key], expected[key], **kwargs)
            except AssertionError as error:
                raise AssertionError(f"[{key}] {error}") from None
        return
    torch.testing.assert_close(_as_tensor(actual), _as_tensor(expected), **kwargs)


def _as_tensor(value) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if isinstance(value, np.generic):
        return torch.from_numpy(np.asarray(value).copy())
    return torch.as_tensor(value)


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
