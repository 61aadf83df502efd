"""torch_lm/training/sampling.py: the one sampling loop, through ``generate`` on a NeuralLM — reproducible
for a seed, the prompt kept, short prompts left-padded, greedy at a cold temperature or top-1, in eval
mode, the same draws from the incremental predictor as from the window forward; bad arguments refused.
(The count models of the reports sample through the same loop: ``parity_tests/reports/test_models.py``.)"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from numpy_ref.config import ModelConfig
from numpy_ref.neural_lm import OUTPUT_INIT_SCALE
from torch_lm.incremental import IncrementalLM
from torch_lm.neural_lm import PAD_ID, NeuralLM
from torch_lm.training.sampling import (
    IncrementalStepper,
    NumpySteps,
    draw,
    generate,
    incremental_predictor,
    sample_prompt,
)
from torch_lm.training.vocab import CharVocab


@pytest.fixture
def generator_model() -> NeuralLM:
    config = ModelConfig(vocab_size=11, context=4, embed_dim=5, hidden_dim=16, fusion=(2, 2), norm=False, dropout=0.0)
    model = NeuralLM(config)
    model.reset_parameters(torch.Generator().manual_seed(3))
    with torch.no_grad():
        model.output.weight.mul_(1 / OUTPUT_INIT_SCALE)  # a less flat model: greedy != sampled
    return model


def sample(model, prompt, n=20, seed=0, **kwargs):
    return generate(model, prompt, n, generator=torch.Generator().manual_seed(seed), **kwargs)


def test_generate_is_reproducible_in_range_and_keeps_the_prompt(generator_model):
    prompt = torch.tensor([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]])
    out = sample(generator_model, prompt)
    assert out.shape == (2, 25) and out.dtype == torch.long
    assert torch.equal(out[:, :5], prompt)
    assert out.min() >= 0 and out.max() < 11
    assert torch.equal(out, sample(generator_model, prompt))
    assert not torch.equal(out, sample(generator_model, prompt, seed=1))


def greedy(model, prompt, n):
    """Reference greedy decoding: argmax of the logits of the last `context` ids, n times."""
    seq = prompt
    for _ in range(n):
        seq = torch.cat([seq, model(seq[:, -model.config.context :])[0].argmax(-1, keepdim=True)], dim=1)
    return seq


@pytest.mark.parametrize("kwargs", [{"temperature": 1e-4}, {"top_k": 1}], ids=["cold", "top1"])
def test_cold_or_top1_sampling_is_greedy_argmax(generator_model, kwargs):
    prompt = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8], [0, 0, 9, 9]])
    with torch.no_grad():
        expected = greedy(generator_model, prompt, 20)
    assert torch.equal(sample(generator_model, prompt, **kwargs), expected)
    assert not torch.equal(sample(generator_model, prompt), expected)  # T = 1 does sample


def test_short_prompt_is_left_padded_with_pad_id(generator_model):
    short = torch.tensor([[3, 9]])
    padded = torch.tensor([[PAD_ID, PAD_ID, 3, 9]])
    assert torch.equal(sample(generator_model, short), sample(generator_model, padded)[:, 2:])
    assert sample(generator_model, torch.zeros(2, 0, dtype=torch.long)).shape == (2, 20)


@pytest.mark.parametrize("prompt_length", [0, 1, 4, 9])  # empty, shorter than, as long as and longer than the context
def test_the_incremental_predictor_draws_what_the_window_forward_draws(generator_model, prompt_length):
    """In float64 the two paths' probabilities agree to rounding (~1e-16), far below what moves a draw."""
    model = generator_model.double()
    prompt = torch.randint(0, 11, (3, prompt_length), generator=torch.Generator().manual_seed(prompt_length))
    for kwargs in ({}, {"temperature": 0.7, "top_k": 4}):
        incremental = sample(model, prompt, 40, seed=prompt_length, **kwargs)
        window = sample(model, prompt, 40, seed=prompt_length, incremental=False, **kwargs)
        assert torch.equal(incremental, window), kwargs


def test_a_cpu_model_steps_with_the_numpy_twin_and_draws_what_the_torch_twin_draws(generator_model):
    """float32/float64 on the CPU take NumPy's predictor (faster per step); bfloat16 the torch one;
    in float64 the two draw the same ids."""
    model = generator_model.double().eval()
    assert isinstance(incremental_predictor(model), NumpySteps)
    assert isinstance(incremental_predictor(NeuralLM(model.config).to(torch.bfloat16).eval()), IncrementalLM)
    prompt = torch.randint(0, 11, (2, 5), generator=torch.Generator().manual_seed(1))
    numpy_side = draw(IncrementalStepper(model), 11, prompt, 40, torch.Generator().manual_seed(2))
    torch_stepper = IncrementalStepper(model)
    torch_stepper.predictor = IncrementalLM(model)
    torch_side = draw(torch_stepper, 11, prompt, 40, torch.Generator().manual_seed(2))
    assert torch.equal(numpy_side, torch_side)


def test_generate_runs_in_eval_mode_and_restores_training(generator_model):
    model = NeuralLM(dataclasses.replace(generator_model.config, dropout=0.5))
    model.load_state_dict(generator_model.state_dict())
    model.train()
    prompt = torch.tensor([[1, 2, 3, 4]])
    assert torch.equal(sample(model, prompt, temperature=1e-4), sample(generator_model, prompt, temperature=1e-4))
    assert model.training


@pytest.mark.parametrize(
    "prompt, n, kwargs, message",
    [
        (torch.tensor([[1.0, 2.0]]), 3, {}, "prompt must hold integers"),
        (torch.tensor([1, 2]), 3, {}, "prompt must be 2-D"),
        (torch.tensor([[11, 1, 2, 3, 4, 5]]), 3, {}, r"prompt must lie in \[0, 11\)"),  # outside the last context
        (torch.tensor([[1, 2]]), 0, {}, "length"),
        (torch.tensor([[1, 2]]), 3, {"top_k": 0}, "top_k"),
        (torch.tensor([[1, 2]]), 3, {"temperature": 0.0}, "temperature"),
    ],
)
def test_generate_rejects_bad_arguments(generator_model, prompt, n, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate(generator_model, prompt, n, **kwargs)


def test_samples_start_at_a_new_line_when_the_vocabulary_has_one():
    assert sample_prompt(CharVocab.from_text("ab\nc")) == "\n"
    assert sample_prompt(CharVocab.from_text("cab")) == "a"
