"""JSON that every parser reads: no ``NaN``, ``Infinity`` or ``-Infinity`` in what the project writes.

Python's ``json`` writes a non-finite float as ``NaN`` / ``Infinity``, which is not JSON: ``jq``,
JavaScript and most parsers refuse the whole document. Every JSON the project writes (``--json``
on stdout, ``reports/*.json``, ``bench.json``, ``metrics.jsonl``) goes through ``dumps``, which
writes such a number as ``null`` and puts the reason beside it, in the same object, under the key
with ``_reason`` appended::

    {"val_loss": 781.95, "val_ppl": null, "val_ppl_reason": "not finite (inf): dynamic evaluation diverged"}

A non-finite number inside a list is ``null`` in the list, and the reason, beside the list's key,
names its position: ``"curve_reason": "not finite (nan at [3])"``. The encoder then runs with
``allow_nan=False``, so a value this conversion does not reach raises instead of writing invalid
JSON. docs/DESIGN.md §2 states the convention.
"""

from __future__ import annotations

import json
import math
from typing import Any

REASON_SUFFIX = "_reason"


def _kind(value: float) -> str:
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def _clean(value: Any, reason: str | None, where: str, found: list[str]) -> Any:
    """``value`` with every non-finite float below it set to None; those outside nested objects are
    recorded in ``found`` as ``"<kind>"`` or ``"<kind> at <where>"``."""
    if isinstance(value, float) and not math.isfinite(value):
        found.append(f"{_kind(value)} at {where}" if where else _kind(value))
        return None
    if isinstance(value, dict):
        return _clean_object(value, reason)
    if isinstance(value, (list, tuple)):
        return [_clean(item, reason, f"{where}[{i}]", found) for i, item in enumerate(value)]
    return value


def _clean_object(obj: dict, reason: str | None) -> dict:
    cleaned: dict = {}
    for key, value in obj.items():
        found: list[str] = []
        cleaned[key] = _clean(value, reason, "", found)
        if found:
            cleaned[f"{key}{REASON_SUFFIX}"] = f"not finite ({', '.join(found)})" + (f": {reason}" if reason else "")
    return cleaned


def finite_or_null(obj: Any, reason: str | None = None) -> Any:
    """A copy of ``obj`` (dicts, lists, tuples, numbers, strings, None, bools) where every NaN or
    infinite float is None, with ``<key>_reason`` beside it saying what it was; ``reason``, if
    given, ends every such note (why the document's figures may not be finite).

    Raises ``ValueError`` for a non-finite number outside any object (a bare float, or one in a
    list that no object holds), which has no key to put the reason under.
    """
    found: list[str] = []
    cleaned = _clean(obj, reason, "", found)
    if found:
        raise ValueError(f"strict_json: a non-finite number outside any object ({', '.join(found)}) has no reason key")
    return cleaned


def dumps(obj: Any, reason: str | None = None, **kwargs: Any) -> str:
    """``json.dumps`` of ``finite_or_null(obj, reason)`` with ``allow_nan=False``; ``kwargs`` as for
    ``json.dumps`` (``indent`` ...)."""
    return json.dumps(finite_or_null(obj, reason), allow_nan=False, **kwargs)
