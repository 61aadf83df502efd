"""Tensor-side argument checks shared by the torch modules (the pure-Python ones live in
``numpy_ref.validation``, which both engines use).

Range checks of token ids and targets run on every forward, so they must not stall a GPU:
on the CPU one ``aminmax`` is read back and a bad id raises the same ``ValueError`` as the
NumPy reference; on an accelerator the check is queued with ``torch._assert_async`` and
fails (as a ``RuntimeError`` carrying the same message) at the next synchronisation,
instead of forcing a host sync per step.
"""

from __future__ import annotations

import torch

from numpy_ref.validation import check_index_range


def is_integer_dtype(dtype: torch.dtype) -> bool:
    """True for integer dtypes; bool is neither a token id nor a class index."""
    return not dtype.is_floating_point and not dtype.is_complex and dtype != torch.bool


def check_ids_in_range(where: str, name: str, ids: torch.Tensor, size: int) -> None:
    """Raise unless every entry of ``ids`` lies in ``[0, size)`` (see the module docstring)."""
    if ids.numel() == 0:  # nothing to look up, no extremes to check
        return
    if ids.device.type == "cpu":
        lowest, highest = torch.aminmax(ids)
        check_index_range(where, name, int(lowest), int(highest), size)
    else:
        in_range = ((ids >= 0) & (ids < size)).all()
        torch._assert_async(in_range, f"{where}: {name} must lie in [0, {size})")
