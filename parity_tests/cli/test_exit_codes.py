"""One mapping from how a command ended to its exit code (torch_lm/cli/parsing.py, docs/DESIGN.md §6):
every command gives 2 and one line for a bad value on its command line, 1 and one line for a failure
while running, with no traceback; and the mapping itself."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import torch
from conftest import OFFLINE, assert_in_process_error, call, synthetic_text

from numpy_ref.config import ModelConfig
from torch_lm.cli import (
    bench,
    check,
    compare,
    compress,
    compression_table,
    decompress,
    download_data,
    evaluate,
    generate,
    ngram_baselines,
    plot_embeddings,
    run_notebooks,
    sweep_context,
    train,
)
from torch_lm.cli.parsing import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    OneLineParser,
    UsageError,
    command_line_values,
    exit_code,
    run_command,
)
from torch_lm.neural_lm import NeuralLM
from torch_lm.training.checkpoint import build_checkpoint, save_checkpoint
from torch_lm.training.config import TrainConfig
from torch_lm.training.signals import NonFiniteLossError, TrainingInterrupted
from torch_lm.training.text import DataError
from torch_lm.training.vocab import CharVocab


@pytest.fixture
def inputs(tmp_path, monkeypatch) -> Path:
    """A working directory with ``text.txt`` and ``model.pt``, an untrained NeuralLM on its
    characters (no command here gets as far as using its weights), and no network."""
    monkeypatch.chdir(tmp_path)
    for name, value in OFFLINE.items():
        monkeypatch.setenv(name, value)
    text = synthetic_text()
    Path("text.txt").write_text(text)
    vocab = CharVocab.from_text(text)
    config = ModelConfig(vocab_size=len(vocab), context=4, embed_dim=8, hidden_dim=16, fusion=(2, 2))
    model = NeuralLM(config)
    optimizer = torch.optim.AdamW(model.parameters())
    rng = {"dropout": torch.Generator().get_state()}
    checkpoint = build_checkpoint(model, optimizer, config, TrainConfig().to_dict(), vocab, 0, float("inf"), rng, 0, 0)
    save_checkpoint("model.pt", checkpoint)
    Path("solutions.py").write_text("def affine(x, W, b):\n    return W @ x + b\n")
    return tmp_path


# command, its main, a bad value on its command line (exit 2) and the line it gives
BAD_VALUES = [
    ("train", train.main, ["--data", "text.txt", "--lr", "-1"], r"^train\.py: error: TrainConfig: lr must be"),
    ("evaluate", evaluate.main, ["--checkpoint", "model.pt", "--device", "tpu"], r"must be auto, cpu, cuda or cuda:N"),
    ("generate", generate.main, ["--checkpoint", "model.pt", "--prompt", "ROMEO"], r"--prompt: .* not in the vocab"),
    ("download_data", download_data.main, ["--from"], r"argument --from: expected one argument"),
    ("ngram_baselines", ngram_baselines.main, ["--data", "text.txt", "--orders", "16"], r"order.* overflow|int64"),
    ("sweep_context", sweep_context.main, ["--data", "text.txt", "--lr", "-1"], r"TrainConfig: lr must be"),
    ("plot_embeddings", plot_embeddings.main, ["--checkpoint", "model.pt", "--perplexity", "1000"], r"--perplexity"),
    ("compare", compare.main, ["--data", "text.txt", "--device", "tpu"], r"must be auto, cpu, cuda or cuda:N"),
    ("bench", bench.main, ["--threads", "0"], r"argument --threads: value must be a positive integer"),
    ("check", check.main, ["solutions.py", "--only", "nn99"], r"unknown exercise id 'nn99'"),
    ("run_notebooks", run_notebooks.main, ["--slow"], r"unrecognized arguments: --slow"),
    ("compress", compress.main, ["text.txt", "o.tlz", "--model", "zip"], r"argument --model: invalid choice: 'zip'"),
    ("decompress", decompress.main, ["o.tlz"], r"the following arguments are required: OUTPUT"),
    ("compression_table", compression_table.main, ["--models", "zip"], r"--models: unknown value 'zip'"),
]

# command, its main, a failure while running (exit 1) and the line it gives; ``check`` is not here:
# its 1 means that an exercise failed (parity_tests/exercises/test_checker.py)
FAILURES = [
    ("train", train.main, ["--data", "absent.txt", "--device", "cpu"], r"data file absent\.txt not found"),
    ("evaluate", evaluate.main, ["--checkpoint", "absent.pt", "--device", "cpu"], r"checkpoint absent\.pt not found"),
    ("generate", generate.main, ["--checkpoint", "absent.pt", "--device", "cpu"], r"checkpoint absent\.pt not found"),
    ("download_data", download_data.main, ["--from", "absent.txt", "--dest", "t.txt"], r"cannot read absent\.txt"),
    ("ngram_baselines", ngram_baselines.main, ["--data", "absent.txt"], r"--data: no file at absent\.txt"),
    ("sweep_context", sweep_context.main, ["--data", "absent.txt"], r"data file absent\.txt not found"),
    ("plot_embeddings", plot_embeddings.main, ["--checkpoint", "absent.pt"], r"absent\.pt"),
    ("compare", compare.main, ["--checkpoint", "absent.pt", "--out", "out/REPORT.md"], r"absent\.pt"),
    ("bench", bench.main, ["--data", "absent.txt", "--skip-suite"], r"--data: no file at absent\.txt"),
    ("run_notebooks", run_notebooks.main, [], r"\.ipynb: ValueError: a cell failed$"),
    ("compress", compress.main, ["absent.txt", "o.tlz", "--checkpoint", "model.pt"], r"cannot read absent\.txt"),
    ("decompress", decompress.main, ["absent.tlz", "o.txt", "--checkpoint", "model.pt"], r"cannot read absent\.tlz"),
    ("compression_table", compression_table.main, ["--checkpoint", "absent.pt"], r"checkpoint absent\.pt not found"),
]


@pytest.mark.parametrize("name, main, args, pattern", BAD_VALUES, ids=[row[0] for row in BAD_VALUES])
def test_a_bad_value_exits_2_with_one_line(name, main, args, pattern, inputs, capsys):
    code, err = call(capsys, main, *args)
    assert_in_process_error((code, err), EXIT_USAGE, pattern)
    assert "Traceback" not in err


@pytest.mark.parametrize("name, main, args, pattern", FAILURES, ids=[row[0] for row in FAILURES])
def test_a_failure_while_running_exits_1_with_one_line(name, main, args, pattern, inputs, capsys, monkeypatch):
    def failing_cell(path, fast, write):
        raise RuntimeError("An error occurred while executing the following cell:\n...\nValueError: a cell failed")

    monkeypatch.setattr("torch_lm.reports.notebooks.run_notebook", failing_cell)  # no kernel started
    code, err = call(capsys, main, *args)
    assert_in_process_error((code, err), EXIT_FAILURE, pattern)
    assert "Traceback" not in err


# command, its main, the function its work calls (made to raise a ValueError), and arguments that
# reach that call
WORK = [
    ("train", train.main, "torch_lm.cli.train.train", ["--data", "text.txt", "--device", "cpu"]),
    (
        "evaluate",
        evaluate.main,
        "torch_lm.cli.evaluate.heldout_loss",
        ["--checkpoint", "model.pt", "--data", "text.txt"],
    ),
    ("generate", generate.main, "torch_lm.cli.generate.generate", ["--checkpoint", "model.pt", "--prompt", "the"]),
    ("download_data", download_data.main, "torch_lm.cli.download_data.download", ["--dest", "t.txt"]),
    ("ngram_baselines", ngram_baselines.main, "torch_lm.cli.ngram_baselines.score_baselines", ["--data", "text.txt"]),
    ("sweep_context", sweep_context.main, "torch_lm.cli.sweep_context.run_sweep", ["--data", "text.txt"]),
    (
        "plot_embeddings",
        plot_embeddings.main,
        "torch_lm.cli.plot_embeddings.plot_embedding_maps",
        ["--checkpoint", "model.pt"],
    ),
    ("compare", compare.main, "torch_lm.cli.compare.run_compare", ["--out", "out/REPORT.md"]),
    ("bench", bench.main, "torch_lm.bench.run.run", ["--data", "text.txt", "--skip-suite", "--out-dir", "out"]),
    ("run_notebooks", run_notebooks.main, "torch_lm.reports.notebooks.run_notebook", []),
    ("compress", compress.main, "torch_lm.cli.compress.compress", ["text.txt", "o.tlz", "--checkpoint", "model.pt"]),
    (
        "decompress",
        decompress.main,
        "torch_lm.cli.decompress.decompress",
        ["text.txt", "o", "--checkpoint", "model.pt"],
    ),
    (
        "compression_table",
        compression_table.main,
        "torch_lm.cli.compression_table.run_table",
        ["--checkpoint", "model.pt"],
    ),
]


@pytest.mark.parametrize("name, main, target, args", WORK, ids=[row[0] for row in WORK])
def test_a_value_error_raised_while_running_exits_1_in_every_command(
    name, main, target, args, inputs, capsys, monkeypatch
):
    def refuse(*args, **kwargs):
        raise ValueError("a value refused while running")

    monkeypatch.setattr(target, refuse)
    code, err = call(capsys, main, *args)
    assert_in_process_error((code, err), EXIT_FAILURE, r": error: (.*: )?(ValueError: )?a value refused while running$")
    assert "Traceback" not in err


def test_every_command_is_tested():
    commands = {path.stem for path in Path(train.__file__).parent.glob("*.py")} - {"__init__", "parsing"}
    assert {row[0] for row in BAD_VALUES} == commands - {"trajectory_parity"}
    assert {row[0] for row in FAILURES} == commands - {"trajectory_parity", "check"}
    assert {row[0] for row in WORK} == commands - {"trajectory_parity", "check"}


# ----------------------------------------------------------------------------- the mapping
@pytest.mark.parametrize(
    "error, code",
    [
        (UsageError("--prompt: 'Z' not in the vocabulary"), EXIT_USAGE),
        (ValueError("a value refused while running"), EXIT_FAILURE),
        (DataError("no copy of the text"), EXIT_FAILURE),
        (NonFiniteLossError("training loss became non-finite at step 3"), EXIT_FAILURE),
        (FileNotFoundError("missing"), EXIT_FAILURE),
        (ImportError("No module named 'nbclient'"), EXIT_FAILURE),
        (KeyboardInterrupt(), EXIT_INTERRUPTED),
        (TrainingInterrupted(7, Path("last.pt"), signal.SIGINT), 130),
        (TrainingInterrupted(7, Path("last.pt"), signal.SIGTERM), 143),
        (TypeError("a bug"), None),
    ],
)
def test_exit_code_of_how_a_command_ended(error, code):
    assert exit_code(error) == code


def test_run_command_prints_one_line_and_lets_a_bug_keep_its_traceback(capsys):
    parser = OneLineParser(prog="demo.py")

    def refuse():
        with command_line_values():
            raise ValueError("TrainConfig: lr must be a finite number > 0, got -1.0\nsecond line")

    assert run_command(parser, refuse) == EXIT_USAGE
    assert capsys.readouterr().err == "demo.py: error: TrainConfig: lr must be a finite number > 0, got -1.0\n"
    assert run_command(parser, lambda: None) == 0 and run_command(parser, lambda: 5) == 5

    def interrupted():
        raise KeyboardInterrupt

    assert run_command(parser, interrupted) == EXIT_INTERRUPTED
    assert capsys.readouterr().err == "demo.py: error: interrupted\n"

    def bug():
        raise TypeError("a bug")

    with pytest.raises(TypeError):
        run_command(parser, bug)
