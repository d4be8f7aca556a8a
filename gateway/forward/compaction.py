"""Re-aggregation of summary records into coarser intervals (used when the disk budget is reached).

A summary record is a JSON object with numeric ``start`` and ``end`` (seconds) and any nesting of
*statistics blocks*: objects with ``mean`` and ``std`` and/or ``min``/``max``.  A block's weight is
its own ``count`` (or ``windows``, or ``n``), else the nearest ``count`` of an enclosing object.
Both shapes below merge, and so does anything mixing them::

    {"device": "d1", "start": 0.0, "end": 60.0,
     "stats": {"ax": {"count": 3000, "min": -1.0, "max": 1.2, "mean": 0.01, "std": 0.3}}}

    {"device": "d1", "start": 0.0, "end": 60.0, "gaps": 0, "count": 3000,          # gateway/decisions.py
     "channels": {"ax": {"min": -1.0, "max": 1.2, "mean": 0.01, "std": 0.3}},
     "scores": {"vib": {"windows": 46, "min": 0.1, "max": 0.9, "mean": 0.2, "std": 0.1, "alerts": 1}}}

Merging is exact up to float rounding: weights add, min/max take the extremes, means combine
weighted by count, variances with the parallel formula
``M2 = sum(n_i * (std_i**2 + (mean_i - mean)**2))``, ``std = sqrt(M2 / N)`` (population std, ddof=0).
Counters named in :data:`ADDITIVE` (``count``, ``gaps``, ``alerts`` ...) are summed; any other key is
kept when every merged record has the same value, and left out otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

ADDITIVE = frozenset({"count", "windows", "n", "gaps", "duplicates", "alerts", "samples", "dropped", "errors"})
WEIGHT_KEYS = ("count", "windows", "n")
_RESERVED = {"start", "end", "compaction"}


def is_mergeable(record: Any) -> bool:
    """True when ``record`` is a summary this module can merge (see the module docstring)."""
    if not isinstance(record, dict):
        return False
    start: Any = record.get("start")
    end: Any = record.get("end")
    if not _is_number(start) or not _is_number(end) or float(end) < float(start):
        return False
    return _blocks_ok(record, None)


def group_key(record: dict[str, Any]) -> tuple[str, str, str, int]:
    """Records merge only with records of the same device (site, type) and compaction level."""
    info = record.get("compaction")
    level = int(info.get("level", 0)) if isinstance(info, dict) else 0
    return (str(record.get("device", "")), str(record.get("site", "")), str(record.get("type", "")), level)


def merge_channel(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Merge statistics blocks that carry their own ``count`` (kept for callers and tests)."""
    return _merge_block([(p, _own_weight(p)) for p in parts])


def merge_summaries(records: Sequence[dict[str, Any]], seqs: Sequence[int]) -> dict[str, Any]:
    """Merge summaries (same :func:`group_key`) into one record, one compaction level coarser.

    ``seqs`` are the idempotency sequence numbers of the merged records; the result lists the
    sequence ranges it replaces in ``compaction.replaces`` so a consumer can tell what it covers.
    """
    if not records:
        raise ValueError("merge_summaries needs at least one record")
    merged = _merge_dicts(list(records), [None] * len(records), top=True)
    merged["start"] = min(float(r["start"]) for r in records)
    merged["end"] = max(float(r["end"]) for r in records)
    replaced: list[list[int]] = []
    merged_count = 0
    for record, seq in zip(records, seqs, strict=True):
        info = record.get("compaction")
        if isinstance(info, dict) and isinstance(info.get("replaces"), list):
            replaced.extend([int(a), int(b)] for a, b in info["replaces"])
            merged_count += int(info.get("records", 1))
        else:
            replaced.append([seq, seq])
            merged_count += 1
    level = max(group_key(r)[3] for r in records) + 1
    merged["compaction"] = {"level": level, "records": merged_count, "replaces": _coalesce(replaced)}
    return merged


# -- internals ---------------------------------------------------------------------------------------
def _is_block(value: Any) -> bool:
    return isinstance(value, dict) and "mean" in value and ("std" in value or "min" in value)


def _is_empty_block(value: Any) -> bool:
    """A block of an interval with no data, e.g. ``{"count": 0}``."""
    return isinstance(value, dict) and _own_weight(value) == 0 and not any(isinstance(v, dict) for v in value.values())


def _own_weight(block: dict[str, Any]) -> int | None:
    for key in WEIGHT_KEYS:
        if key in block:
            value = block[key]
            return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
    return None


def _weight(block: dict[str, Any], inherited: int | None) -> int | None:
    own = _own_weight(block)
    if own is not None or any(k in block for k in WEIGHT_KEYS):
        return own
    return inherited


def _child_inherited(d: dict[str, Any], inherited: int | None) -> int | None:
    count = d.get("count")
    if isinstance(count, int) and not isinstance(count, bool) and count >= 0:
        return count
    return inherited


def _blocks_ok(d: dict[str, Any], inherited: int | None) -> bool:
    inner = _child_inherited(d, inherited)
    for key, value in d.items():
        if key == "compaction":
            continue
        if _is_block(value):
            weight = _weight(value, inner)
            if weight is None:
                return False
            if weight > 0 and not all(_is_number(value[k]) for k in ("mean", "std", "min", "max") if k in value):
                return False
        elif isinstance(value, dict) and not _blocks_ok(value, inner):
            return False
    return True


def _merge_block(parts: Sequence[tuple[dict[str, Any], int | None]]) -> dict[str, Any]:
    weight_key = next((k for p, _ in parts for k in WEIGHT_KEYS if k in p), None)
    live = [(p, int(w)) for p, w in parts if w]
    total = sum(w for _, w in live)
    out: dict[str, Any] = {}
    if weight_key is not None:
        out[weight_key] = total
    has = {k: all(k in p for p, _ in live) for k in ("min", "max", "mean", "std")}
    if total == 0:
        out.update({k: None for k in ("min", "max", "mean", "std") if any(k in p for p, _ in parts)})
    else:
        mean = sum(w * float(p["mean"]) for p, w in live) / total
        if has["min"]:
            out["min"] = min(float(p["min"]) for p, _ in live)
        if has["max"]:
            out["max"] = max(float(p["max"]) for p, _ in live)
        out["mean"] = mean
        if has["std"]:
            m2 = sum(w * (float(p["std"]) ** 2 + (float(p["mean"]) - mean) ** 2) for p, w in live)
            out["std"] = math.sqrt(max(m2, 0.0) / total)
    # Other fields of the blocks (e.g. "alerts"): counters add up, equal values stay.
    for key in dict.fromkeys(k for p, _ in parts for k in p):
        if key in out or key in WEIGHT_KEYS or key in ("min", "max", "mean", "std"):
            continue
        values = [p[key] for p, _ in parts if key in p]
        if key in ADDITIVE and all(_is_int(v) for v in values):
            out[key] = sum(values)
        elif len(values) == len(parts) and all(v == values[0] for v in values):
            out[key] = values[0]
    return out


def _merge_dicts(dicts: list[dict[str, Any]], inherited: list[int | None], *, top: bool = False) -> dict[str, Any]:
    inner = [_child_inherited(d, inh) for d, inh in zip(dicts, inherited, strict=True)]
    out: dict[str, Any] = {}
    for key in dict.fromkeys(k for d in dicts for k in d):
        if top and key in _RESERVED:
            continue
        present = [(d[key], inh) for d, inh in zip(dicts, inner, strict=True) if key in d]
        values = [v for v, _ in present]
        if any(_is_block(v) for v in values) and all(_is_block(v) or _is_empty_block(v) for v in values):
            out[key] = _merge_block([(v, _weight(v, inh)) for v, inh in present])
        elif all(isinstance(v, dict) for v in values):
            out[key] = _merge_dicts(values, [inh for _, inh in present])
        elif key in ADDITIVE and all(_is_int(v) for v in values):
            out[key] = sum(values)
        elif len(values) == len(dicts) and all(v == values[0] for v in values):
            out[key] = values[0]
    return out


def _coalesce(ranges: list[list[int]]) -> list[list[int]]:
    out: list[list[int]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return out


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
