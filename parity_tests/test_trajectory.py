"""Trajectory parity: whole training runs of numpy_ref and torch_lm agree step by step.

30 steps of the small config (fusion levels, LayerNorm, a residual block), both optimisers, window
and sequence rows, with and without dropout; float64 to 1e-10 relative, float32 to
``torch_lm.training.trajectory.tolerance``. The default recipe's path (sequence rows of 64 targets,
fused AdamW, dropout), shortened, passes; a wrong bias correction in the NumPy AdamW and NumPy rows
whose targets are shifted by one fail it. With an EMA of the weights the averages agree too, and a
NumPy EMA that weighs the new weights by ``decay`` instead of ``1 - decay`` fails. Also: the run's
inputs are deterministic, a real difference is caught, and the script's exit codes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from numpy_ref import optim
from numpy_ref import trajectory as numpy_trajectory
from numpy_ref.config import ModelConfig
from numpy_ref.neural_lm import layer_shapes, neural_lm_sequence_forward
from numpy_ref.trajectory import TrajectoryConfig
from torch_lm.cli.trajectory_parity import main
from torch_lm.parity import Mismatch, mismatches
from torch_lm.training import trajectory
from torch_lm.training.config import TrainConfig
from torch_lm.training.trajectory import model_config_named, tolerance

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "trajectory_parity.py"
STEPS = 30
# (final parameters, loss of every step, final EMA of the parameters or None)
Trajectory = tuple[dict[str, np.ndarray], np.ndarray, dict[str, np.ndarray] | None]


def both_runs(model_config: ModelConfig, dtype: str, run: TrajectoryConfig, torch_run: TrajectoryConfig | None = None):
    """(initial parameters, NumPy trajectory, torch trajectory), both from the same start (drawn
    with ``run.seed``) on the same batches and dropout masks; ``torch_run`` replaces ``run`` on the
    torch side only."""
    params = trajectory.initial_params(model_config, run.seed, dtype)
    batches = trajectory.trainer_batches(model_config, run)
    masks = numpy_trajectory.make_dropout_masks(model_config, run)
    numpy_run = numpy_trajectory.train(params, model_config, run, batches, masks)
    return params, numpy_run, trajectory.train(params, model_config, torch_run or run, batches, masks)


def param_mismatches(params: dict, reference: dict, tol: float, quantity: str = "param") -> list[Mismatch]:
    """The tensors of ``params`` off ``reference`` by more than ``tol`` relative in the L2 norm,
    ``||p - ref|| > tol ||ref||`` (norm-wise: an entry near 0 may differ by more than ``tol``
    relative while its tensor agrees, docs/trajectory_parity.md), and any key, shape or dtype
    that differs.

    The norm-wise test is applied to the tensors that differ entrywise at ``rtol=tol``: when every
    |p_i - ref_i| <= tol |ref_i|, the norm-wise bound holds, so no tensor beyond it is missed."""
    found = []
    for m in mismatches(params, reference, quantity, rtol=tol, atol=0.0):
        if m.kind != "value":
            found.append(m)
            continue
        got, expected = m.got_array.astype(np.float64), m.expected_array.astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):  # an all-zero reference: inf
            rel = np.linalg.norm(got - expected) / np.linalg.norm(expected)
        if not rel <= tol:  # NaN and inf included
            found.append(replace(m, quantity=f"{m.quantity} (relative L2 difference {rel:.3g})"))
    return found


def run_mismatches(numpy_run: Trajectory, torch_run: Trajectory, tol: float) -> list[Mismatch]:
    """Where the NumPy trajectory leaves the torch one by more than ``tol``: a step's loss off by
    more than ``tol`` relative, or a final parameter tensor or EMA tensor (``param_mismatches``)."""
    (np_params, np_losses, np_ema), (torch_params, torch_losses, torch_ema) = numpy_run, torch_run
    if (np_ema is None) != (torch_ema is None):
        raise AssertionError(f"one engine kept an EMA and the other not: {np_ema is None=}, {torch_ema is None=}")
    found = mismatches(np_losses, torch_losses, "loss", rtol=tol, atol=0.0)
    found += param_mismatches(np_params, torch_params, tol)
    return found + ([] if torch_ema is None else param_mismatches(np_ema, torch_ema, tol, "ema"))


@pytest.mark.parametrize("rows", [1, 4], ids=["windows", "sequence-rows"])
@pytest.mark.parametrize("dropout", [0.0, 0.2], ids=["no-dropout", "dropout"])
@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_numpy_and_torch_runs_agree(dtype, optimizer, dropout, rows):
    run = TrajectoryConfig(optimizer=optimizer, steps=STEPS, warmup_steps=3, seed=7, targets_per_row=rows)
    params, numpy_run, torch_run = both_runs(model_config_named("small", dropout), dtype, run)
    found = run_mismatches(numpy_run, torch_run, tolerance(dtype, STEPS, optimizer))
    if found:
        raise AssertionError("\n".join(map(str, found)))
    # The parameters must really move, far beyond the tolerance, or agreeing would prove little
    # (the slowest case, SGD on sequence rows with dropout, moves them 5 %).
    assert trajectory.global_rel_change(torch_run[0], params) > 0.02


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_one_percent_lr_difference_exceeds_the_tolerance(dtype, optimizer):
    """The tolerances are not so loose that a real difference passes: a 1 % larger lr on the
    torch side, 10 steps, must exceed them (measured: ~1e-2, against 2e-3 for float32 AdamW)."""
    run = TrajectoryConfig(optimizer=optimizer, steps=10, warmup_steps=1)
    faster = replace(run, lr=run.lr * 1.01)
    _, (np_params, np_losses, _), (torch_params, torch_losses, _) = both_runs(
        model_config_named("small"), dtype, run, faster
    )
    # Some tensor beyond twice the tolerance (norm-wise), and some step's loss beyond 1e-5 relative.
    assert param_mismatches(np_params, torch_params, 2 * tolerance(dtype, 10, optimizer))
    assert mismatches(np_losses, torch_losses, "loss", rtol=1e-5, atol=0.0)


EMA_RUN = TrajectoryConfig(steps=STEPS, warmup_steps=3, seed=7, targets_per_row=4, ema_decay=0.9)


def test_runs_with_an_ema_of_the_weights_agree():
    """The trainer's ``AveragedModel`` and ``numpy_ref.optim.EMA``, updated after every step of the
    two runs, end with the same average (float64, AdamW, sequence rows, dropout)."""
    params, numpy_run, torch_run = both_runs(model_config_named("small", 0.2), "float64", EMA_RUN)
    found = run_mismatches(numpy_run, torch_run, tolerance("float64", STEPS, "adamw"))
    if found:
        raise AssertionError("\n".join(map(str, found)))
    # The average trails the final weights by far more than the tolerance: comparing it is a test.
    assert trajectory.global_rel_change(torch_run[2], torch_run[0]) > 1e-3
    assert trajectory.global_rel_change(torch_run[0], params) > 0.02


def test_a_numpy_ema_weighing_by_decay_instead_of_one_minus_decay_fails():
    """A NumPy EMA of decay 0.1 lerps by 0.9, what a torch EMA of decay 0.9 would lerp by if the
    NumPy twin had ``decay`` where ``1 - decay`` belongs: the averages part, while the losses and
    weights still agree (the average never feeds back into training)."""
    swapped = replace(EMA_RUN, ema_decay=1 - EMA_RUN.ema_decay)
    _, numpy_run, torch_run = both_runs(model_config_named("small"), "float64", swapped, EMA_RUN)
    found = run_mismatches(numpy_run, torch_run, tolerance("float64", STEPS, "adamw"))
    assert found and all(m.quantity.startswith("ema") for m in found), found


def test_numpy_loop_computes_in_float32_when_given_float32():
    """A silent upcast would make float32 parity meaningless (and hide float32-only problems)."""
    model_config = model_config_named("small", dropout=0.2)
    run = TrajectoryConfig(steps=2, warmup_steps=1)
    params = trajectory.initial_params(model_config, 0, "float32")
    final, losses, ema = numpy_trajectory.train(
        params,
        model_config,
        run,
        trajectory.trainer_batches(model_config, run),
        numpy_trajectory.make_dropout_masks(model_config, run),
    )
    assert losses.dtype == np.float32 and ema is None
    assert {v.dtype for v in final.values()} == {np.dtype(np.float32)}


def test_non_finite_losses_count_as_infinitely_different():
    assert trajectory.loss_max_rel_diff(np.array([1.0, np.nan]), np.array([1.0, 2.0])) == float("inf")
    assert trajectory.param_rel_diffs({"w": np.array([np.inf])}, {"w": np.array([1.0])}) == {"w": float("inf")}


def test_inputs_are_deterministic_and_masks_have_the_layer_shapes():
    model_config = model_config_named("small", dropout=0.5)
    run = TrajectoryConfig(steps=3, batch_size=5, warmup_steps=0, seed=3)
    first, second = trajectory.trainer_batches(model_config, run), trajectory.trainer_batches(model_config, run)
    for (x1, y1), (x2, y2) in zip(first, second):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    assert first[0][0].shape == (5, 8) and first[0][1].shape == (5,)
    masks = numpy_trajectory.make_dropout_masks(model_config, run)
    assert {name: m.shape for name, m in masks[0].items()} == {
        "hidden.0": (5, 4, 16),
        "hidden.1": (5, 2, 16),
        "hidden.2": (5, 1, 16),
        "blocks.0": (5, 16),
    }
    assert 0.3 < np.mean(masks[0]["hidden.0"]) < 0.7
    assert numpy_trajectory.make_dropout_masks(model_config_named("small", dropout=0.0), run) == [{}, {}, {}]


def test_sequence_rows_and_their_masks_have_the_sequence_forwards_shapes():
    """Rows of P targets: x (B, T + P - 1), y (B, P) from the trainer's sampler, and one mask per
    hidden layer shaped like that layer's output in the sequence forward (each level shorter by
    (g - 1) times its dilation)."""
    model_config = model_config_named("small", dropout=0.5)
    run = TrajectoryConfig(steps=2, batch_size=3, warmup_steps=0, targets_per_row=5)
    (x, y), _ = trajectory.trainer_batches(model_config, run)
    assert x.shape == (3, 8 + 5 - 1) and y.shape == (3, 5)
    np.testing.assert_array_equal(x[:, 8:], y[:, :-1])  # the targets are the ids after each context
    params = trajectory.initial_params(model_config, 0, "float64")
    _, _, cache = neural_lm_sequence_forward(params, x, model_config)
    shapes = {name: shape for name, shape in layer_shapes(cache) if name not in ("embedding", "output")}
    masks = numpy_trajectory.make_dropout_masks(model_config, run)[0]
    assert {name: m.shape for name, m in masks.items()} == shapes


def test_the_synthetic_text_is_a_learnable_chain():
    ids = numpy_trajectory.synthetic_ids(10, 5000, seed=1)
    assert ids.dtype == np.int64 and ids.min() >= 0 and ids.max() < 10
    np.testing.assert_array_equal(ids, numpy_trajectory.synthetic_ids(10, 5000, seed=1))
    pairs = np.zeros((10, 10))
    np.add.at(pairs, (ids[:-1], ids[1:]), 1)
    rows = pairs / pairs.sum(axis=1, keepdims=True)
    entropy = -np.nansum(rows * np.log(np.where(rows > 0, rows, 1)), axis=1).mean()
    assert entropy < 0.7 * np.log(10)  # peaked successors: well below the uniform ln V


# ----------------------------------------------------------------------------- the default path
SHORT_DEFAULT = ["--steps", "12", "--hidden-dim", "24", "--json"]  # the recipe's path, smaller and shorter


def test_the_default_path_shortened_passes_and_says_what_it_ran(capsys):
    code = main(SHORT_DEFAULT)
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["passed"] is True, report
    assert (report["config"], report["targets_per_row"], report["fused"], report["dropout"]) == (
        "default",
        64,
        True,
        0.1,
    )
    assert report["run"]["batch_size"] == 8 and report["model"]["fusion"] == [2, 2, 2, 2]
    assert report["loss_max_rel_diff"] <= 1e-10 and report["param_max_rel_diff"] <= 1e-10


def test_the_window_path_stays_behind_a_flag(capsys):
    assert main([*SHORT_DEFAULT, "--targets-per-row", "1", "--no-fused-optimizer"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["targets_per_row"], report["fused"]) == (1, False)


def short_default_report() -> trajectory.TrajectoryReport:
    """The default path as ``SHORT_DEFAULT`` runs it, through ``run_parity``."""
    run = trajectory.run_of(TrainConfig(), 12)
    return trajectory.run_parity(model_config_named("default", hidden_dim=24), "float64", run)


def test_a_wrong_bias_correction_in_the_numpy_adamw_fails_the_default_path(monkeypatch):
    """From its second step the mutated AdamW treats every moment as long warmed up (bias
    corrections 1 - beta^t taken at t = 1e9): the runs part at once."""
    original = optim.AdamW._update

    def without_bias_correction(self, param, grad, weight_decay, state):
        if state:
            state["step"] = 10**9 - 1
        original(self, param, grad, weight_decay, state)

    monkeypatch.setattr(optim.AdamW, "_update", without_bias_correction)
    report = short_default_report()
    assert not report.passed and report.param_max_rel_diff > 1e-3


def test_numpy_rows_with_targets_shifted_by_one_fail_the_default_path(monkeypatch):
    original = numpy_trajectory.train_step

    def shifted(params, optimizer, model_config, x, y, *args, **kwargs):
        return original(params, optimizer, model_config, x, np.roll(y, 1, axis=-1), *args, **kwargs)

    monkeypatch.setattr(numpy_trajectory, "train_step", shifted)
    report = short_default_report()
    assert not report.passed and report.loss_max_rel_diff > 1e-3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"optimizer": "adam"}, "optimizer"),
        ({"steps": 0}, "steps"),
        ({"steps": 5, "warmup_steps": 6}, "warmup_steps"),
        ({"betas": (1.0, 0.99)}, r"betas\[0\]"),
        ({"grad_clip": -1.0}, "grad_clip"),
        ({"seed": -1}, "seed"),
        ({"ema_decay": 1.0}, "ema_decay"),
        ({"ema_decay": -0.5}, "ema_decay"),
    ],
)
def test_bad_run_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrajectoryConfig(**kwargs)


def test_numpy_loop_needs_one_masks_dict_per_batch():
    model_config = model_config_named("small")
    run = TrajectoryConfig(steps=2, warmup_steps=1)
    params = trajectory.initial_params(model_config, 0, "float64")
    with pytest.raises(ValueError, match="masks"):
        numpy_trajectory.train(params, model_config, run, trajectory.trainer_batches(model_config, run), [{}])


def test_main_returns_1_when_the_tolerance_is_exceeded(capsys):
    code = main(["--steps", "5", "--config", "small", "--tolerance", "1e-300", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 1 and report["passed"] is False
    assert report["param_max_rel_diff"] > 1e-300


def test_main_passes_and_prints_json(capsys):
    code = main(["--steps", "5", "--config", "small", "--optimizer", "sgd", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["passed"] is True
    assert report["steps"] == 5 and report["dtype"] == "float64" and report["config"] == "small"
    assert report["loss_max_rel_diff"] <= 1e-10 and report["param_max_rel_diff"] <= 1e-10
    # The recipe's EMA of the weights is part of the default path, compared like the weights.
    assert report["ema_decay"] == TrainConfig().ema_decay > 0 and report["ema_max_rel_diff"] <= 1e-10
    code = main(["--steps", "5", "--config", "small", "--ema-decay", "0", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["ema_decay"] == 0.0 and "ema_max_rel_diff" not in report  # nothing to report


def test_main_compares_the_ema_when_asked(capsys):
    code = main(["--steps", "5", "--config", "small", "--ema-decay", "0.9", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["passed"] is True
    assert report["ema_decay"] == 0.9 and report["run"]["ema_decay"] == 0.9
    assert 0.0 <= report["ema_max_rel_diff"] <= 1e-10
    assert main(["--steps", "5", "--config", "small", "--ema-decay", "0.9"]) == 0
    assert "EMA 0.9," in capsys.readouterr().out


def test_help_exits_0(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0 and "--optimizer" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--steps", "0"], "--steps"),
        (["--seed", "-1"], "--seed"),
        (["--dtype", "float16"], "--dtype"),
        (["--dropout", "1.0"], "--dropout"),
        (["--optimizer", "adam"], "--optimizer"),
        (["--tolerance", "nan"], "--tolerance"),
        (["--ema-decay", "1"], "--ema-decay"),
    ],
)
def test_bad_values_exit_2_with_one_line(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.count("\n") == 1 and message in err


def test_script_exit_code_is_mains():
    """The script file itself (one subprocess: importing torch costs seconds): exit 1 beyond tolerance."""
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--steps", "2", "--config", "small", "--tolerance", "1e-300", "--json"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    assert json.loads(result.stdout)["passed"] is False
