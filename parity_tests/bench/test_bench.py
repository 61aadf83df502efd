"""The benchmark (``torch_lm/bench``, ``scripts/bench.py``) smoke tests: tiny sizes, the JSON and
report contract, FLOP counting.

No timing is asserted here: speed is judged by the figures the benchmark prints, as ratios
within one run (docs/DESIGN.md §5), never by a timed unit test.
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import replace

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from numpy_ref.config import ModelConfig
from torch_lm.bench import engines, markdown, run, sampling, timing
from torch_lm.bench import plan as bench_plan
from torch_lm.cli import bench as bench_cli
from torch_lm.neural_lm import NeuralLM
from torch_lm.training.config import TrainConfig

# The --json contract: the last line holds at least these keys.
REQUIRED_KEYS = {
    "gemm_peak_gflops",
    "train_gflops",
    "train_to_peak_ratio",
    "tokens_per_sec",
    "sampling_share",
    "logging_share",
    "numpy_over_torch_float64",
    "numpy_over_torch_float32",
    "sampling_speedup_b1",
    "kn7_fit_score_s",
    "parity_suite_s",
    "threads",
    "loadavg_start",
    "loadavg_end",
}


def tiny_plan() -> bench_plan.BenchPlan:
    """Every section at toy size."""
    return bench_plan.BenchPlan(
        ModelConfig(context=4, embed_dim=3, hidden_dim=8, fusion=(2, 2)),
        TrainConfig(batch_size=8, log_interval=2),
        gemm_sizes=(16, 32),
        windows=2,
        compare_steps=2,
        scaling_steps=2,
        ngram_orders=(2, 7),
        sample_chars=6,
        sample_batches=(1, 3),
        sample_repeats=2,
        run_suite=False,
    )


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    """One ``bench.py --json`` run on a tiny text and plan: (stdout lines, out dir, text)."""
    tmp = tmp_path_factory.mktemp("bench")
    text = tmp / "tiny.txt"
    text.write_text("to be, or not to be: that is the question.\n" * 30, encoding="utf-8")
    out_dir = tmp / "reports"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = bench_cli.main(
            ["--json", "--skip-suite", "--data", str(text), "--out-dir", str(out_dir)], plan=tiny_plan()
        )
    assert code == 0
    return stdout.getvalue().strip().splitlines(), out_dir, text.read_text()


def test_json_last_line_and_reports(bench_run):
    lines, out_dir, text = bench_run
    summary = json.loads(lines[-1])
    assert REQUIRED_KEYS <= set(summary)
    assert summary["parity_suite_s"] is None  # --skip-suite (and the plan) skip it
    assert summary["kn7_fit_score_s"] > 0  # order 7 ran on the given text
    assert summary["threads"] >= 1 and len(summary["loadavg_start"]) == 3
    shares = [summary[f"{piece}_share"] for piece in bench_plan.PIECES]
    assert sum(shares) == pytest.approx(1.0) and min(shares) >= 0
    assert set(summary["targets"]) == set(bench_plan.TARGETS)

    full = json.loads((out_dir / "bench.json").read_text())
    assert full["summary"] == summary
    assert [row["row"] for row in full["scaling"]] == ["base", "2x batch", "2x context", "2x hidden"]
    assert [(r["smoothing"], r["order"]) for r in full["ngram"]] == [("kn", 2), ("kn", 7), ("mkn", 2), ("mkn", 7)]
    assert set(full["numpy_vs_torch"]) == {"float64", "float32"}
    assert [(r["batch"], r["chars_per_row"]) for r in full["sampling"]] == [(1, 6), (3, 6)]
    for row in full["sampling"]:  # well-formed figures, not a timing verdict
        assert row["window_chars_per_s"] > 0 and row["incremental_chars_per_s"] > 0
        assert row["speedup"] == pytest.approx(row["incremental_chars_per_s"] / row["window_chars_per_s"])
    assert summary["sampling_speedup_b3"] == full["sampling"][1]["speedup"]
    assert full["plan"]["model"]["vocab_size"] == len(set(text))
    report = (out_dir / "BENCH.md").read_text()
    assert report.startswith("# Benchmarks")
    for heading in (
        "## Targets",
        "## Step split",
        "## NumPy reference vs torch",
        "## Sampling (generate: window forward vs incremental predictor)",
        "## Scaling",
        "## n-gram",
        "## Parity suite",
    ):
        assert heading in report
    assert report.rstrip().endswith(markdown.NOTES_MARKER)


def test_rewriting_the_report_keeps_the_notes(bench_run, tmp_path):
    _, out_dir, _ = bench_run
    results = json.loads((out_dir / "bench.json").read_text())
    md = tmp_path / "BENCH.md"
    md.write_text("# old generated part\n" + markdown.NOTES_MARKER + "\n## Before/after\nhand-written\n")
    markdown.write_reports(results, tmp_path, "python scripts/bench.py")
    text = md.read_text()
    assert text.startswith("# Benchmarks") and "# old generated part" not in text
    assert text.endswith(markdown.NOTES_MARKER + "\n## Before/after\nhand-written\n")


def test_without_text_the_ngram_figures_are_missing_not_failed(bench_run):
    _, out_dir, _ = bench_run
    results = json.loads((out_dir / "bench.json").read_text()) | {"ngram": None}
    summary = run.summarize(results)
    assert summary["kn7_fit_score_s"] is None
    assert summary["targets"]["7-gram KN fit + held-out scoring (s)"]["met"] is None
    ids, config = run.training_ids(None, ModelConfig(), seed=0)  # batches from random ids
    assert len(ids) == 1_003_854 and int(ids.max()) < config.vocab_size == ModelConfig().vocab_size


def test_a_missing_data_file_is_a_failure_while_running(tmp_path, capsys):
    # as for every command that reads the text: exit 1, one line (docs/DESIGN.md §6)
    assert bench_cli.main(["--data", str(tmp_path / "absent.txt"), "--skip-suite"]) == 1
    assert capsys.readouterr().err.strip().endswith("absent.txt")


def test_matmul_flops_counts_three_times_every_linear_forward():
    # flat default-like model: (512 x 192) @ (192 x 512) and (512 x 512) @ (512 x 65)
    config = ModelConfig(vocab_size=65, context=8, embed_dim=24, hidden_dim=512, fusion=(), activation="tanh")
    assert timing.matmul_flops(config, 512) == 3 * 2 * 512 * (192 * 512 + 512 * 65) == 404_226_048
    # fusion (2, 4) on context 8: level 0 has B*4 rows of 2*E, level 1 B rows of 4*H; 1 block
    fused = ModelConfig(
        vocab_size=10, context=8, embed_dim=3, hidden_dim=5, fusion=(2, 4), n_blocks=1, activation="tanh"
    )
    forward = 2 * 7 * (4 * 6 * 5 + 1 * 20 * 5 + 5 * 5 + 5 * 10)
    assert timing.matmul_flops(fused, 7) == 3 * forward


@pytest.mark.parametrize(
    "config, rows, targets_per_row",
    [
        (ModelConfig(vocab_size=10, context=8, embed_dim=3, hidden_dim=5, fusion=(2, 4), n_blocks=1), 7, 1),
        (ModelConfig(vocab_size=10, context=8, embed_dim=3, hidden_dim=5, fusion=(2, 4), n_blocks=1), 7, 5),
        (ModelConfig(vocab_size=10, context=16, embed_dim=3, hidden_dim=5, fusion=(2, 2, 2, 2)), 3, 9),
        (ModelConfig(vocab_size=10, context=6, embed_dim=3, hidden_dim=5, fusion=()), 2, 4),
        (
            ModelConfig(
                vocab_size=10, context=8, embed_dim=3, hidden_dim=5, fusion=(2, 4), n_blocks=1, activation="gated"
            ),
            7,
            5,
        ),
        (ModelConfig(vocab_size=10, context=8, embed_dim=3, hidden_dim=5, fusion=(2, 4), activation="gated"), 7, 1),
    ],
)
def test_matmul_flops_match_torchs_count_of_a_training_step(config, rows, targets_per_row):
    """The formula against torch's own FLOP counter over one forward and backward, window and
    sequence rows alike."""
    model = NeuralLM(config)
    x = torch.randint(config.vocab_size, (rows, config.context + targets_per_row - 1))
    with FlopCounterMode(display=False) as counter:
        if targets_per_row == 1:
            _, loss = model(x, torch.randint(config.vocab_size, (rows,)))
        else:
            _, loss = model.forward_sequence(x, torch.randint(config.vocab_size, (rows, targets_per_row)))
        loss.backward()
    assert timing.matmul_flops(config, rows, targets_per_row) == counter.get_total_flops()


def test_doubled_context_keeps_the_fusion_consistent():
    assert engines.doubled_context(ModelConfig(context=8)).context == 16
    fused = engines.doubled_context(ModelConfig(context=8, fusion=(2, 4)))
    assert (fused.context, fused.fusion) == (16, (2, 4, 2))


def test_target_verdicts():
    summary = {key: None for key, _, _ in bench_plan.TARGETS.values()}
    summary |= {
        "train_to_peak_ratio": 0.6,
        "sampling_share": 0.05,
        "numpy_over_torch_float64": 1.5,
        "bf16_speedup": 1.9,
    }
    verdicts = run.target_verdicts(summary)
    met = {v["key"]: v["met"] for v in verdicts.values()}
    assert met == {
        "train_to_peak_ratio": True,
        "sampling_share": False,
        "logging_share": None,
        "numpy_over_torch_float64": True,
        "kn7_fit_score_s": None,
        "bf16_speedup": False,
    }


def test_parity_suite_reports_wall_time_and_outcome(tmp_path):
    (tmp_path / "test_one.py").write_text("def test_one():\n    assert True\n")
    result = engines.parity_suite(tmp_path, timeout=120)
    assert result["returncode"] == 0 and "1 passed" in result["summary"]
    assert result["seconds"] > 0


def test_sampling_rows_time_both_paths_of_generate(monkeypatch):
    """``sampling_speed`` times ``generate`` once per path and repetition, after a warm-up of
    each, at every batch size, with the same seed; its table has one line per row."""
    calls = []

    def recording_generate(model, prompt, length, generator=None, incremental=True):
        calls.append((prompt.shape[0], length, incremental, generator.initial_seed()))
        return prompt

    monkeypatch.setattr(sampling, "generate", recording_generate)
    plan = replace(tiny_plan(), sample_chars=20, sample_batches=(1, 4), sample_repeats=3)
    rows = sampling.sampling_speed(plan)
    assert [r["batch"] for r in rows] == [1, 4]
    assert calls[:2] == [(1, 8, False, plan.train.seed), (1, 8, True, plan.train.seed)]  # the warm-up
    assert calls[2:8] == [(1, 20, False, plan.train.seed), (1, 20, True, plan.train.seed)] * 3
    assert len(calls) == 16
    table = markdown.sampling_table(rows, plan.to_dict())
    assert table[0].startswith("| rows | characters per row |") and len(table) == 2 + 2 + 2


def test_default_plan_reads_the_live_defaults():
    plan = bench_plan.default_plan(quick=True, run_suite=False)
    assert plan.model == ModelConfig() and plan.train == TrainConfig(precision="full")
    assert plan.windows < bench_plan.default_plan().windows and not plan.run_suite
    assert replace(plan, compile=True).to_dict()["compile"] is True
    assert plan.to_dict()["sample_batches"] == [1, 8] and plan.sample_chars < bench_plan.default_plan().sample_chars
