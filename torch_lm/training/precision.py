"""The precision of a training run's matrix products: ``full`` (the parameters' dtype, float32 or
float64), or ``bfloat16`` where the hardware has it.

``--precision bfloat16`` runs the forward under ``torch.autocast(dtype=torch.bfloat16)``: every
``Linear`` multiplies in bfloat16 (float32 accumulation) and returns float32
(``torch_lm.linear.Linear``), so LayerNorm statistics, the activations, dropout, the softmax of the
loss, the gradients' accumulation and the optimiser stay in float32. Held-out scoring, sampling
and the parity tests always run in the parameters' own dtype.

``auto`` (the default) takes bfloat16 only where the device multiplies it natively: a CPU with
AVX-512 BF16 or AMX tiles, a CUDA device of compute capability 8.0 or higher. Elsewhere autocast
still works, but emulated bfloat16 products are far slower than float32 ones, so ``auto`` takes
``full`` there. The resolved name, never ``auto``, is what a run records (summary, checkpoint,
TensorBoard hparams), so a run and its resume are reproducible for their precision.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from numpy_ref.validation import fail

PRECISIONS = ("auto", "full", "bfloat16")
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpuinfo_fields(cpuinfo: str | Path = "/proc/cpuinfo") -> dict[str, str]:
    """``key: value`` of the first CPU listed in ``cpuinfo`` (Linux); empty where it cannot be read."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return {}
    fields = {}
    for line in text.splitlines():
        if not line.strip():  # the blank line that ends the first CPU's block
            break
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The feature flags of the first CPU listed in ``cpuinfo`` (x86 ``flags``, Arm ``Features``)."""
    fields = cpuinfo_fields(cpuinfo)
    return frozenset((fields.get("flags") or fields.get("Features") or "").split())


def cpu_has_native_bf16(flags: frozenset[str] | None = None) -> bool:
    """Whether this CPU multiplies bfloat16 natively: its flags (``cpu_flags``) name AVX-512 BF16
    or AMX, or, where no flags can be read, torch's own probe of the instruction sets it uses."""
    flags = cpu_flags() if flags is None else flags
    if flags:
        return any(flag in flags for flag in CPU_BF16_FLAGS)
    probes = [getattr(torch._C._cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(probe() for probe in probes if probe is not None)


def native_bf16(device: torch.device) -> bool:
    """Whether bfloat16 products run natively (hence fast) on ``device``."""
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (8, 0)
    return device.type == "cpu" and cpu_has_native_bf16()


def check_precision(where: str, precision: object, dtype: str) -> None:
    """``precision`` must be one of ``PRECISIONS``; bfloat16 products only for float32 parameters
    (a float64 run is the exact reference and stays in float64)."""
    if precision not in PRECISIONS:
        fail(where, f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "bfloat16" and dtype != "float32":
        fail(where, f"precision bfloat16 needs float32 parameters, got dtype {dtype!r}")


def resolve_precision(precision: str, dtype: str, device: torch.device) -> str:
    """The precision a run of ``precision`` takes on ``device``: ``auto`` becomes bfloat16 where
    the device multiplies it natively and the parameters are float32, ``full`` otherwise."""
    check_precision("precision", precision, dtype)
    if precision != "auto":
        return precision
    return "bfloat16" if dtype == "float32" and native_bf16(device) else "full"


def autocast(precision: str, device: torch.device):
    """A context for the forward pass of a run of (resolved) ``precision`` on ``device``."""
    if precision == "bfloat16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "full":
        return contextlib.nullcontext()
    fail("autocast", f"precision must be resolved to full or bfloat16 first, got {precision!r}")
