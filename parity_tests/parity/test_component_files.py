"""Every component test file runs its battery through the harness: it imports ``torch_lm.parity``
and writes none of the checks out by hand (``torch.testing.assert_close``,
``torch.autograd.gradcheck``, a central-difference loop). The checker of a learner's code relies
on the same harness, so a check written out in one file would be a check the learner never gets."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
# numpy_ref must run without torch, so its standalone test cannot import the harness.
COMPONENT_FILES = sorted(p for p in TESTS.glob("test_*.py") if p.name != "test_numpy_ref_standalone.py")
WRITTEN_OUT = {
    "torch.testing.assert_close": "assert_same / assert_parity",
    "torch.autograd.gradcheck": "assert_gradcheck",
    "numerical_gradient_array": "assert_central_differences",
}


def calls(tree: ast.AST) -> set[str]:
    """Dotted names of everything called in the module."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            names.add(ast.unparse(node.func))
    return names


def test_there_are_nineteen_component_files():
    assert len(COMPONENT_FILES) == 19, [p.name for p in COMPONENT_FILES]


@pytest.mark.parametrize("path", COMPONENT_FILES, ids=lambda p: p.stem)
def test_component_file_runs_its_battery_through_the_harness(path):
    tree = ast.parse(path.read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported & {"torch_lm.parity", "torch_lm.parity.components"}, f"{path.name} does not use torch_lm.parity"
    allowed = {"numerical_gradient_array"} if path.name == "test_gradcheck.py" else set()  # tests the checker itself
    for name, instead in WRITTEN_OUT.items():
        if name not in allowed:
            assert name not in calls(tree), f"{path.name} calls {name}; use the harness's {instead}"
