"""Disk budget exceeded during a long outage: summaries compacted (exactly), raw windows dropped and
counted, losses reported upward, alerts intact.  Also a real "database or disk is full"."""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from gateway.forward import ForwardConfig, Forwarder
from gateway.forward.compaction import merge_channel
from tests.forward.helpers import Collector, forward_config, records
from tests.support.mosquitto import Mosquitto


def _summary(device: str, start: float, values: np.ndarray) -> dict[str, Any]:
    return {
        "type": "summary",
        "device": device,
        "start": start,
        "end": start + 1.0,
        "stats": {
            "x": {
                "count": int(values.size),
                "min": float(values.min()),
                "max": float(values.max()),
                "mean": float(values.mean()),
                "std": float(values.std()),
            }
        },
    }


def _wait_state(fwd: Forwarder, want: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while fwd.status()["connection"]["state"] != want:
        assert time.monotonic() < deadline, fwd.status()["connection"]
        time.sleep(0.01)


def _drain_and_collect(fwd: Any, cloud: Mosquitto, collector: Collector) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Cloud back: wait until the queue drained and every acknowledged record reached the collector."""
    cloud.start()
    assert fwd.wait_drained(60), fwd.status()
    final: dict[str, Any] = fwd.status()
    acked = sum(lane["acked"] for lane in final["lanes"].values())
    got = records(collector.wait_for(lambda m: len({r["key"] for r in records(m)}) >= acked))
    return final, got


def test_budget_compacts_summaries_drops_raw_keeps_alerts(
    mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path
) -> None:
    cloud = mosquitto_factory()
    collector = Collector(cloud)
    cfg = ForwardConfig.from_dict(forward_config(cloud, disk_budget_mb=0.25, max_inflight=64))
    fwd = Forwarder(cfg, "gwb", tmp_path / "data")
    cloud.stop()
    fwd.start()
    rng = np.random.default_rng(7)
    values: dict[str, list[np.ndarray]] = {"d0": [], "d1": [], "d2": []}
    n_alert, n_summary, n_raw = 40, 3000, 300
    try:
        for i in range(n_summary):
            device = f"d{i % 3}"
            chunk = rng.normal(loc=i % 3, scale=1.0 + (i % 5), size=10)
            values[device].append(chunk)
            fwd.submit("summary", _summary(device, float(i), chunk))
            if i % 10 == 0:
                fwd.submit("raw", {"type": "raw", "n": i // 10, "samples": [int(v) for v in rng.integers(0, 999, 200)]})
            if i % 75 == 0:
                fwd.submit("alert", {"type": "alert", "n": i // 75})
        assert fwd.flush(30)
        status = fwd.status()
        assert status["disk"]["used_bytes"] <= cfg.disk_budget_bytes
        assert status["lanes"]["summary"]["compacted"] > 0
        assert status["lanes"]["raw"]["dropped"] > 0
        assert status["lanes"]["alert"]["depth"] == n_alert  # alerts are the last touched
        assert status["lanes"]["alert"]["dropped"] == 0
        assert status["lanes"]["summary"]["dropped"] == 0  # raw goes before summaries are dropped
        final, got = _drain_and_collect(fwd, cloud, collector)
    finally:
        fwd.stop()
        collector.close()

    unique = {r["key"]: r for r in got}.values()
    alerts = [r for r in unique if r["lane"] == "alert"]
    assert sorted(r["record"]["n"] for r in alerts) == list(range(n_alert))
    # Every loss is reported upward, and the reports add up to the counters.
    reports = [r["record"] for r in unique if r["lane"] == "registry" and r["record"].get("type") == "loss_report"]
    assert reports
    dropped_raw = sum(rep.get("dropped", {}).get("raw", 0) for rep in reports)
    assert dropped_raw == final["lanes"]["raw"]["dropped"]
    raw_delivered = [r for r in unique if r["lane"] == "raw"]
    assert len(raw_delivered) + dropped_raw == n_raw
    compacted = sum(rep.get("compacted", {}).get("summary", 0) for rep in reports)
    assert compacted == final["lanes"]["summary"]["compacted"] > 0
    # Summaries: compacted, not lost; the merged statistics are exact.
    summaries = [r["record"] for r in unique if r["lane"] == "summary"]
    covered = sum(s.get("compaction", {}).get("records", 1) for s in summaries)
    assert covered == n_summary
    assert len(summaries) == n_summary - compacted
    assert any(s.get("compaction", {}).get("level", 0) >= 2 for s in summaries)
    for device, chunks in values.items():
        allv = np.concatenate(chunks)
        merged = merge_channel([s["stats"]["x"] for s in summaries if s["device"] == device])
        assert merged["count"] == allv.size
        assert merged["min"] == float(allv.min()) and merged["max"] == float(allv.max())
        assert math.isclose(merged["mean"], float(allv.mean()), rel_tol=1e-9, abs_tol=1e-12)
        assert math.isclose(merged["std"], float(allv.std()), rel_tol=1e-9)
    # Intervals stay disjoint and ordered within a device after compaction.
    for device in values:
        spans = [(s["start"], s["end"]) for s in summaries if s["device"] == device]
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))


class DiskSampler:
    """Samples the real size of the queue's files on disk (database, WAL, shared-memory index) in a
    thread of its own while the forwarder works, and keeps the largest total seen."""

    def __init__(self, db_path: Path) -> None:
        self.paths = [db_path, db_path.with_name(db_path.name + "-wal"), db_path.with_name(db_path.name + "-shm")]
        self.peak = 0
        self.peak_parts: tuple[int, ...] = ()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            parts = tuple(_size(p) for p in self.paths)
            self.samples += 1
            if sum(parts) > self.peak:
                self.peak, self.peak_parts = sum(parts), parts
            self._stop.wait(0.0002)  # the sampling period, not a synchronisation

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def test_files_on_disk_never_exceed_the_budget(mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path) -> None:
    """Outage under load from two threads with a 0.5 MB budget: database + WAL (+ its index) never
    exceed the budget at any moment, alerts are all kept, summaries are compacted, never dropped."""
    cloud = mosquitto_factory()
    collector = Collector(cloud)
    cfg = ForwardConfig.from_dict(forward_config(cloud, disk_budget_mb=0.5, max_inflight=64))
    fwd = Forwarder(cfg, "gwd", tmp_path / "data")
    cloud.stop()
    sampler = DiskSampler(fwd.db_path)
    fwd.start()
    n_summary, n_raw = 4000, 400
    rng = np.random.default_rng(11)
    chunks = [rng.normal(loc=i % 4, scale=1.0, size=8) for i in range(n_summary)]
    raws = [[int(v) for v in rng.integers(0, 99_999, 300)] for _ in range(n_raw)]
    n_alert = n_summary // 50 + n_raw // 10

    def summaries() -> None:  # alerts 0..79 between summaries
        for i in range(n_summary):
            fwd.submit("summary", _summary(f"d{i % 4}", float(i), chunks[i]))
            if i % 50 == 0:
                fwd.submit("alert", {"type": "alert", "n": i // 50})

    def raw_windows() -> None:  # alerts 80..119 between raw windows
        for i, samples in enumerate(raws):
            fwd.submit("raw", {"type": "raw", "n": i, "samples": samples})
            if i % 10 == 0:
                fwd.submit("alert", {"type": "alert", "n": n_summary // 50 + i // 10})

    try:
        threads = [threading.Thread(target=summaries), threading.Thread(target=raw_windows)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert fwd.flush(60)
        status = fwd.status()
        assert status["lanes"]["summary"]["compacted"] > 0
        assert status["lanes"]["summary"]["dropped"] == 0
        assert status["lanes"]["raw"]["dropped"] > 0
        assert status["lanes"]["alert"]["depth"] == n_alert
        final, got = _drain_and_collect(fwd, cloud, collector)
    finally:
        fwd.stop()
        sampler.stop()
        collector.close()
    assert sampler.samples > 100
    assert sampler.peak <= cfg.disk_budget_bytes, (sampler.peak, sampler.peak_parts, cfg.disk_budget_bytes)
    assert sampler.peak > cfg.disk_budget_bytes // 2  # the budget was pressed
    assert final["disk"]["peak_bytes"] <= cfg.disk_budget_bytes
    unique = {r["key"]: r for r in got}.values()
    assert sorted(r["record"]["n"] for r in unique if r["lane"] == "alert") == list(range(n_alert))
    summaries_got = [r["record"] for r in unique if r["lane"] == "summary"]
    assert sum(s.get("compaction", {}).get("records", 1) for s in summaries_got) == n_summary


def test_disk_full_is_counted_reported_and_survived(
    mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path
) -> None:
    """SQLite's own "database or disk is full" (the file is capped at 60 pages, far below the budget)."""
    cloud = mosquitto_factory()
    collector = Collector(cloud)
    cfg = ForwardConfig.from_dict(forward_config(cloud, disk_budget_mb=64))
    fwd = Forwarder(cfg, "gwf", tmp_path / "data", max_page_count=60)
    cloud.stop()
    fwd.start()
    n_alert, n_raw = 30, 600
    try:
        for i in range(n_raw):
            fwd.submit("raw", {"n": i, "samples": list(range(i, i + 250))})
            if i % 20 == 0:
                fwd.submit("alert", {"n": i // 20})
        assert fwd.flush(60), fwd.status()  # everything accepted got into the file or was counted
        status = fwd.status()
        assert status["counters"].get("events.disk_full", 0) >= 1
        assert status["lanes"]["raw"]["dropped"] > 0
        assert status["lanes"]["alert"]["depth"] == n_alert
        assert status["lanes"]["alert"]["dropped"] == 0
        final, got = _drain_and_collect(fwd, cloud, collector)
    finally:
        fwd.stop()
        collector.close()
    unique = {r["key"]: r for r in got}.values()
    assert sorted(r["record"]["n"] for r in unique if r["lane"] == "alert") == list(range(n_alert))
    raw = [r for r in unique if r["lane"] == "raw"]
    reports = [r["record"] for r in unique if r["record"].get("type") == "loss_report"]
    assert {rep["reason"] for rep in reports} == {"disk_full"}
    dropped = sum(rep["dropped"].get("raw", 0) for rep in reports)
    assert len(raw) + dropped == n_raw
    assert dropped == final["lanes"]["raw"]["dropped"]
