"""No JSON the project writes holds NaN or Infinity (torch_lm/strict_json.py, docs/DESIGN.md §2): a
non-finite number is null with its reason beside it, in every writer, and the encoder refuses what
the conversion does not reach."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from conftest import REPO

from torch_lm import strict_json
from torch_lm.bench.markdown import write_reports
from torch_lm.cli.ngram_baselines import main as ngram_main
from torch_lm.training.tensorboard_log import MetricsFile, read_metrics

INF, NAN = float("inf"), float("nan")


def strict_loads(text: str):
    """``json.loads`` that refuses NaN / Infinity / -Infinity, as jq and JavaScript do."""

    def refuse(constant: str):
        raise AssertionError(f"{constant} in the JSON")

    return json.loads(text, parse_constant=refuse)


def test_a_non_finite_number_is_null_with_its_reason_beside_it():
    written = strict_json.dumps(
        {"val_loss": 781.5, "val_ppl": INF, "bpc": NAN, "floor": -INF, "positions": 300, "name": "x"},
        reason="dynamic evaluation diverged",
    )
    assert strict_loads(written) == {
        "val_loss": 781.5,
        "val_ppl": None,
        "val_ppl_reason": "not finite (inf): dynamic evaluation diverged",
        "bpc": None,
        "bpc_reason": "not finite (nan): dynamic evaluation diverged",
        "floor": None,
        "floor_reason": "not finite (-inf): dynamic evaluation diverged",
        "positions": 300,
        "name": "x",
    }


def test_lists_and_nested_objects_keep_the_reason_next_to_the_value():
    document = {"curve": [1.0, NAN, 2.0, (INF,)], "rows": [{"loss": INF, "order": 2}, {"loss": 1.5}], "ok": [1, 2]}
    assert strict_loads(strict_json.dumps(document)) == {
        "curve": [1.0, None, 2.0, [None]],
        "curve_reason": "not finite (nan at [1], inf at [3][0])",
        "rows": [{"loss": None, "loss_reason": "not finite (inf)", "order": 2}, {"loss": 1.5}],
        "ok": [1, 2],
    }
    assert strict_loads(strict_json.dumps([{"loss": INF}])) == [{"loss": None, "loss_reason": "not finite (inf)"}]


def test_finite_documents_are_written_as_json_writes_them():
    document = {"a": [1.0, 2.5e-300, -0.0], "b": {"c": (1, 2)}, "d": None, "e": True, "f": 1e308}
    assert strict_json.dumps(document, indent=2) == json.dumps(document, indent=2)


def test_what_has_no_place_for_a_reason_fails_loudly():
    with pytest.raises(ValueError, match="outside any object"):
        strict_json.dumps(NAN)
    with pytest.raises(ValueError, match="outside any object"):
        strict_json.dumps([1.0, INF])


def test_metrics_jsonl_writes_null_with_its_reason(tmp_path):
    metrics = MetricsFile(tmp_path / "metrics.jsonl")
    metrics.write(10, {"loss/train": NAN, "lr": 0.002})
    metrics.close()
    line = (tmp_path / "metrics.jsonl").read_text().strip()
    assert strict_loads(line) == {"step": 10, "loss/train": None, "loss/train_reason": "not finite (nan)", "lr": 0.002}
    assert read_metrics(tmp_path / "metrics.jsonl")[0]["loss/train"] is None


def test_an_unsmoothed_count_model_writes_null_for_an_infinite_loss(tmp_path, capsys):
    # "ab" never occurs in the train text: the unsmoothed bigram gives it probability 0 in val
    text = tmp_path / "text.txt"
    text.write_text("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaabbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb" + "ab" * 4)
    assert ngram_main(["--data", str(text), "--orders", "2", "--smoothing", "addk", "--k", "0", "--json"]) == 0
    rows = strict_loads(capsys.readouterr().out)
    bigram = rows[1]
    assert bigram["loss"] is None and bigram["perplexity"] is None and bigram["bits_per_char"] is None
    assert bigram["loss_reason"] == "not finite (inf): a scored character has probability 0 under this model"


def test_bench_json_writes_null_with_its_reason(tmp_path):
    results = json.loads((REPO / "reports" / "bench.json").read_text())
    results["summary"]["train_to_peak_ratio"] = NAN
    json_path, _ = write_reports(results, tmp_path, "python scripts/bench.py")
    summary = strict_loads(json_path.read_text())["summary"]
    assert summary["train_to_peak_ratio"] is None
    assert summary["train_to_peak_ratio_reason"] == "not finite (nan)"


def json_writers() -> list[Path]:
    """Every module of the package that writes JSON text."""
    return sorted(
        path
        for path in (REPO / "torch_lm").rglob("*.py")
        if re.search(r"\bjson\.dumps?\(", path.read_text()) and path.name != "strict_json.py"
    )


def test_every_json_writer_goes_through_strict_json():
    """A new ``json.dumps`` would write NaN / Infinity again: JSON is written by ``strict_json.dumps``."""
    writers = [str(path.relative_to(REPO)) for path in json_writers()]
    assert not writers, f"{writers} write JSON with the json module; use torch_lm.strict_json.dumps"


def test_no_committed_json_report_holds_nan_or_infinity():
    for path in sorted((REPO / "reports").glob("*.json")):
        document = strict_loads(path.read_text())
        assert document is not None, path
        assert not any(isinstance(v, float) and not math.isfinite(v) for v in _numbers(document)), path


def _numbers(value):
    if isinstance(value, dict):
        for item in value.values():
            yield from _numbers(item)
    elif isinstance(value, list):
        for item in value:
            yield from _numbers(item)
    else:
        yield value
