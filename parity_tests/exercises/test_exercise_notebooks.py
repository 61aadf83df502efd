"""The exercise notebooks (``notebooks/exercises/``) as a learner meets them: unfilled, every check
cell reports TODO and nothing crashes; with every stub replaced by the reference solution, every
check cell reports PASS; and they are committed without outputs."""

from __future__ import annotations

import ast
import inspect

import nbformat
import pytest

from torch_lm.exercises import EXERCISES, solutions
from torch_lm.reports.notebooks import NOTEBOOKS_DIR, execute

EXERCISE_NOTEBOOKS = sorted((NOTEBOOKS_DIR / "exercises").glob("*.ipynb"))
NAMES = {exercise.id: exercise.names for exercise in EXERCISES}


def tagged(cell, prefix: str) -> str | None:
    """The exercise id of a cell tagged ``<prefix>:<id>``, or None."""
    return next((t.split(":", 1)[1] for t in cell.metadata.get("tags", []) if t.startswith(prefix + ":")), None)


def filled(source: str, exercise_id: str) -> str:
    """The stub cell with each of the exercise's definitions replaced by the reference solution's."""
    lines = source.splitlines()
    nodes = [n for n in ast.parse(source).body if getattr(n, "name", None) in NAMES[exercise_id]]
    assert {n.name for n in nodes} == set(NAMES[exercise_id]), (
        f"{exercise_id}: the stub defines {[n.name for n in nodes]}"
    )
    for node in sorted(nodes, key=lambda n: n.lineno, reverse=True):
        lines[node.lineno - 1 : node.end_lineno] = inspect.getsource(getattr(solutions, node.name)).splitlines()
    return "\n".join(lines)


def check_lines(notebook) -> dict[str, str]:
    """exercise id -> what its check cell printed."""
    return {
        tagged(cell, "check"): "".join(o.get("text", "") for o in cell.outputs if o.get("name") == "stdout")
        for cell in notebook.cells
        if tagged(cell, "check")
    }


def test_both_exercise_notebooks_cover_every_exercise_once():
    assert [p.name for p in EXERCISE_NOTEBOOKS] == ["neural_language_models.ipynb", "neural_networks.ipynb"]
    stubs = [
        tagged(c, "exercise") for p in EXERCISE_NOTEBOOKS for c in nbformat.read(p, 4).cells if tagged(c, "exercise")
    ]
    checks = [tagged(c, "check") for p in EXERCISE_NOTEBOOKS for c in nbformat.read(p, 4).cells if tagged(c, "check")]
    assert sorted(stubs) == sorted(checks) == sorted(NAMES)


@pytest.mark.parametrize("path", EXERCISE_NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path):
    cells = [c for c in nbformat.read(path, 4).cells if c.cell_type == "code"]
    assert not any(c.outputs for c in cells) and all(c.execution_count is None for c in cells)


@pytest.mark.slow
@pytest.mark.parametrize("path", EXERCISE_NOTEBOOKS, ids=lambda p: p.stem)
def test_unfilled_every_check_reports_todo(path):
    notebook = execute(nbformat.read(path, 4), path.parent)
    lines = check_lines(notebook)
    assert lines and all(text.startswith(f"{i} TODO") for i, text in lines.items()), lines


@pytest.mark.slow
@pytest.mark.parametrize("path", EXERCISE_NOTEBOOKS, ids=lambda p: p.stem)
def test_filled_with_the_reference_solutions_every_check_passes(path):
    notebook = nbformat.read(path, 4)
    for cell in notebook.cells:
        if tagged(cell, "exercise"):
            cell.source = filled(cell.source, tagged(cell, "exercise"))
    lines = check_lines(execute(notebook, path.parent))
    assert lines and all(text == f"{i} PASS\n" for i, text in lines.items()), lines
