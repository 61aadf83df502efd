"""Sampling speed: ``generate`` with the window forward of the last ``context`` ids at every draw
against the incremental predictor (``torch_lm.training.sampling.incremental_predictor``: NumPy's
on the CPU), on the same model, prompt and seed, in characters per second and their ratio, at each
batch size of the plan.

Both paths draw through the one sampling loop (``torch_lm.training.sampling.draw``) and take
turns, so both see the same contention; each figure is the best of ``sample_repeats`` runs with
the median beside it. The model is the plan's config at a seeded random initialisation (speed
does not depend on the weights) in the training dtype; the prompt is one ``PAD_ID`` per row.
``scripts/bench.py`` runs it as one of its sections; alone, with the default plan::

    OMP_NUM_THREADS=1 python -c "from torch_lm.bench.sampling import print_sampling_speed; print_sampling_speed()"
"""

from __future__ import annotations

import torch

from torch_lm.bench.markdown import sampling_table
from torch_lm.bench.plan import BenchPlan, default_plan
from torch_lm.bench.timing import best_and_median, time_calls
from torch_lm.neural_lm import PAD_ID, NeuralLM
from torch_lm.training.config import DTYPES
from torch_lm.training.sampling import generate

PATHS = {"window": False, "incremental": True}  # name -> generate's ``incremental``


def sampling_speed(plan: BenchPlan) -> list[dict]:
    """One row per batch size B in ``plan.sample_batches``: characters per second (B x
    ``plan.sample_chars`` drawn characters over the wall time) of both paths, and their ratio."""
    model = NeuralLM(plan.model).to(DTYPES[plan.train.dtype]).eval()
    model.reset_parameters(torch.Generator().manual_seed(plan.train.seed))
    return [_row(model, plan, batch) for batch in plan.sample_batches]


def _row(model: NeuralLM, plan: BenchPlan, batch: int) -> dict:
    prompt = torch.full((batch, 1), PAD_ID, dtype=torch.long)  # (B, 1): the start of a new line

    def sampling(incremental: bool, length: int = plan.sample_chars):
        """One ``generate`` of ``length`` characters per row, its generator seeded afresh: the same draws."""
        generator = torch.Generator().manual_seed(plan.train.seed)
        return lambda: generate(model, prompt, length, generator=generator, incremental=incremental)

    for incremental in PATHS.values():  # warm-up: kernels chosen, pages touched
        sampling(incremental, min(plan.sample_chars, 8))()
    seconds = {name: [] for name in PATHS}
    for _ in range(plan.sample_repeats):  # the paths take turns
        for name, incremental in PATHS.items():
            seconds[name] += time_calls(sampling(incremental), 1, warmup=0)
    chars = batch * plan.sample_chars
    rate = {name: {k: chars / v for k, v in best_and_median(s).items()} for name, s in seconds.items()}
    return {
        "batch": batch,
        "chars_per_row": plan.sample_chars,
        "window_chars_per_s": rate["window"]["best"],
        "window_chars_per_s_median": rate["window"]["median"],
        "incremental_chars_per_s": rate["incremental"]["best"],
        "incremental_chars_per_s_median": rate["incremental"]["median"],
        "speedup": rate["incremental"]["best"] / rate["window"]["best"],
        "speedup_median": rate["incremental"]["median"] / rate["window"]["median"],
    }


def print_sampling_speed(quick: bool = False) -> None:
    """Measure with the default plan (``quick``: fewer characters and repetitions) and print the
    benchmark's table of it."""
    plan = default_plan(quick, run_suite=False)
    print(f"{torch.get_num_threads()} torch thread(s), {plan.train.dtype}")
    print("\n".join(sampling_table(sampling_speed(plan), plan.to_dict())))
