"""Summary compaction merges count/min/max/mean/std exactly (checked against numpy), and the queue
keeps lane order, in-order deletes and the protection of records in flight."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.forward.compaction import is_mergeable, merge_channel, merge_summaries
from gateway.forward.queue import RAW, SUMMARY, ForwardQueue, Pending, summary_level
from gateway.forward.ratelimit import TokenBucket


def _stats(values: np.ndarray) -> dict[str, float | int]:
    return {
        "count": int(values.size),
        "min": float(values.min()),
        "max": float(values.max()),
        "mean": float(values.mean()),
        "std": float(values.std()),
    }


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.lists(st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False), min_size=1, max_size=40),
        min_size=1,
        max_size=12,
    )
)
def test_merge_channel_matches_numpy(parts: list[list[float]]) -> None:
    arrays = [np.asarray(p, dtype=np.float64) for p in parts]
    merged = merge_channel([_stats(a) for a in arrays])
    allv = np.concatenate(arrays)
    assert merged["count"] == allv.size
    assert merged["min"] == allv.min() and merged["max"] == allv.max()
    scale = max(1.0, float(np.abs(allv).max()))
    assert math.isclose(merged["mean"], float(allv.mean()), rel_tol=1e-9, abs_tol=1e-9 * scale)
    assert math.isclose(merged["std"], float(allv.std()), rel_tol=1e-6, abs_tol=1e-6 * scale)


def test_merge_summaries_keeps_common_fields_and_lists_what_it_replaces() -> None:
    a = {"device": "d1", "unit": "g", "start": 0.0, "end": 10.0, "stats": {"x": _stats(np.arange(5.0))}}
    b = {"device": "d1", "unit": "g", "start": 10.0, "end": 20.0, "stats": {"x": _stats(np.arange(5.0, 9.0))}}
    empty = {"device": "d1", "unit": "g", "start": 20.0, "end": 30.0, "stats": {"x": {"count": 0}}}
    assert all(is_mergeable(r) for r in (a, b, empty))
    merged = merge_summaries([a, b, empty], [7, 8, 9])
    assert merged["unit"] == "g" and (merged["start"], merged["end"]) == (0.0, 30.0)
    assert merged["stats"]["x"] == _stats(np.arange(9.0)) | {"std": merged["stats"]["x"]["std"]}
    assert math.isclose(merged["stats"]["x"]["std"], float(np.arange(9.0).std()))
    assert merged["compaction"] == {"level": 1, "records": 3, "replaces": [[7, 9]]}
    again = merge_summaries(
        [merged, merged | {"compaction": {"level": 1, "records": 2, "replaces": [[20, 21]]}}], [30, 31]
    )
    assert again["compaction"] == {"level": 2, "records": 5, "replaces": [[7, 9], [20, 21]]}
    assert not is_mergeable({"start": 0, "end": 1, "stats": {"x": {"count": 3, "mean": "a", "std": 1.0}}})
    assert not is_mergeable({"start": 0, "end": 1, "stats": {"x": {"mean": 1.0, "std": 1.0}}})  # no weight
    assert not is_mergeable({"start": 2, "end": 1, "stats": {}})
    assert summary_level(SUMMARY, {"free": "form"}) > 100  # never merged, dropped only after raw


def test_queue_order_in_order_delete_and_protection(tmp_path: Path) -> None:
    q = ForwardQueue(tmp_path / "q.db", budget_bytes=300 * 1024, compaction_factor=4, compaction_max_level=2)
    assert q.open().state == "fresh"
    new, _ = q.commit(
        [Pending(RAW, 1.0 + i, json.dumps({"n": i, "pad": os.urandom(450).hex()}), 0) for i in range(100)]
    )
    assert [r.seq for r in new] == list(range(1, 101))
    assert [json.loads(r.body)["n"] for r in q.fetch(RAW, -1, 10)] == list(range(10))
    # Acknowledge the first 10: deleted in one range, the rest keeps its order.
    _, deleted = q.commit([], {RAW: new[9].id})
    assert deleted == {RAW: 10} and q.counts[RAW] == 90
    assert q.fetch(RAW, -1, 1)[0].seq == 11
    # No room for 60 more: the oldest raw go, except the ones in flight (protected).
    batch = [Pending(RAW, 200.0 + i, json.dumps({"n": 100 + i, "pad": os.urandom(450).hex()}), 0) for i in range(60)]
    incoming = sum(q.estimate_bytes(p) for p in batch)
    assert q.needs_room(incoming)
    result = q.enforce_budget({RAW: new[19].id}, incoming=incoming)
    assert not q.needs_room(incoming)
    more, _ = q.commit(batch)
    assert result.dropped["raw"] > 0
    kept = [r.seq for r in q.fetch(RAW, -1, 1000)]
    assert kept[:10] == list(range(11, 21))  # in flight: untouched
    assert result.dropped_seq_ranges["raw"] == [[21, 20 + result.dropped["raw"]]]
    assert q.counters["dropped.raw"] == result.dropped["raw"]
    q.close()
    # Counters and sequence numbers survive a restart.
    q2 = ForwardQueue(tmp_path / "q.db", budget_bytes=300 * 1024)
    assert q2.open().state == "ok"
    assert q2.counters["dropped.raw"] == result.dropped["raw"]
    assert q2.commit([Pending(RAW, 999.0, "{}", 0)])[0][0].seq == more[-1].seq + 1
    q2.close()


def test_token_bucket() -> None:
    now = [0.0]
    bucket = TokenBucket(1000.0, burst=1000.0, clock=lambda: now[0])
    assert TokenBucket(1000.0).burst == 250.0  # default: a quarter second of traffic
    assert bucket.take(600) and not bucket.take(600)
    assert math.isclose(bucket.wait_time(600), 0.2)
    now[0] += 0.2
    assert bucket.take(600)
    now[0] += 5.0
    assert bucket.take(5000)  # a message larger than the burst still passes when the bucket is full
    assert not bucket.take(1)


def test_gateway_summaries_merge_like_one_long_interval() -> None:
    """The summaries the gateway really emits (gateway.decisions.Summaries) compact exactly: merging
    ten 1-minute summaries gives what one 10-minute summary over the same data says."""
    from gateway.decisions import Summaries

    rng = np.random.default_rng(3)
    short = Summaries(60.0, start=0.0)
    long = Summaries(600.0, start=0.0)
    merged_parts: list[dict[str, object]] = []
    for minute in range(10):
        for _ in range(3):
            values = rng.normal(minute, 1 + minute % 3, size=(50, 2)).astype(np.float32)
            scores = rng.random(7)
            for s in (short, long):
                s.add_values("dev1", ("ax", "ay"), values)
                s.add_scores("dev1", "vib", scores, 0.9)
        if minute % 4 == 1:
            short.add_gap("dev1")
            long.add_gap("dev1")
        merged_parts += short.flush(60.0 * (minute + 1))
    assert all(is_mergeable(r) for r in merged_parts)
    merged = merge_summaries(merged_parts, list(range(1, 11)))  # type: ignore[arg-type]
    (expect,) = long.flush(600.0)
    assert merged["device"] == "dev1" and (merged["start"], merged["end"]) == (0.0, 600.0)
    assert merged["count"] == expect["count"] and merged["gaps"] == expect["gaps"] == 3
    for ch in ("ax", "ay"):
        for k in ("min", "max", "mean", "std"):
            assert math.isclose(merged["channels"][ch][k], expect["channels"][ch][k], rel_tol=1e-6, abs_tol=1e-9), k
    got, want = merged["scores"]["vib"], expect["scores"]["vib"]
    assert got["windows"] == want["windows"] and got["alerts"] == want["alerts"]
    for k in ("min", "max", "mean", "std"):
        assert math.isclose(got[k], want[k], rel_tol=1e-9, abs_tol=1e-12), k
