"""The exercise notebooks run top to bottom in a fresh kernel, in their fast mode (small step
budgets): a failing cell, or a failed agreement assertion between the two engines, fails here."""

from __future__ import annotations

import pytest
from conftest import needs_tiny_shakespeare

from torch_lm.reports.notebooks import NOTEBOOKS_DIR, WIDGET_MIME, notebook_paths, run_notebook


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


NN_FIGURES = (  # the sheet's answers, as the notebook prints them
    "z: [ 1.1 -1.3]",
    "relu: [0. 0. 2.] drelu: [0. 0. 1.]",
    "h: [1. 0.] y: [1.]",
    "loss: 0.4076",
    "[[ 6.  8.]\n [-3. -4.]]",
    "numeric gradient: 6.0000000000",
    "xavier: 0.0816",
    "he: 0.1414",
    "out: [1.5 0.  1.5]",
    "y: [-1.2247  0.      1.2247]",
)
LM_FIGURES = ("[0.6931]", "[9.2103]", "[    0. -1000. -2000.]", "epoch perplexity")
NN_IDS = [f"nn{i}" for i in range(1, 11)]
LM_IDS = ["3.5", "3.6", "3.7", "3.8"]
# Every sub-question of Stage 3 under its own heading, and the mini-project's deliverables.
LM_HEADINGS = [f"### 3.{n}{part}" for n, parts in ((1, "abc"), (2, "abc"), (3, "abc"), (4, "abc")) for part in parts]
LM_HEADINGS += [f"### 3.{n}{part}" for n, parts in ((9, "abc"), (10, "abc"), (11, "abcd")) for part in parts]
LM_HEADINGS += ["## 3.5", "## 3.6", "## 3.7", "## 3.8", "## Mini-project", "### The training loop's loss curve"]
LM_HEADINGS += ["### The perplexity table", "### Generated text from both", "### Extension"]


@pytest.mark.slow
def test_neural_networks_notebook_runs_and_its_engines_agree():
    out = stdout_of(run_notebook(NOTEBOOKS_DIR / "neural_networks.ipynb", fast=True))
    for figure in NN_FIGURES + tuple(f"{i} PASS" for i in NN_IDS):
        assert figure in out, figure


@pytest.mark.slow
@needs_tiny_shakespeare
def test_language_model_notebook_runs_and_its_engines_agree():
    out = stdout_of(run_notebook(NOTEBOOKS_DIR / "neural_language_models.ipynb", fast=True))
    for figure in LM_FIGURES + tuple(f"{i} PASS" for i in LM_IDS) + ("Reading:", "| Neural bigram |"):
        assert figure in out, figure


def test_every_exercise_and_sub_question_has_its_own_heading():
    import nbformat

    def headings(name):
        cells = nbformat.read(NOTEBOOKS_DIR / name, as_version=4).cells
        return [
            line for c in cells if c.cell_type == "markdown" for line in c.source.splitlines() if line.startswith("#")
        ]

    nn = headings("neural_networks.ipynb")
    exercises = [h.split(":")[0] for h in nn if h.startswith("## Exercise")]
    assert exercises == [f"## Exercise {i}" for i in range(1, 11)] and "## Closing reflection" in nn
    lm = headings("neural_language_models.ipynb")
    for heading in LM_HEADINGS:
        assert sum(h.startswith(heading) for h in lm) == 1, heading


@pytest.mark.parametrize("path", notebook_paths(), ids=lambda p: p.stem)
def test_committed_notebooks_carry_the_outputs_of_a_full_run(path):
    """Read on a code host without running them: every code cell was executed, in order, without
    an error, and the run was the full one, not the fast mode of the tests."""
    import nbformat

    cells = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    assert [c.execution_count for c in cells] == list(range(1, len(cells) + 1))
    assert not [o for c in cells for o in c.outputs if o.output_type == "error"]
    assert any(c.outputs for c in cells)
    out = stdout_of(nbformat.read(path, as_version=4))
    assert "after 40 steps" not in out  # the fast budget of 3.2
    assert "not found: training" not in out  # the outputs come from the default checkpoint
    figures = NN_FIGURES if path.name == "neural_networks.ipynb" else LM_FIGURES
    ids = NN_IDS if path.name == "neural_networks.ipynb" else LM_IDS
    for figure in figures + tuple(f"{i} PASS" for i in ids):
        assert figure in out, figure
    assert "|█" not in out  # no text progress bars in the outputs
    assert not [o for c in cells for o in c.outputs if WIDGET_MIME in o.get("data", {})]  # nor widget ones
