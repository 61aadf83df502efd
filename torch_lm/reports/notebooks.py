"""Running the exercise notebooks (``notebooks/*.ipynb``) top to bottom in a fresh kernel.

``run_notebook`` executes one notebook in its own directory with ``nbclient``; with ``fast`` the
kernel sees ``TORCH_LM_NOTEBOOK_FAST=1`` and the notebook shrinks its experiments to seconds (the
test suite runs them so). With ``write`` the executed notebook, outputs included, replaces the
file, which is how the committed outputs are produced (``scripts/run_notebooks.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

NOTEBOOKS_DIR = Path(__file__).resolve().parents[2] / "notebooks"
FAST_VARIABLE = "TORCH_LM_NOTEBOOK_FAST"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def notebook_paths() -> list[Path]:
    """The project's notebooks, in reading order."""
    return sorted(NOTEBOOKS_DIR.glob("*.ipynb"), key=lambda p: p.name != "neural_networks.ipynb")


def run_notebook(path: Path, fast: bool = False, write: bool = False, cell_timeout: int = 1800):
    """Execute the notebook at ``path`` (a ``nbformat`` node is returned); a failing cell raises
    ``nbclient.exceptions.CellExecutionError`` naming the cell and the error."""
    import nbformat

    notebook = execute(nbformat.read(path, as_version=4), path.parent, fast, cell_timeout)
    if write:
        nbformat.write(without_widgets(notebook), path)
    return notebook


def without_widgets(notebook):
    """The notebook without widget outputs (the training progress bars): a widget lives only in a
    running kernel, and written out it would show its first frame, 0 %."""
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if WIDGET_MIME not in o.get("data", {})]
    notebook.metadata.pop("widgets", None)
    return notebook


def execute(notebook, directory: Path, fast: bool = False, cell_timeout: int = 1800):
    """Run a ``nbformat`` node top to bottom in a fresh kernel started in ``directory``."""
    from nbclient import NotebookClient

    previous = os.environ.get(FAST_VARIABLE)
    os.environ[FAST_VARIABLE] = "1" if fast else "0"
    try:
        NotebookClient(
            notebook, timeout=cell_timeout, kernel_name="python3", resources={"metadata": {"path": str(directory)}}
        ).execute()
    finally:
        if previous is None:
            del os.environ[FAST_VARIABLE]
        else:
            os.environ[FAST_VARIABLE] = previous
    return notebook
