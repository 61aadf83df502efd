"""The reports through their commands: ``sweep_context``, ``plot_embeddings`` and ``compare``,
end to end on a tiny text with tiny step budgets — outputs, determinism of the report, agreement
with the project's own evaluators — and their bad-input errors (one line, exit 2; missing files
exit 1)."""

from __future__ import annotations

import contextlib
import io
import json
import random
import re
import runpy
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import WORDS
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from numpy_ref.config import ModelConfig
from torch_lm.cli import compare as compare_cli
from torch_lm.cli import evaluate as evaluate_cli
from torch_lm.cli import plot_embeddings as embeddings_cli
from torch_lm.cli import sweep_context as sweep_cli
from torch_lm.ngram import NGramLM
from torch_lm.reports import embeddings, sweep
from torch_lm.reports.mixture_rows import DYNAMIC_GRID
from torch_lm.reports.mixtures import GROWING_BLOCK
from torch_lm.reports.tuning import slice_split
from torch_lm.training.batches import split_ids
from torch_lm.training.checkpoint import model_from_checkpoint
from torch_lm.training.config import TrainConfig
from torch_lm.training.dynamic import DynamicSettings, dynamic_heldout, dynamic_log_probs
from torch_lm.training.heldout import heldout_loss
from torch_lm.training.trainer import Trainer, train
from torch_lm.training.vocab import CharVocab

REPO = Path(__file__).resolve().parents[2]
SPEAKERS = ("KING", "QUEEN", "HAMLET", "LORD")


def tiny_play(n_chars: int = 4000, seed: int = 0) -> str:
    """Speeches of random words: capitals, punctuation, spaces and newlines (~30 characters)."""
    rng = random.Random(seed)
    parts = []
    while sum(map(len, parts)) < n_chars:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 7)))
        parts.append(f"{rng.choice(SPEAKERS)}:\n{line.capitalize()}{rng.choice(',.!?')}\n\n")
    return "".join(parts)[:n_chars]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A directory with ``text.txt``, a tiny trained NeuralLM in ``run/`` (best.pt + events) and
    the same recipe trained without the train slice in ``holdout/`` (the mixture's tuner)."""
    path = tmp_path_factory.mktemp("reports")
    text = tiny_play()
    (path / "text.txt").write_text(text)
    model = ModelConfig(vocab_size=len(set(text)), context=4, embed_dim=4, hidden_dim=16)
    run = TrainConfig(
        batch_size=32,
        max_steps=20,
        eval_interval=10,
        log_interval=5,
        sample_length=10,
        eval_batch_size=1024,
        device="cpu",
        run_dir=str(path / "run"),
    )
    _, slice_ids = slice_split(split_ids(CharVocab.from_text(text).encode(text))[0])
    with contextlib.redirect_stderr(io.StringIO()):
        train(model, run, text)
        train(model, replace(run, run_dir=str(path / "holdout"), holdout_tail=len(slice_ids)), text)
    return path


def call(main, argv) -> tuple[int, str, str]:
    """Run a script's ``main(argv)`` in-process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as stop:  # argparse errors exit from inside parse_args
            code = stop.code
    return code, out.getvalue(), err.getvalue()


def assert_one_line_error(code: int, err: str, expected_code: int, pattern: str) -> None:
    """Exit ``expected_code`` and exactly one stderr line, matching ``pattern``, no traceback."""
    assert code == expected_code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert re.search(pattern, lines[0]), lines[0]


def fails(main, argv, expected_code: int, pattern: str) -> None:
    """``main(argv)`` fails with one stderr line matching ``pattern`` and ``expected_code``."""
    code, _, err = call(main, argv)
    assert_one_line_error(code, err, expected_code, pattern)


@pytest.fixture(scope="module")
def swept(workdir) -> dict:
    """A two-context sweep (4 steps each) on the tiny text; its JSON results and table."""
    reports = workdir / "reports"
    code, out, err = call(
        sweep_cli.main,
        [
            "--contexts",
            "1,2",
            "--steps",
            4,
            "--embed-dim",
            4,
            "--hidden-dim",
            8,
            "--batch-size",
            16,
            "--eval-interval",
            4,
            "--device",
            "cpu",
            "--data",
            workdir / "text.txt",
            "--runs-root",
            workdir / "sweep_runs",
            "--out",
            reports / "sweep.json",
            "--png",
            reports / "sweep_context.png",
        ],
    )
    assert code == 0, err
    return {"results": json.loads((reports / "sweep.json").read_text()), "table": out}


# ----------------------------------------------------------------------------- sweep
def test_sweep_trains_each_context_with_its_ngram_twin(workdir, swept):
    results = swept["results"]
    assert [row["context"] for row in results["rows"]] == [1, 2] and results["steps"] == 4
    text = (workdir / "text.txt").read_text()
    vocab = CharVocab.from_text(text)
    train_ids, val_ids = split_ids(vocab.encode(text))
    for row in results["rows"]:
        assert row["neural"]["steps"] == 4 and row["neural"]["fusion"] == ([] if row["context"] == 1 else [2])
        order = row["context"] + 1
        expected = NGramLM.fit(train_ids, order, len(vocab), "mkn").score(
            torch.cat([train_ids, val_ids]), len(train_ids)
        )
        assert row["ngram"]["order"] == order and row["ngram"]["val_loss"] == pytest.approx(expected)
        events = EventAccumulator(row["neural"]["run_dir"])
        events.Reload()
        assert "loss/val" in events.Tags()["scalars"]
        assert events.PluginTagToContent("hparams")  # an hparams run
    assert (workdir / "reports" / "sweep_context.png").stat().st_size > 0
    assert "context" in swept["table"].splitlines()[0] and len(swept["table"].splitlines()) == 3


def test_sweep_refuses_to_overwrite_runs_without_the_flag(workdir, swept):
    code, _, err = call(
        sweep_cli.main,
        [
            "--contexts",
            "1",
            "--steps",
            4,
            "--data",
            workdir / "text.txt",
            "--runs-root",
            workdir / "sweep_runs",
            "--out",
            workdir / "other.json",
            "--png",
            workdir / "other.png",
        ],
    )
    assert_one_line_error(code, err, 2, "already holds a run; pass --overwrite")  # refused before any work


def test_fusion_and_ngram_order_limits():
    assert sweep.fusion_for(8, "pairs") == (2, 2, 2) and sweep.fusion_for(8, "flat") == ()
    assert sweep.fusion_for(1, "pairs") == ()
    assert sweep.fusion_for(16, "default") == (2, 2, 2, 2) and sweep.fusion_for(6, "default") == ()
    with pytest.raises(ValueError, match="power-of-two"):
        sweep.fusion_for(6, "pairs")
    assert sweep.max_ngram_order(65) == 10  # 65**10 < 2**63 <= 65**11


# ----------------------------------------------------------------------------- embeddings
def test_plot_embeddings_writes_both_projections(workdir):
    code, _, err = call(
        embeddings_cli.main,
        ["--checkpoint", workdir / "run" / "best.pt", "--out-dir", workdir / "emb", "--perplexity", 5],
    )
    assert code == 0, err
    for name in ("embeddings_pca.png", "embeddings_tsne.png"):
        assert (workdir / "emb" / name).read_bytes().startswith(b"\x89PNG")
    assert re.search(r"t-SNE KL \d\.\d{4} \(NumPy reference \d\.\d{4}\)", err.splitlines()[-1])


def test_character_categories():
    assert [embeddings.category(c) for c in "aKz7 ;\n"] == [
        "vowel",
        "capital",
        "consonant",
        "digit",
        "whitespace",
        "punctuation",
        "whitespace",
    ]


# ----------------------------------------------------------------------------- compare
def run_compare(workdir: Path, *extra) -> tuple[int, str]:
    code, _, err = call(
        compare_cli.main,
        [
            "--checkpoint",
            workdir / "run" / "best.pt",
            "--data",
            workdir / "text.txt",
            "--tuning-checkpoint",
            workdir / "holdout" / "best.pt",
            "--out",
            workdir / "reports" / "REPORT.md",
            "--fit-steps",
            5,
            "--sample-length",
            100,
            "--kn-order",
            3,
            *extra,
        ],
    )
    return code, err


def test_compare_writes_a_deterministic_report_from_computed_numbers(workdir, swept):
    reports = workdir / "reports"
    code, err = run_compare(workdir)
    assert code == 0, err
    outputs = ("REPORT.md", "compare.json", "loss_curves.png", "generation_quality.png")
    first = {name: (reports / name).read_bytes() for name in outputs}
    assert run_compare(workdir)[0] == 0
    assert {name: (reports / name).read_bytes() for name in outputs} == first  # byte for byte

    report, summary = first["REPORT.md"].decode(), json.loads(first["compare.json"])
    rows = {row["key"]: row for row in summary["rows"]}
    assert list(rows) == [
        "uniform",
        "unigram",
        "bigram_addk",
        "neural_bigram",
        "trigram_addk",
        "trigram_kn",
        "neural_trigram",
        "best_count",
        "neural_lm",
        "mixture",
        "mixture_context",
    ]
    for row in rows.values():
        assert f"| {row['label']} | {row['context']} |" in report and f"{row['val_loss']:.4f}" in report
        assert row["mode"] == "static"
    dynamic = {row["key"]: row for row in summary["dynamic_rows"]}
    assert list(dynamic) == ["neural_lm_dynamic", "kn_growing", "mixture_dynamic"]
    for row in dynamic.values():
        assert row["mode"] == "dynamic" and f"| {row['label']} | {row['setting']} | {row['val_loss']:.4f} |" in report

    # the NeuralLM row is evaluate --json's figure of the same checkpoint: one scorer
    checkpoint = workdir / "run" / "best.pt"
    code, out, err = call(evaluate_cli.main, ["--checkpoint", checkpoint, "--data", workdir / "text.txt", "--json"])
    assert code == 0, err
    assert rows["neural_lm"]["val_loss"] == pytest.approx(json.loads(out)["val_loss"], rel=0, abs=1e-9)
    model, vocab = model_from_checkpoint(str(checkpoint), torch.device("cpu"))
    train_ids, val_ids = split_ids(vocab.encode((workdir / "text.txt").read_text()))
    expected = heldout_loss(model, train_ids, val_ids, model.config.context).loss
    assert rows["neural_lm"]["val_loss"] == pytest.approx(expected, rel=0, abs=1e-9)
    # the dynamic row is evaluate --dynamic's figure with the settings chosen on the slice
    settings = DynamicSettings(**summary["dynamic"]["settings"])
    assert settings in DYNAMIC_GRID
    expected = dynamic_heldout(model, train_ids, val_ids, settings).loss
    assert dynamic["neural_lm_dynamic"]["val_loss"] == pytest.approx(expected, abs=1e-6)

    counts = [r["val_loss"] for r in rows.values() if r["kind"] in ("baseline", "count")]
    beats = rows["neural_lm"]["val_loss"] < min(counts)
    assert f"beat every count model? {'Yes' if beats else 'No'}.**" in report
    mixture_wins = rows["mixture"]["val_loss"] < min(rows["neural_lm"]["val_loss"], rows["best_count"]["val_loss"])
    assert ("beat both its parts? Yes.**" in report) == mixture_wins
    assert summary["sweep_included"] and "![perplexity against context](sweep_context.png)" in report
    assert summary["convergence"][0]["table"] - summary["convergence"][0]["count_mle"] > -1e-12


def test_compare_refuses_a_tuning_model_that_saw_the_slice(workdir):
    code, err = run_compare(workdir, "--tuning-checkpoint", workdir / "run" / "best.pt")
    assert_one_line_error(code, err, 1, "not trained with the .* train slice held out")


def test_holdout_tail_keeps_the_slice_out_of_every_batch(workdir, tmp_path):
    """The tuner's sampler draws windows from train minus the slice only, so no target (nor
    context) of any batch lies in the slice."""
    tuner = torch.load(workdir / "holdout" / "best.pt", weights_only=True)
    text = (workdir / "text.txt").read_text()
    train_ids = split_ids(CharVocab.from_text(text).encode(text))[0]
    holdout = tuner["train_config"]["holdout_tail"]
    assert holdout == len(slice_split(train_ids)[1]) > 0
    config = replace(TrainConfig.from_dict(tuner["train_config"]), run_dir=str(tmp_path / "t"))
    trainer = Trainer(ModelConfig.from_dict(tuner["model_config"]), config, text)
    assert torch.equal(trainer.sampler.ids, train_ids[: len(train_ids) - holdout])


def test_compare_all_regenerates_sweep_and_embeddings(workdir, monkeypatch):
    """The one command: sweep (one context, 1 step) + embedding plots + report."""
    monkeypatch.chdir(workdir)  # runs/sweep is relative
    out = workdir / "all" / "REPORT.md"
    code, _, err = call(
        compare_cli.main,
        [
            "--all",
            "--sweep-steps",
            1,
            "--sweep-contexts",
            1,
            "--checkpoint",
            workdir / "run" / "best.pt",
            "--tuning-checkpoint",
            workdir / "all-holdout" / "best.pt",
            "--data",
            workdir / "text.txt",
            "--out",
            out,
            "--fit-steps",
            5,
            "--sample-length",
            50,
            "--kn-order",
            3,
        ],
    )
    assert code == 0, err
    results = json.loads((out.parent / "sweep.json").read_text())
    assert [row["context"] for row in results["rows"]] == [1] and results["steps"] == 1
    report = out.read_text()
    assert "python scripts/compare.py --all" in report and "embeddings_tsne.png" in report
    assert all((out.parent / name).is_file() for name in ("sweep_context.png", "embeddings_pca.png"))
    tuner = torch.load(workdir / "all-holdout" / "best.pt", weights_only=True)  # --all trained it
    assert tuner["train_config"]["holdout_tail"] > 0 and tuner["train_config"]["max_steps"] == 20


# ----------------------------------------------------------------------------- bad input
BAD_FLAGS = [  # (script main, argv, pattern): exit 2, one line
    (sweep_cli.main, ["--contexts", "0"], "expected distinct positive integers"),
    (sweep_cli.main, ["--contexts", "2,2"], "expected distinct positive integers"),
    (sweep_cli.main, ["--contexts", "one"], "expected comma-separated integers"),
    (sweep_cli.main, ["--steps", "0"], "must be a positive integer"),
    (sweep_cli.main, ["--time-budget", "-1"], "must be a finite number >= 0"),
    (sweep_cli.main, ["--fusion", "tree"], "invalid choice"),
    (embeddings_cli.main, ["--perplexity", "many"], "invalid float value"),
    (compare_cli.main, ["--temperature", "0"], "must be a finite number > 0"),
    (compare_cli.main, ["--sample-length", "0"], "must be a positive integer"),
    (compare_cli.main, ["--kn-order", "1"], "order must be at least 2"),
    (compare_cli.main, ["--fit-steps", "-3"], "must be a positive integer"),
    (compare_cli.main, ["--device", "tpu"], "device"),
]


@pytest.mark.parametrize(
    "main, argv, pattern", BAD_FLAGS, ids=[f"{m.__module__.split('.')[-1]} {' '.join(a)}" for m, a, _ in BAD_FLAGS]
)
def test_bad_flags_exit_2_with_one_line(main, argv, pattern):
    fails(main, argv, 2, pattern)


def test_values_that_only_the_data_can_refuse_exit_2(workdir):
    text, checkpoint = workdir / "text.txt", workdir / "run" / "best.pt"
    fails(sweep_cli.main, ["--fusion", "pairs", "--contexts", "3", "--data", text], 2, "power-of-two")
    fails(sweep_cli.main, ["--lr", "-1", "--contexts", "1", "--data", text], 2, "lr must be")
    fails(
        embeddings_cli.main,
        ["--checkpoint", checkpoint, "--perplexity", 100],
        2,
        r"--perplexity must lie in \[1, \d+\)",
    )


def test_missing_or_mismatched_inputs_exit_1(workdir, tmp_path):
    missing = tmp_path / "runs" / "x" / "best.pt"
    hint = re.escape(f"python scripts/train.py --run-dir {missing.parent}")
    fails(compare_cli.main, ["--checkpoint", missing], 1, hint)
    fails(embeddings_cli.main, ["--checkpoint", missing], 1, hint)
    fails(sweep_cli.main, ["--data", tmp_path / "nope.txt", "--runs-root", tmp_path / "sweep"], 1, "not found")
    other = tmp_path / "other.txt"
    other.write_text("abcdefghij" * 50)
    fails(
        compare_cli.main,
        ["--checkpoint", workdir / "run" / "best.pt", "--data", other],
        1,
        "vocabulary that does not match",
    )


@pytest.mark.parametrize("script", ["sweep_context", "plot_embeddings", "compare"])
def test_wrapper_scripts_show_help(script, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [script, "--help"])
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(str(REPO / "scripts" / f"{script}.py"), run_name="__main__")
    assert stop.value.code == 0 and "usage:" in capsys.readouterr().out


# ----------------------------------------------------------------------------- choices and figures, checked apart
def compare_summary(workdir: Path, text_path: Path, out_dir: Path) -> dict:
    """compare.json of a report on ``text_path`` with the fixture's checkpoint and tuning model, the
    Kneser-Ney order chosen on the train slice."""
    code, _, err = call(
        compare_cli.main,
        [
            "--checkpoint",
            workdir / "run" / "best.pt",
            "--data",
            text_path,
            "--tuning-checkpoint",
            workdir / "holdout" / "best.pt",
            "--out",
            out_dir / "REPORT.md",
            "--fit-steps",
            5,
            "--sample-length",
            50,
        ],
    )
    assert code == 0, err
    return json.loads((out_dir / "compare.json").read_text())


def choices(summary: dict) -> dict:
    """Everything the report chose: each row's setting, the Kneser-Ney order, lambda, the context
    weights, the dynamic settings and weights, with the slice losses they were chosen on."""
    mixture = {k: v for k, v in summary["mixture"].items() if "val" not in k}  # val figures are shown, not used
    return {
        "settings": [row["setting"] for row in summary["rows"] + summary["dynamic_rows"]],
        "kn_order": summary["kn_order"],
        "mixture": mixture,
        "context_mixture": summary["context_mixture"],
        "dynamic": summary["dynamic"],
    }


@pytest.fixture(scope="module")
def report(workdir) -> dict:
    return compare_summary(workdir, workdir / "text.txt", workdir / "report")


def test_no_choice_reads_val(workdir, report, tmp_path):
    """Val's characters changed (reversed: the same characters, another text), every choice of the
    report stays the same, to the last bit, while the val figures move."""
    text = (workdir / "text.txt").read_text()
    n_train = len(split_ids(torch.arange(len(text)))[0])
    (tmp_path / "text.txt").write_text(text[:n_train] + text[n_train:][::-1])
    changed = compare_summary(workdir, tmp_path / "text.txt", tmp_path)
    assert choices(changed) == choices(report)
    assert [r["val_loss"] for r in changed["rows"]] != [r["val_loss"] for r in report["rows"]]


def test_the_kn_order_is_the_best_on_the_train_slice(workdir, report):
    kn = report["kn_order"]
    assert kn["chosen_on"] == "train slice" and kn["order"] == int(min(kn["slice_losses"], key=kn["slice_losses"].get))
    rows = {row["key"]: row for row in report["rows"]}
    assert rows["best_count"]["label"] == f"modified Kneser-Ney {kn['order']}-gram"


def val_stream(workdir: Path):
    text = (workdir / "text.txt").read_text()
    vocab = CharVocab.from_text(text)
    train_ids, val_ids = split_ids(vocab.encode(text))
    return vocab, train_ids.numpy(), val_ids.numpy()


def numpy_growing_kn(train_ids, val_ids, order: int, vocab_size: int):
    """The growing count model recomputed with the NumPy engine: block by block, refitted on train
    and the val already scored; (probability tables (N, V), matched orders (N,))."""
    from numpy_ref.ngram import NGramLM as NumpyNGram

    tables, matched = [], []
    for start in range(0, len(val_ids), GROWING_BLOCK):
        seen = np.concatenate([train_ids, val_ids[:start]])
        stream = np.concatenate([seen[len(seen) - order + 1 :], val_ids[start : start + GROWING_BLOCK]])
        contexts = np.lib.stride_tricks.sliding_window_view(stream[:-1], order - 1)
        model = NumpyNGram.fit(seen, order, vocab_size, "mkn")
        tables.append(model.prob_table(contexts))
        matched.append(model.seen_context_length(contexts))
    return np.concatenate(tables), np.concatenate(matched)


def mixture_loss(weights, probs_a, probs_b, matched, targets, order: int) -> float:
    """-mean log(lam p_a + (1 - lam) p_b) at the targets, lam = sigmoid(w . [onehot(matched), H(p_a), H(p_b)])."""
    entropy = lambda p: -(p * np.log(np.maximum(p, 1e-300))).sum(axis=1)  # noqa: E731
    design = np.concatenate([np.eye(order)[matched], entropy(probs_a)[:, None], entropy(probs_b)[:, None]], axis=1)
    lam = 1 / (1 + np.exp(-design @ np.asarray(weights)))
    rows = np.arange(len(targets))
    return float(-np.log(lam * probs_a[rows, targets] + (1 - lam) * probs_b[rows, targets]).mean())


def test_growing_kn_and_the_mixtures_recomputed_by_an_independent_evaluator(workdir, report):
    """The growing Kneser-Ney row by NumPy refits, the static context mixture from the NumPy
    NeuralLM and NumPy Kneser-Ney, the dynamic mixture from dynamic evaluation and the NumPy
    growing model, each mixed by the formula written out here."""
    from numpy_ref.neural_lm import neural_lm_forward
    from numpy_ref.ngram import NGramLM as NumpyNGram

    vocab, train_ids, val_ids = val_stream(workdir)
    V, order = len(vocab), report["kn_order"]["order"]
    dynamic = {row["key"]: row for row in report["dynamic_rows"]}
    rows = {row["key"]: row for row in report["rows"]}
    grown, grown_matched = numpy_growing_kn(train_ids, val_ids, order, V)
    picked = grown[np.arange(len(val_ids)), val_ids]
    assert dynamic["kn_growing"]["val_loss"] == pytest.approx(float(-np.log(picked).mean()), rel=0, abs=1e-9)

    model, _ = model_from_checkpoint(str(workdir / "run" / "best.pt"), torch.device("cpu"))
    params = {k: v.double().numpy() for k, v in model.state_dict().items()}
    context = model.config.context
    stream = np.concatenate([train_ids[len(train_ids) - context :], val_ids])
    windows = np.lib.stride_tricks.sliding_window_view(stream[:-1], context)
    logits = neural_lm_forward(params, windows, model.config)[0]
    neural = np.exp(logits - logits.max(1, keepdims=True))
    neural /= neural.sum(1, keepdims=True)
    kn = NumpyNGram.fit(train_ids, order, V, "mkn")
    kn_contexts = windows[:, context - order + 1 :]
    static = mixture_loss(
        report["context_mixture"]["weights"],
        neural,
        kn.prob_table(kn_contexts),
        kn.seen_context_length(kn_contexts),
        val_ids,
        order,
    )
    # float32 weights evaluated in float64 here, in float32 by the report
    assert rows["mixture_context"]["val_loss"] == pytest.approx(static, rel=0, abs=1e-5)

    settings = DynamicSettings(**report["dynamic"]["settings"])
    adapted = dynamic_log_probs(model, torch.from_numpy(train_ids), torch.from_numpy(val_ids), settings).exp().numpy()
    mixed = mixture_loss(report["dynamic"]["weights"], adapted, grown, grown_matched, val_ids, order)
    assert dynamic["mixture_dynamic"]["val_loss"] == pytest.approx(mixed, rel=0, abs=1e-9)
    assert dynamic["mixture_dynamic"]["context"] == max(context, order - 1)
