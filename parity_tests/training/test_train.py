"""torch_lm/training (trainer, config, step, tensorboard_log): configuration, schedule, the
optimiser, the docs/DESIGN.md §4 TensorBoard contract read back from the event files,
reproducibility, exact resume after SIGINT (also with an EMA of the weights, whose average the run
is evaluated and saved with), and stopping on a non-finite loss."""

from __future__ import annotations

import math
import shutil
import signal
from dataclasses import replace

import pytest
import torch
from conftest import synthetic_text
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from numpy_ref.config import ModelConfig
from torch_lm.neural_lm import NeuralLM
from torch_lm.training import trainer as trainer_module
from torch_lm.training.batches import split_ids
from torch_lm.training.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
from torch_lm.training.config import TrainConfig, resolve_device
from torch_lm.training.heldout import heldout_loss
from torch_lm.training.signals import NonFiniteLossError, TrainingInterrupted
from torch_lm.training.step import SequenceForward, TrainingStep, make_optimizer, parameter_groups
from torch_lm.training.tensorboard_log import markdown_code_block
from torch_lm.training.trainer import train
from torch_lm.training.vocab import CharVocab

TEXT = synthetic_text(4000)
VOCAB = CharVocab.from_text(TEXT)
MODEL = ModelConfig(
    vocab_size=len(VOCAB), context=4, embed_dim=8, hidden_dim=32, fusion=(2, 2), n_blocks=1, norm=True, dropout=0.1
)


def run_config(run_dir, **overrides) -> TrainConfig:
    """40 steps of 32 windows; log every 5, evaluate and checkpoint every 10; no EMA."""
    settings = dict(
        batch_size=32,
        targets_per_row=1,
        lr=1e-2,
        min_lr=1e-3,
        warmup_steps=3,
        max_steps=40,
        eval_interval=10,
        log_interval=5,
        eval_batch_size=1024,
        sample_length=40,
        seed=0,
        device="cpu",
        run_dir=str(run_dir),
        ema_decay=0.0,  # the recipe's average of the weights only where a test asks for it
    )
    return TrainConfig(**(settings | overrides))


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    """One uninterrupted 40-step run, shared by the tests that only read its outputs."""
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    summary = train(MODEL, run_config(run_dir), TEXT)
    return run_dir, summary


def read_events(run_dir) -> EventAccumulator:
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "histograms": 0, "tensors": 0})
    events.Reload()
    return events


def scalar_values(events: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in events.Scalars(tag)]


def params_of(path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


# ----------------------------------------------------------------------------- configuration
@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(lr=-1.0), "lr must be a finite number > 0"),
        (dict(lr=0.0), "lr must be a finite number > 0"),
        (dict(lr=1e-3, min_lr=1e-2), "min_lr must not exceed lr"),
        (dict(batch_size=0), "batch_size must be a positive integer"),
        (dict(max_steps=2.5), "max_steps must be a positive integer"),
        (dict(warmup_steps=-1), "warmup_steps must be an integer >= 0"),
        (dict(seed=-1), "seed must be an integer >= 0"),
        (dict(checkpoint_interval=-1), "checkpoint_interval must be an integer >= 0"),
        (dict(weight_decay=-0.1), "weight_decay must be a finite number >= 0"),
        (dict(grad_clip=float("nan")), "grad_clip must be a finite number >= 0"),
        (dict(time_budget=-5.0), "time_budget must be a finite number >= 0"),
        (dict(betas=(0.9, 1.0)), "betas must be two numbers in"),
        (dict(betas=(0.9,)), "betas must be two numbers in"),
        (dict(device="tpu"), "device must be auto, cpu, cuda or cuda:N"),
        (dict(device="cuda:x"), "device must be auto, cpu, cuda or cuda:N"),
        (dict(dtype="float16"), "dtype must be one of"),
        (dict(run_dir=""), "run_dir must be a non-empty path"),
        (dict(fused_optimizer="yes"), "fused_optimizer must be True or False"),
        (dict(compile=1), "compile must be True or False"),
        (dict(ema_decay=1.0), r"ema_decay must be a probability in \[0, 1\)"),
        (dict(ema_decay=-0.1), r"ema_decay must be a probability in \[0, 1\)"),
    ],
)
def test_bad_train_config_values_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**overrides)


def test_train_config_round_trips_through_a_plain_dict():
    config = TrainConfig(betas=(0.8, 0.95), lr=1e-3, device="cuda:1")
    plain = config.to_dict()
    assert plain["betas"] == [0.8, 0.95] and TrainConfig.from_dict(plain) == config
    with pytest.raises(ValueError, match="unknown keys"):
        TrainConfig.from_dict({**plain, "learning_rate": 1.0})


def test_a_config_saved_before_the_ema_option_loads_without_an_ema():
    plain = {k: v for k, v in TrainConfig(ema_decay=0.99).to_dict().items() if k != "ema_decay"}
    assert TrainConfig.from_dict(plain).ema_decay == 0.0


def test_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="must be auto, cpu, cuda or cuda:N"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda:0")


def test_lr_schedule_warms_up_then_decays_to_min_lr():
    config = TrainConfig(lr=1.0, min_lr=0.1, warmup_steps=4, max_steps=40)
    lrs = [config.lr_at(step) for step in range(42)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert lrs[4] == 1.0  # the cosine starts at the peak
    assert all(a > b for a, b in zip(lrs[4:40], lrs[5:40]))
    assert lrs[39] == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 35 / 36)))
    assert lrs[40] == lrs[41] == 0.1
    assert replace(config, warmup_steps=0).lr_at(0) == 1.0


def test_a_run_shorter_than_its_warmup_still_reaches_its_learning_rate():
    """--max-steps 60 with the default 200 warm-up steps: the warm-up shrinks to a tenth of the run
    (6 steps), so the run spends most of its steps near its learning rate instead of climbing."""
    config = TrainConfig(max_steps=60)
    lrs = [config.lr_at(step) for step in range(60)]
    assert lrs[5] == config.lr and lrs[4] < config.lr
    assert lrs[6] > lrs[30] > lrs[59] >= config.min_lr  # then the cosine, over the rest of the run
    assert TrainConfig(max_steps=18000).lr_at(199) == config.lr  # long runs keep their warm-up
    assert TrainConfig(max_steps=9).lr_at(0) == config.lr  # under 10 steps: no warm-up


def test_a_short_run_on_a_cycle_learns_it(tmp_path):
    """A 480-character "abcabc..." cycle, 60 default steps: the model must have learnt the cycle."""
    text = "abc" * 160
    result = train(
        ModelConfig(vocab_size=3), TrainConfig(max_steps=60, device="cpu", run_dir=str(tmp_path), sample_length=0), text
    )
    assert result["train_loss"] < 0.3 and result["val_ppl"] < 1.01


def test_weight_decay_applies_to_linear_weights_only():
    model = NeuralLM(MODEL)
    names = {id(p): n for n, p in model.named_parameters()}
    decay, no_decay = parameter_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert sorted(names[id(p)] for p in decay["params"]) == [
        "blocks.0.linear.weight",
        "hidden.0.linear.weight",
        "hidden.1.linear.weight",
        "output.weight",
    ]
    assert len(decay["params"]) + len(no_decay["params"]) == len(names)


def test_make_optimizer_is_fused_unless_told_otherwise_or_unavailable(monkeypatch):
    model, config = NeuralLM(MODEL), TrainConfig()
    fused = make_optimizer(model, config.optimizer_settings())
    assert fused.defaults["fused"] is True  # torch >= 2.4 has a CPU kernel
    assert [g["weight_decay"] for g in fused.param_groups] == [0.1, 0.0]
    assert not make_optimizer(model, replace(config, fused_optimizer=False).optimizer_settings()).defaults["fused"]

    real_adamw = torch.optim.AdamW

    def adamw_without_fused(params, fused=None, **kwargs):  # what a CPU torch 2.3 says
        if fused:
            raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of supported devices")
        return real_adamw(params, **kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", adamw_without_fused)
    assert not make_optimizer(model, config.optimizer_settings()).defaults["fused"]


@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-13), (torch.float32, 1e-5)])
def test_fused_adamw_takes_the_op_by_op_steps_to_rounding(dtype, rtol):
    # The same 20 steps (fixed gradients, lr changing as in training) through both kernels.
    models = {fused: NeuralLM(MODEL).to(dtype) for fused in (True, False)}
    models[False].load_state_dict(models[True].state_dict())
    start = {name: value.clone() for name, value in models[True].state_dict().items()}
    config = TrainConfig(lr=1e-2, max_steps=12000)
    optimizers = {
        f: make_optimizer(m, replace(config, fused_optimizer=f).optimizer_settings()) for f, m in models.items()
    }
    generator = torch.Generator().manual_seed(0)
    for step in range(20):
        grads = [torch.randn(p.shape, generator=generator, dtype=dtype) for p in models[True].parameters()]
        for fused, model in models.items():
            for p, g in zip(model.parameters(), grads):
                p.grad = g.clone()
            for group in optimizers[fused].param_groups:
                group["lr"] = config.lr_at(step)
            optimizers[fused].step()
    for (name, a), b in zip(models[True].state_dict().items(), models[False].state_dict().values()):
        assert not torch.equal(a, start[name])  # the steps moved it
        torch.testing.assert_close(a, b, rtol=rtol, atol=rtol * a.abs().max().item())


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_compiled_training_follows_the_eager_run(tmp_path):
    # --compile: same masks (the NumPy pieces run eagerly inside the compiled forward), the same
    # losses up to the compiler's different rounding.
    settings = dict(max_steps=10, eval_interval=10, log_interval=5)
    eager = train(MODEL, run_config(tmp_path / "eager", **settings), TEXT)
    compiled = train(MODEL, run_config(tmp_path / "compiled", compile=True, **settings), TEXT)
    assert [step for step, _ in compiled["train_history"]] == [5, 10]
    for (_, a), (_, b) in zip(
        eager["train_history"] + eager["val_history"], compiled["train_history"] + compiled["val_history"]
    ):
        assert a == pytest.approx(b, rel=1e-4)


# ----------------------------------------------------------------------------- the TensorBoard contract
def test_a_short_run_writes_every_tag_of_the_contract(straight_run):
    run_dir, _ = straight_run
    events = read_events(run_dir)
    model = NeuralLM(MODEL)
    hidden = [name for name, _ in model.hidden_layers()]
    expected = {
        "loss/train",
        "perplexity/train",
        "loss/val",
        "perplexity/val",
        "lr",
        "throughput/tokens_per_sec",
        "grad_norm/total",
    }
    expected |= {f"grad_norm/{layer}" for layer in model.layer_names()}
    expected |= {
        f"activations/{layer}/{stat}" for layer in hidden for stat in ("mean", "std", "frac_saturated_or_dead")
    }
    assert set(events.Tags()["scalars"]) == expected
    for tag in expected - {"loss/val", "perplexity/val"}:
        assert [step for step, _ in scalar_values(events, tag)] == list(range(5, 41, 5)), tag
    assert [step for step, _ in scalar_values(events, "loss/val")] == [10, 20, 30, 40]

    histograms = {f"{kind}/{name}" for name, _ in model.named_parameters() for kind in ("weights", "gradients")}
    assert set(events.Tags()["histograms"]) == histograms
    assert [e.step for e in events.Histograms("gradients/output.weight")] == [10, 20, 30, 40]

    samples = events.Tensors("samples/text_summary")
    assert [e.step for e in samples] == [10, 20, 30, 40]
    text = samples[-1].tensor_proto.string_val[0].decode()
    assert text.startswith("```\n") and text.endswith("\n```") and len(text) == 40 + 1 + 8
    assert set(text[4:-4]) <= set(VOCAB.to_list())


def test_hparams_link_the_configs_to_the_final_val_metrics(straight_run):
    run_dir, _ = straight_run
    content = read_events(run_dir).PluginTagToContent("hparams")
    assert set(content) == {"_hparams_/experiment", "_hparams_/session_start_info", "_hparams_/session_end_info"}
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert {m.name.tag for m in experiment.metric_infos} == {"loss/val", "perplexity/val"}
    hparam_names = {h.name for h in experiment.hparam_infos}
    assert {f"model.{k}" for k in MODEL.to_dict()} | {f"train.{k}" for k in TrainConfig().to_dict()} == hparam_names
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    values = start.session_start_info.hparams
    assert values["model.hidden_dim"].number_value == 32
    assert values["model.fusion"].string_value == "[2, 2]"
    assert values["train.lr"].number_value == pytest.approx(1e-2)


def test_projector_embedding_has_readable_labels(straight_run):
    run_dir, _ = straight_run
    config = (run_dir / "projector_config.pbtxt").read_text()
    assert 'tensor_name: "char_embedding:00040"' in config
    folder = run_dir / "00040" / "char_embedding"
    labels = (folder / "metadata.tsv").read_text().splitlines()
    assert labels == VOCAB.labels() and "<space>" in labels and "<newline>" in labels
    vectors = [[float(v) for v in line.split("\t")] for line in (folder / "tensors.tsv").read_text().splitlines()]
    weights = params_of(run_dir / "last.pt")["embedding.weight"]
    torch.testing.assert_close(torch.tensor(vectors), weights, rtol=1e-5, atol=1e-6)


def test_logged_perplexity_is_exp_of_the_logged_loss(straight_run):
    run_dir, summary = straight_run
    events = read_events(run_dir)
    for split in ("train", "val"):
        losses = scalar_values(events, f"loss/{split}")
        perplexities = scalar_values(events, f"perplexity/{split}")
        assert [s for s, _ in losses] == [s for s, _ in perplexities]
        for (_, loss), (_, ppl) in zip(losses, perplexities):
            assert ppl == pytest.approx(math.exp(loss), rel=1e-6)
    # The event file holds the summary's numbers (float32-rounded).
    assert [v for _, v in scalar_values(events, "loss/train")] == pytest.approx(
        [loss for _, loss in summary["train_history"]], rel=1e-6
    )
    assert summary["val_ppl"] == pytest.approx(math.exp(summary["val_loss"]), rel=1e-12)


def test_the_loss_goes_down(straight_run):
    _, summary = straight_run
    train_losses = [loss for _, loss in summary["train_history"]]
    assert train_losses[0] > train_losses[-1] + 0.4
    assert summary["val_loss"] < math.log(len(VOCAB)) - 0.4  # well below a uniform guess
    assert summary["best_val_loss"] == min(loss for _, loss in summary["val_history"])


def test_gradient_norms_are_measured_before_clipping(tmp_path):
    # With a tiny clip threshold every step is clipped: the logged norms must still exceed it.
    summary_dir = tmp_path / "clip"
    train(MODEL, run_config(summary_dir, grad_clip=1e-3, max_steps=5, eval_interval=5), TEXT)
    norms = scalar_values(read_events(summary_dir), "grad_norm/total")
    assert norms and all(value > 1e-2 for _, value in norms)


def test_markdown_code_block_cannot_be_closed_by_the_text():
    assert markdown_code_block("abc") == "```\nabc\n```"
    assert markdown_code_block("a ``` b").startswith("````\n")


# ----------------------------------------------------------------------------- checkpoints of a run
def test_run_checkpoints_load_with_weights_only(straight_run):
    run_dir, summary = straight_run
    for name in ("last.pt", "best.pt"):
        raw = torch.load(run_dir / name, weights_only=True)
        assert raw["vocab"] == VOCAB.to_list() and raw["model_config"] == MODEL.to_dict()
    last = load_checkpoint(run_dir / "last.pt")
    assert last["step"] == 40 and last["best_val_loss"] == summary["best_val_loss"]
    best_step = min(summary["val_history"], key=lambda item: item[1])[0]
    assert load_checkpoint(run_dir / "best.pt")["step"] == best_step
    # Without an EMA a checkpoint is what it always was: none of the EMA's keys.
    assert not {"training_weights", "ema_updates"} & set(last)
    assert summary["ema_decay"] == 0.0 and last["train_config"]["ema_decay"] == 0.0


def test_seeded_cpu_runs_are_reproducible(straight_run, tmp_path):
    run_dir, summary = straight_run
    again = train(MODEL, run_config(tmp_path / "again"), TEXT)
    assert again["train_history"] == summary["train_history"]
    assert again["val_history"] == summary["val_history"]
    for name, value in params_of(run_dir / "last.pt").items():
        assert torch.equal(params_of(tmp_path / "again" / "last.pt")[name], value), name


# ----------------------------------------------------------------------------- SIGINT and resume
def interrupt_after(monkeypatch, stop_step: int, signum: int = signal.SIGINT) -> None:
    """Deliver a real ``signum`` to this process right after optimizer step ``stop_step`` (1-based)."""
    original = TrainingStep.__call__

    def step_then_maybe_interrupt(self, step, *args, **kwargs):
        loss = original(self, step, *args, **kwargs)
        if step + 1 == stop_step:
            signal.raise_signal(signum)
        return loss

    monkeypatch.setattr(TrainingStep, "__call__", step_then_maybe_interrupt)


def test_resume_after_sigint_gives_the_same_numbers_as_a_straight_run(straight_run, tmp_path, monkeypatch):
    straight_dir, straight = straight_run
    run_dir = tmp_path / "resumed"
    handler_before = signal.getsignal(signal.SIGINT)
    interrupt_after(monkeypatch, 13)  # mid log interval (5) and mid eval interval (10)
    with pytest.raises(TrainingInterrupted, match="interrupted at step 13") as stop:
        train(MODEL, run_config(run_dir), TEXT)
    monkeypatch.undo()
    assert stop.value.step == 13 and load_checkpoint(run_dir / "last.pt")["step"] == 13
    assert signal.getsignal(signal.SIGINT) is handler_before  # the training's handler is gone

    resumed = train(MODEL, run_config(run_dir, resume=True), TEXT)
    assert resumed["steps"] == 40
    assert resumed["train_history"] == [item for item in straight["train_history"] if item[0] > 13]
    assert resumed["val_history"] == [item for item in straight["val_history"] if item[0] > 13]
    assert resumed["best_val_loss"] == straight["best_val_loss"]
    final, reference = load_checkpoint(run_dir / "last.pt"), load_checkpoint(straight_dir / "last.pt")
    for name, value in reference["model"].items():
        assert torch.equal(final["model"][name], value), name
    for index, state in reference["optimizer"]["state"].items():
        assert torch.equal(final["optimizer"]["state"][index]["exp_avg_sq"], state["exp_avg_sq"])
    assert torch.equal(final["rng"]["dropout"], reference["rng"]["dropout"])
    # TensorBoard shows one continuous curve equal to the straight run's.
    assert scalar_values(read_events(run_dir), "loss/train") == scalar_values(read_events(straight_dir), "loss/train")


def test_sequence_rows_train_and_resume_exactly(tmp_path, monkeypatch):
    """Rows of 4 targets: the running loss counts every target, the loss goes down, and a run
    interrupted mid-interval resumes to the uninterrupted numbers (batches are still a pure
    function of (seed, step))."""
    config = dict(targets_per_row=4, batch_size=8)
    straight = train(MODEL, run_config(tmp_path / "straight", **config), TEXT)
    interrupt_after(monkeypatch, 13)
    with pytest.raises(TrainingInterrupted):
        train(MODEL, run_config(tmp_path / "resumed", **config), TEXT)
    monkeypatch.undo()
    resumed = train(MODEL, run_config(tmp_path / "resumed", resume=True, **config), TEXT)
    assert resumed["train_history"] == [item for item in straight["train_history"] if item[0] > 13]
    assert resumed["val_history"] == [item for item in straight["val_history"] if item[0] > 13]
    first, last = straight["train_history"][0][1], straight["train_history"][-1][1]
    assert last < first - 0.3
    final, reference = (params_of(tmp_path / name / "last.pt") for name in ("resumed", "straight"))
    assert all(torch.equal(final[name], value) for name, value in reference.items())


# ----------------------------------------------------------------------------- the EMA of the weights
EMA_DECAY = 0.9


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory):
    """One uninterrupted 40-step run with an EMA of the weights."""
    run_dir = tmp_path_factory.mktemp("ema") / "run"
    summary = train(MODEL, run_config(run_dir, ema_decay=EMA_DECAY), TEXT)
    return run_dir, summary


def test_an_ema_run_is_evaluated_sampled_and_saved_with_the_average(ema_run):
    """The figures, ``best.pt`` and the checkpoints' ``model`` are the average's; the trained
    weights are saved beside it with the update count."""
    run_dir, summary = ema_run
    assert summary["ema_decay"] == EMA_DECAY
    last = load_checkpoint(run_dir / "last.pt")
    assert last["ema_updates"] == 40 and last["train_config"]["ema_decay"] == EMA_DECAY
    assert any(not torch.equal(last["model"][k], v) for k, v in last["training_weights"].items())
    train_ids, val_ids = split_ids(VOCAB.encode(TEXT))
    averaged, _ = model_from_checkpoint(run_dir / "last.pt")  # what evaluate.py and generate.py load
    assert summary["val_loss"] == pytest.approx(
        heldout_loss(averaged, train_ids, val_ids, MODEL.context).loss, rel=1e-6
    )
    trained = NeuralLM(MODEL)
    trained.load_state_dict(last["training_weights"])
    trained_loss = heldout_loss(trained.eval(), train_ids, val_ids, MODEL.context).loss
    assert abs(trained_loss - summary["val_loss"]) > 1e-4  # the average, not the trained weights
    best_step = min(summary["val_history"], key=lambda item: item[1])[0]
    best = load_checkpoint(run_dir / "best.pt")
    assert best["step"] == best_step and best["ema_updates"] == best_step
    values = plugin_data_pb2.HParamsPluginData.FromString(
        read_events(run_dir).PluginTagToContent("hparams")["_hparams_/session_start_info"]
    ).session_start_info.hparams
    assert values["train.ema_decay"].number_value == pytest.approx(EMA_DECAY)


def test_the_ema_does_not_change_the_training(straight_run, ema_run):
    """The average is read, never trained: the train losses and trained weights are the run's
    without an EMA, bit for bit."""
    (straight_dir, straight), (ema_dir, averaged) = straight_run, ema_run
    assert averaged["train_history"] == straight["train_history"]
    trained, reference = load_checkpoint(ema_dir / "last.pt")["training_weights"], params_of(straight_dir / "last.pt")
    assert all(torch.equal(trained[k], v) for k, v in reference.items())


def test_resume_after_sigint_with_an_ema_gives_the_same_numbers_as_a_straight_run(ema_run, tmp_path, monkeypatch):
    straight_dir, straight = ema_run
    run_dir = tmp_path / "resumed"
    interrupt_after(monkeypatch, 13)  # mid log interval (5) and mid eval interval (10)
    with pytest.raises(TrainingInterrupted):
        train(MODEL, run_config(run_dir, ema_decay=EMA_DECAY), TEXT)
    monkeypatch.undo()
    assert load_checkpoint(run_dir / "last.pt")["ema_updates"] == 13
    resumed = train(MODEL, run_config(run_dir, resume=True, ema_decay=EMA_DECAY), TEXT)
    assert resumed["train_history"] == [item for item in straight["train_history"] if item[0] > 13]
    assert resumed["val_history"] == [item for item in straight["val_history"] if item[0] > 13]
    assert resumed["best_val_loss"] == straight["best_val_loss"]
    final, reference = load_checkpoint(run_dir / "last.pt"), load_checkpoint(straight_dir / "last.pt")
    assert final["ema_updates"] == reference["ema_updates"] == 40
    for key in ("model", "training_weights"):
        for name, value in reference[key].items():
            assert torch.equal(final[key][name], value), f"{key}[{name}]"


def test_switching_the_ema_on_or_off_at_a_resume_continues_the_training(straight_run, ema_run, tmp_path):
    """Resumed with an EMA from a checkpoint without one, or without from one with: both continue
    the same trained weights (the latter from ``training_weights``, not the average); a new
    average starts at the first step after the resume."""
    on, off = tmp_path / "on", tmp_path / "off"
    shutil.copytree(straight_run[0], on)
    shutil.copytree(ema_run[0], off)
    switched_on = train(MODEL, run_config(on, resume=True, max_steps=45, ema_decay=EMA_DECAY), TEXT)
    switched_off = train(MODEL, run_config(off, resume=True, max_steps=45), TEXT)
    assert switched_on["train_history"] == switched_off["train_history"]
    assert load_checkpoint(on / "last.pt")["ema_updates"] == 5
    assert not {"training_weights", "ema_updates"} & set(load_checkpoint(off / "last.pt"))


def test_a_run_that_holds_out_a_tail_is_evaluated_on_the_tail_and_never_on_val(tmp_path):
    tail = 300
    summary = train(MODEL, run_config(tmp_path, holdout_tail=tail), TEXT)
    assert summary["heldout"] == "tail" and summary["positions"] == tail
    train_ids, _ = split_ids(VOCAB.encode(TEXT))
    model, _ = model_from_checkpoint(tmp_path / "last.pt")
    expected = heldout_loss(model, train_ids[:-tail], train_ids[-tail:], MODEL.context)
    assert summary["val_loss"] == pytest.approx(expected.loss, rel=1e-6)
    tags = read_events(tmp_path).Tags()["scalars"]
    assert "loss/tail" in tags and "perplexity/tail" in tags and "loss/val" not in tags


def test_the_running_loss_weighs_every_target_of_a_row():
    model = NeuralLM(MODEL)
    step = TrainingStep(model, make_optimizer(model, TrainConfig().optimizer_settings()), lambda s: 1e-3, 1.0)
    step.forward = SequenceForward(model)
    x = torch.randint(len(VOCAB), (3, MODEL.context + 4))
    loss = step(0, x, torch.randint(len(VOCAB), (3, 5)), generator=torch.Generator().manual_seed(0))
    assert step.running.count == 15 and step.running.mean == pytest.approx(float(loss))


def test_sigterm_stops_and_saves_like_sigint(straight_run, tmp_path, monkeypatch):
    # What `kill`, a batch scheduler, `docker stop` or torchrun's agent send: the same clean stop.
    straight_dir, _ = straight_run
    run_dir = tmp_path / "terminated"
    handlers_before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    interrupt_after(monkeypatch, 7, signal.SIGTERM)
    with pytest.raises(TrainingInterrupted, match=r"interrupted \(SIGTERM\) at step 7; saved") as stop:
        train(MODEL, run_config(run_dir), TEXT)
    monkeypatch.undo()
    assert stop.value.signum == signal.SIGTERM
    assert {s: signal.getsignal(s) for s in handlers_before} == handlers_before
    resumed = train(MODEL, run_config(run_dir, resume=True), TEXT)
    assert resumed["steps"] == 40
    final, reference = load_checkpoint(run_dir / "last.pt"), load_checkpoint(straight_dir / "last.pt")
    for name, value in reference["model"].items():
        assert torch.equal(final["model"][name], value), name


def test_resume_refuses_other_data_or_another_model(straight_run, tmp_path):
    run_dir = tmp_path / "copy"
    shutil.copytree(straight_run[0], run_dir)
    other_text = TEXT.replace("q", "Q")
    with pytest.raises(CheckpointError, match=r"adds \['Q'\].*lacks \['q'\]"):
        train(MODEL, run_config(run_dir, resume=True, max_steps=50), other_text)
    with pytest.raises(CheckpointError, match="hidden_dim 32 vs 48"):
        train(replace(MODEL, hidden_dim=48), run_config(run_dir, resume=True, max_steps=50), TEXT)
    with pytest.raises(CheckpointError, match="--resume: no checkpoint at"):
        train(MODEL, run_config(tmp_path / "empty", resume=True), TEXT)


def test_a_fresh_run_refuses_to_overwrite_a_run_dir(straight_run):
    with pytest.raises(ValueError, match="already exists; pass --resume"):
        train(MODEL, run_config(straight_run[0]), TEXT)


def test_vocab_size_must_match_the_text(tmp_path):
    with pytest.raises(ValueError, match="vocab_size is 99 but the text has"):
        train(replace(MODEL, vocab_size=99), run_config(tmp_path / "run"), TEXT)


# ----------------------------------------------------------------------------- stopping
class NaNAfterStep12(NeuralLM):
    """A model whose training loss turns NaN from the 13th training forward on."""

    calls = 0

    def forward(self, idx, targets=None, **kwargs):
        logits, loss = super().forward(idx, targets, **kwargs)
        if self.training and torch.is_grad_enabled():
            type(self).calls += 1
            if type(self).calls >= 13:
                loss = loss * float("nan")
        return logits, loss


def test_a_non_finite_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(trainer_module, "NeuralLM", NaNAfterStep12)
    NaNAfterStep12.calls = 0
    run_dir = tmp_path / "nan"
    with pytest.raises(NonFiniteLossError, match=r"non-finite at step 13; stopped .*last.pt \(step 10\)"):
        train(MODEL, run_config(run_dir), TEXT)
    last = load_checkpoint(run_dir / "last.pt")
    assert last["step"] == 10
    assert all(torch.isfinite(value).all() for value in last["model"].values())


def test_time_budget_stops_early_and_still_evaluates(tmp_path):
    summary = train(MODEL, run_config(tmp_path / "budget", max_steps=10**6, eval_interval=10**6, time_budget=1.0), TEXT)
    assert summary["status"] == "time_budget" and 0 < summary["steps"] < 10**6
    assert summary["val_history"][-1][0] == summary["steps"]
    assert load_checkpoint(tmp_path / "budget" / "last.pt")["step"] == summary["steps"]
