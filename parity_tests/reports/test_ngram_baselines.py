"""torch_lm/reports/ngram_baselines.py through its command: the table agrees with the library,
bad values exit 2 with one line, a missing text 1, and the script runs as a process."""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_in_process_error, call

from numpy_ref import ngram as ref
from torch_lm.cli.ngram_baselines import main

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "ngram_baselines.py"


@pytest.fixture
def tiny_text(tmp_path) -> Path:
    path = tmp_path / "tiny.txt"
    path.write_text("to be, or not to be: that is the question.\n" * 20, encoding="utf-8")
    return path


def test_script_table_matches_library(tiny_text, capsys):
    main(["--data", str(tiny_text), "--orders", "1,3", "--smoothing", "kn,addk", "--k", "0.5", "--json"])
    rows = json.loads(capsys.readouterr().out)
    ids = np.array([ord(ch) for ch in tiny_text.read_text()])
    ids = np.searchsorted(np.unique(ids), ids)
    vocab_size, n_train = int(ids.max()) + 1, int(0.9 * len(ids))
    assert rows[0]["model"] == "uniform" and math.isclose(rows[0]["loss"], math.log(vocab_size))
    got = {(r["smoothing"], r["order"]): r["loss"] for r in rows[1:]}
    for smoothing, order in itertools.product(["kn", "addk"], [1, 3]):
        model = ref.NGramLM.fit(ids[:n_train], order, vocab_size, smoothing, k=0.5)
        assert math.isclose(got[smoothing, order], model.score(ids, n_train))


@pytest.mark.parametrize(
    "argv",
    [
        ["--orders", "0"],
        ["--orders", "2,x"],
        ["--smoothing", "kn,foo"],
        ["--k", "-1"],
        ["--k", "nan"],
        ["--discount", "1"],
        ["--threads", "0"],
        ["--orders", "16"],
    ],
)  # 16: V**16 overflows int64
def test_script_rejects_bad_values(argv, tiny_text, capsys):
    assert_in_process_error(call(capsys, main, "--data", str(tiny_text), *argv), 2, ": error: ")


def test_script_exit_codes_as_a_process(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    missing = subprocess.run(
        [sys.executable, str(SCRIPT), "--data", str(tmp_path / "none.txt")], capture_output=True, text=True, env=env
    )
    assert missing.returncode == 1 and "--data: no file at" in missing.stderr.splitlines()[-1]
    helped = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, env=env)
    assert helped.returncode == 0 and "--smoothing" in helped.stdout
