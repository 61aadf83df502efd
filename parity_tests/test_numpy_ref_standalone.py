"""numpy_ref must work without torch (docs/DESIGN.md §1): it is the reference that can be trusted alone.

Two checks: no source file of numpy_ref imports torch, and every numpy_ref module — found with
pkgutil, so modules added later are covered too — imports and runs in a Python where
``import torch`` raises ImportError.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NUMPY_REF = REPO / "numpy_ref"

# Runs in a fresh interpreter. The finder sits first on sys.meta_path, so it is asked before
# any real finder and turns every "torch" / "torch.*" import into an ImportError.
SCRIPT = r"""
import importlib, pkgutil, sys

class BlockTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"torch is blocked in this test (import of {name!r})")
        return None

sys.meta_path.insert(0, BlockTorch())
try:
    import torch
except ImportError:
    pass
else:
    raise SystemExit("the torch blocker does not work")

import numpy as np
import numpy_ref

modules = sorted(info.name for info in pkgutil.iter_modules(numpy_ref.__path__))
for name in modules:
    importlib.import_module(f"numpy_ref.{name}")

from numpy_ref.dropout import dropout_backward, dropout_forward
from numpy_ref.gradcheck import numerical_gradient_array, rel_error
from numpy_ref.mlp import init_mlp_params, mlp_backward, mlp_forward

rng = np.random.default_rng(0)
params = init_mlp_params(3, 5, 2, rng)
x = rng.standard_normal((4, 3))
dy = rng.standard_normal((4, 2))
dx, grads = mlp_backward(dy, mlp_forward(params, x)[1])
assert rel_error(dx, numerical_gradient_array(lambda x: mlp_forward(params, x)[0], x, dy)) < 1e-7
out, cache = dropout_forward(x, 0.5, rng=rng)
assert dropout_backward(np.ones_like(out), cache).shape == x.shape
assert "torch" not in sys.modules
print(" ".join(modules))
"""

# Modules of this project's first layer that must be among those discovered, so an empty
# discovery (wrong path, wrong package) cannot pass silently.
EXPECTED_AT_LEAST = {"activations", "config", "dropout", "gradcheck", "init", "linear", "mlp", "validation"}


def test_every_module_imports_and_runs_with_torch_blocked():
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr
    imported = set(result.stdout.split())
    assert EXPECTED_AT_LEAST <= imported, f"discovered only {sorted(imported)}"


def torch_imports(path: Path) -> list[str]:
    """Lines of ``path`` that import torch or a torch submodule (at any depth in the file)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        if any(name == "torch" or name.startswith("torch.") for name in names):
            found.append(f"{path.name}:{node.lineno}")
    return found


@pytest.mark.parametrize("path", sorted(NUMPY_REF.glob("*.py")), ids=lambda p: p.name)
def test_source_has_no_torch_import(path):
    assert torch_imports(path) == []


def test_the_static_check_finds_a_torch_import(tmp_path):
    source = tmp_path / "bad.py"
    source.write_text("import numpy\n\ndef f():\n    from torch.nn import functional\n")
    assert torch_imports(source) == ["bad.py:4"]
