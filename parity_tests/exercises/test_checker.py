"""The checker of a learner's code: the reference solutions pass every exercise, each wrong
implementation fails with its cause named, unfilled stubs are TODO, and the command's exit codes
and one-line errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from torch_lm.exercises import EXERCISES, check, run_checks, solutions
from torch_lm.reports.notebooks import NOTEBOOKS_DIR

REPO = Path(__file__).resolve().parents[2]
SOLUTIONS = Path(solutions.__file__)
IDS = [exercise.id for exercise in EXERCISES]

# exercise id, a wrong definition (replacing the reference one), words the named cause must contain
WRONG = [
    ("nn1", "def affine(x, W, b):\n    return W.T @ x + b", "a transpose"),
    ("nn1", "def affine(x, W, b):\n    return W @ x", "bias b is not added"),
    ("nn2", "def relu_derivative(z):\n    return (z >= 0).astype(float)", "exactly 0 is 1"),
    ("nn3", "def two_layer_forward(x, W1, W2):\n    h = W1 @ x\n    return h, W2 @ h", "not passed through ReLU"),
    (
        "nn3",
        "def two_layer_forward(x, W1, W2):\n    h = np.maximum(0, W1 @ x)\n    return h, np.maximum(0, W2 @ h)",
        "ReLU applied to y",
    ),
    (
        "nn4",
        "def softmax_cross_entropy(z, t):\n    p = np.exp(z) / np.exp(z).sum()\n    return p, -np.log(p[t])",
        "overflow",
    ),
    (
        "nn4",
        "def softmax_cross_entropy(z, t):\n    p = np.exp(z - z.max())\n    p /= p.sum()\n    return p, -np.log2(p[t])",
        "log base 2",
    ),
    ("nn5", "def affine_weight_grad(dZ, x):\n    return np.outer(x, dZ)", "a transpose"),
    ("nn6", "def central_difference(f, w, eps):\n    return (f(w + eps) - f(w - eps)) / eps", "2 eps apart"),
    ("nn6", "def central_difference(f, w, eps):\n    return (f(w + eps) - f(w)) / eps", "one-sided"),
    ("nn7", "def he_std(fan_in):\n    return math.sqrt(1 / fan_in)", "LeCun"),
    ("nn7", "def xavier_std(fan_in, fan_out):\n    return 2 / (fan_in + fan_out)", "the variance, not the std"),
    ("nn8", "def inverted_dropout(h, mask, p_drop):\n    return h * mask", "missing factor 1/(1 - p_drop)"),
    ("nn8", "def inverted_dropout(h, mask, p_drop):\n    return h * mask / p_drop", "divides by p_drop"),
    (
        "nn9",
        "def layer_norm(x, eps=1e-5):\n    return (x - x.mean()) / np.sqrt(x.var(ddof=1) + eps)",
        "unbiased variance",
    ),
    ("nn9", "def layer_norm(x, eps=1e-5):\n    return (x - x.mean()) / (x.std() + eps)", "outside the square root"),
    (
        "nn10",
        "def diagnostics_checklist():\n    return ['shapes', 'overfit one tiny batch', 'activations', 'loss curve']",
        "gradient norms",
    ),
    (
        "3.5",
        "class Embedding(Embedding):\n    def backward(self, grad, indices):\n        self.W_grad[indices] += grad",
        "only repeated ids",
    ),
    (
        "3.5",
        "class Embedding(Embedding):\n    def __init__(self, v, d):\n        self.W = np.random.randn(v, d)\n        self.W_grad = np.zeros_like(self.W)",
        "without the sheet's scale",
    ),
    (
        "3.6",
        "class NeuralLM(NeuralLM):\n    def loss(self, z, t):\n        return super().loss(z, t) * len(t)",
        "a sum over the batch",
    ),
    (
        "3.6",
        "class NeuralLM(NeuralLM):\n    def loss(self, z, t):\n        p = np.exp(z) / np.exp(z).sum(1, keepdims=True)\n        return -np.log(p[np.arange(len(t)), t]).mean()",
        "overflow",
    ),
    (
        "3.6",
        "class NeuralLM(NeuralLM):\n    def forward(self, idx):\n        return super().forward(np.repeat(idx[:, -1:], idx.shape[1], 1))",
        "sees the whole context",
    ),
    ("3.7", "def stable_softmax(z):\n    return np.exp(z) / np.exp(z).sum(axis=-1, keepdims=True)", "overflow"),
    ("3.7", "def log_softmax(z):\n    return np.log(stable_softmax(z))", "-inf where softmax underflows"),
    ("3.7", "def stable_softmax(z):\n    e = np.exp(z - z.max())\n    return e / e.sum()", "the whole array"),
    (
        "3.8",
        "def train_epoch(model, data, optimizer):\n    return math.exp(np.mean([model.train_step(b) for b in data]))",
        "unweighted mean",
    ),
    (
        "3.8",
        "def train_epoch(model, data, optimizer):\n    pairs = [(model.train_step(b), b.n_tokens) for b in data]\n    return 2 ** (sum(l * n for l, n in pairs) / sum(n for _, n in pairs))",
        "2 ** avg_loss",
    ),
]


def with_definition(source: str) -> dict:
    """The reference solutions with one definition replaced (a subclass may call the original)."""
    namespace = dict(vars(solutions))
    exec(source, namespace)
    return namespace


def test_reference_solutions_pass_every_exercise():
    results = run_checks(SOLUTIONS)
    assert [r.id for r in results] == IDS
    assert [r.line() for r in results] == [f"{i} PASS" for i in IDS]


@pytest.mark.parametrize("exercise_id, source, cause", WRONG, ids=[f"{w[0]}-{w[2]}" for w in WRONG])
def test_each_wrong_implementation_fails_with_its_cause_named(exercise_id, source, cause):
    [result] = run_checks(with_definition(source), [exercise_id])
    assert result.status == "FAIL", result.line()
    assert cause in result.cause, result.line()
    assert result.line().startswith(f"{exercise_id} FAIL ") and "expected" in result.line()


def test_a_learners_exception_is_a_failure_with_a_cause():
    # max without keepdims: (4, 6) - (4,) cannot broadcast on the checker's batch of rows
    namespace = with_definition(
        "def stable_softmax(z):\n    e = np.exp(z - z.max(axis=-1))\n    return e / e.sum(axis=-1, keepdims=True)"
    )
    [result] = run_checks(namespace, ["3.7"])
    assert result.status == "FAIL" and "raised ValueError" in result.detail and "keepdims" in result.cause


def test_a_missing_return_is_a_failure_not_a_todo():
    [result] = run_checks(with_definition("def affine(x, W, b):\n    z = W @ x + b"), ["nn1"])
    assert result.status == "FAIL" and "not returned" in result.cause


def stub_file(tmp_path) -> Path:
    """Every stub of the exercise notebooks, in one file, as a learner starting out has them."""
    sources = ["import math\n\nimport numpy as np\n"]
    for path in sorted((NOTEBOOKS_DIR / "exercises").glob("*.ipynb")):
        for cell in nbformat.read(path, 4).cells:
            if any(tag.startswith("exercise:") for tag in cell.metadata.get("tags", [])):
                sources.append(cell.source)
    path = tmp_path / "starter.py"
    path.write_text("\n\n\n".join(sources) + "\n")
    return path


def test_unfilled_stubs_are_todo_with_what_is_missing(tmp_path):
    results = run_checks(stub_file(tmp_path))
    assert [r.status for r in results] == ["TODO"] * len(IDS), [r.line() for r in results]
    assert all(r.line().startswith(f"{r.id} TODO: ") for r in results)


def test_missing_names_are_todo(tmp_path):
    path = tmp_path / "partial.py"
    path.write_text("import numpy as np\n\n\ndef affine(x, W, b):\n    return W @ x + b\n")
    results = {r.id: r for r in run_checks(path)}
    assert results["nn1"].status == "PASS"
    assert results["nn2"].line() == "nn2 TODO: relu is not defined"


def test_check_prints_one_line_per_exercise(capsys):
    check(vars(solutions), "nn1", "3.8")
    assert capsys.readouterr().out == "nn1 PASS\n3.8 PASS\n"


def test_unknown_exercise_id_is_refused():
    with pytest.raises(ValueError, match="unknown exercise id 'nn11'"):
        run_checks(SOLUTIONS, ["nn11"])


# ----------------------------------------------------------------------------- the command
def run_command(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "check.py"), *args], capture_output=True, text=True, timeout=300
    )


def test_command_passes_the_reference_solutions_with_exit_0():
    result = run_command(str(SOLUTIONS))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"{i} PASS" for i in IDS]


def test_command_exits_1_on_a_failure_and_names_the_cause(tmp_path):
    path = tmp_path / "wrong.py"
    path.write_text(SOLUTIONS.read_text() + "\n\ndef affine(x, W, b):\n    return W.T @ x + b\n")
    result = run_command(str(path), "--only", "nn1", "nn2", "--json")
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["counts"] == {"PASS": 1, "TODO": 0, "FAIL": 1}
    assert report["results"][0]["status"] == "FAIL" and "transpose" in report["results"][0]["cause"]


@pytest.mark.parametrize(
    "content, message",
    [
        ("def affine(x, W, b)\n    return W @ x\n", r"cannot be imported: SyntaxError: .* \(line 1\)"),
        ("import numpy as np\nraise RuntimeError('half-written')\n", "cannot be imported: RuntimeError: half-written"),
    ],
    ids=["syntax error", "raises on import"],
)
def test_command_exits_2_in_one_line_for_a_file_that_cannot_be_imported(tmp_path, content, message):
    path = tmp_path / "broken.py"
    path.write_text(content)
    result = run_command(str(path))
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("check.py: error: "), result.stderr
    assert re.search(message, lines[0]), lines[0]


def test_command_refuses_bad_arguments_in_one_line(tmp_path):
    for args, words in (([str(SOLUTIONS), "--only", "nn0"], "unknown exercise id"), ([], "give the file")):
        result = run_command(*args)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1 and words in result.stderr
