"""A crash never loses a summary interval silently: what the raw log received after the
summary watermark is summarised again at the next start (plain data, a fake clock)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.config import from_dict
from gateway.ingest import RawFrame
from gateway.pipeline import Gateway
from gateway.rawlog import RawLog
from tests.gateway.doubles import Published
from tests.gateway.test_pipeline import T0
from tests.support.simdevice import SimDevice


class Forwarder:
    """Stands in for gateway.forward.Forwarder's submit / committed (tickets)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, dict[str, Any]]] = []
        self.durable = True

    def submit(self, lane: str, record: dict[str, Any]) -> int:
        self.records.append((lane, record))
        return len(self.records)

    def committed(self, ticket: int) -> bool:
        return self.durable

    def summaries(self) -> list[dict[str, Any]]:
        return [r for lane, r in self.records if lane == "summary"]


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


def start(tmp_path: Path, fwd: Forwarder, clock: Clock) -> Gateway:
    cfg = from_dict(
        {
            "gateway": {"id": "gw1", "site": "s1", "data_dir": str(tmp_path / "data")},
            "summary": {"interval_s": 10},
        }
    )
    return Gateway(cfg, Published(), submit=fwd.submit, committed=fwd.committed, clock=clock)


def feed(gw: Gateway, dev: SimDevice, clock: Clock, frames: int) -> None:
    for _ in range(frames):
        clock.t += 0.32
        gw.process([RawFrame(dev.topic("data"), dev.data(), clock.t)])
        gw.tick()


def test_the_interval_in_progress_at_a_crash_is_rebuilt_from_the_raw_log(tmp_path: Path) -> None:
    fwd, clock = Forwarder(), Clock()
    gw = start(tmp_path, fwd, clock)
    dev = SimDevice("pump-1")
    gw.process([RawFrame(dev.topic("birth"), dev.birth(), clock.t)])
    feed(gw, dev, clock, 40)  # 12.8 s: one interval sent at T0 + 10, the next one in progress
    sent = fwd.summaries()
    assert len(sent) == 1 and not sent[0].get("rebuilt")
    in_progress = gw.summaries.flush(clock.t)  # what the crash takes away (never sent)
    # kill -9: no close(), no final flush. The next run starts 5 s later.
    clock.t += 5
    gw2 = start(tmp_path, fwd, clock)
    rebuilt = [r for r in fwd.summaries() if r.get("rebuilt")]
    assert len(rebuilt) == 1
    got, want = rebuilt[0], in_progress[0]
    assert got["device"] == "pump-1" and got["count"] == want["count"] > 0
    assert sent[0]["start"] < got["start"] <= sent[0]["end"]  # the watermark: last frame summarised
    for name, stats in want["channels"].items():
        for k in ("min", "max", "mean", "std"):
            assert got["channels"][name][k] == pytest.approx(stats[k], rel=1e-5, abs=1e-6), (name, k)
    # Summarised once: a clean stop of the second run rebuilds nothing more.
    gw2.flush_summaries(clock.t)
    gw2.close()
    n = len(fwd.summaries())
    gw3 = start(tmp_path, fwd, clock)
    assert len(fwd.summaries()) == n
    gw3.close()


def test_the_watermark_waits_until_the_records_are_durable(tmp_path: Path) -> None:
    """Records handed to the forwarder but not committed yet are rebuilt after a crash."""
    fwd, clock = Forwarder(), Clock()
    fwd.durable = False
    gw = start(tmp_path, fwd, clock)
    dev = SimDevice("pump-1")
    gw.process([RawFrame(dev.topic("birth"), dev.birth(), clock.t)])
    feed(gw, dev, clock, 40)
    assert len(fwd.summaries()) == 1  # submitted, never committed
    del gw  # crash
    fwd.durable = True
    clock.t += 1
    start(tmp_path, fwd, clock).close()
    rebuilt = [r for r in fwd.summaries() if r.get("rebuilt")]
    assert sum(r["count"] for r in rebuilt) == 40 * 32  # the uncommitted interval and the rest


def test_readings_the_raw_log_no_longer_holds_are_reported_missing(tmp_path: Path) -> None:
    fwd, clock = Forwarder(), Clock()
    gw = start(tmp_path, fwd, clock)
    dev = SimDevice("pump-1")
    gw.process([RawFrame(dev.topic("birth"), dev.birth(), clock.t)])
    feed(gw, dev, clock, 5)
    del gw  # crash: the last 1.6 s were never summarised
    # Before the next start the raw log's age limit removes those readings.
    rawlog = RawLog(tmp_path / "data" / "rawlog.sqlite", max_bytes=1 << 30, max_age_s=10)
    rawlog.commit_batch([], now=clock.t + 3600)
    assert rawlog.evicted_through() == pytest.approx(clock.t)
    rawlog.close()
    clock.t += 3600
    start(tmp_path, fwd, clock).close()
    missing = [(lane, r) for lane, r in fwd.records if r.get("event") == "summary_missing"]
    assert len(missing) == 1 and missing[0][0] == "registry"
    assert missing[0][1]["start"] == pytest.approx(T0) and missing[0][1]["end"] == pytest.approx(T0 + 1.6)
    assert not [r for r in fwd.summaries() if r.get("rebuilt")]
