"""The exercise notebooks run top to bottom in a fresh kernel, in their fast mode (small step
budgets): a failing cell, or a failed agreement assertion between the two engines, fails here."""

from __future__ import annotations

import pytest
from conftest import needs_tiny_shakespeare

from torch_lm.reports.notebooks import NOTEBOOKS_DIR, notebook_paths, run_notebook


def test_both_notebooks_exist():
    assert [path.name for path in notebook_paths()] == ["neural_networks.ipynb", "neural_language_models.ipynb"]


def stdout_of(notebook) -> str:
    return "".join(
        out.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.get("name") == "stdout"
    )


@pytest.mark.slow
def test_neural_networks_notebook_runs_and_its_engines_agree():
    out = stdout_of(run_notebook(NOTEBOOKS_DIR / "neural_networks.ipynb", fast=True))
    for figure in ("[ 1.1 -1.3]", "0.4076", "[6.]", "0.0816", "0.1414", "[1.5 0.  1.5]", "[-1.2247  0.      1.2247]"):
        assert figure in out, figure


@pytest.mark.slow
@needs_tiny_shakespeare
def test_language_model_notebook_runs_and_its_engines_agree():
    out = stdout_of(run_notebook(NOTEBOOKS_DIR / "neural_language_models.ipynb", fast=True))
    for figure in ("[0.6931]", "[9.2103]", "analogies b - a + A = B hold", "Reading:", "epoch perplexity"):
        assert figure in out, figure


@pytest.mark.parametrize("path", notebook_paths(), ids=lambda p: p.stem)
def test_committed_notebooks_carry_the_outputs_of_a_full_run(path):
    """Read on a code host without running them: every code cell was executed, in order, without
    an error, and the run was the full one, not the fast mode of the tests."""
    import nbformat

    cells = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    assert [c.execution_count for c in cells] == list(range(1, len(cells) + 1))
    assert not [o for c in cells for o in c.outputs if o.output_type == "error"]
    assert any(c.outputs for c in cells)
    assert "after 40 steps" not in stdout_of(nbformat.read(path, as_version=4))  # the fast budget of 3.2
