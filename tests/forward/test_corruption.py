"""A corrupt or half-written queue file after a power loss: the forwarder starts, keeps what is
intact, says what it could not recover, and moves an unreadable file aside."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.forward import ForwardConfig, Forwarder, ForwardQueue
from gateway.forward.queue import LANES, Pending
from tests.forward.helpers import Collector, Runner, forward_config, records
from tests.support.mosquitto import Mosquitto

N = 2000


def _fill(path: Path, n: int = N) -> None:
    """A queue file with ``n`` records over the four lanes, fully checkpointed."""
    queue = ForwardQueue(path, budget_bytes=64 * 1024 * 1024)
    queue.open()
    for start in range(0, n, 250):
        items = [
            Pending(i % 4, 1_700_000_000.0 + i, json.dumps({"n": i, "pad": "p" * 80}), 0)
            for i in range(start, min(n, start + 250))
        ]
        queue.commit(items)
    queue.checkpoint()
    queue.close()


def _queued(path: Path) -> dict[int, list[int]]:
    """Record numbers per lane in the (recovered) file, in queue order."""
    queue = ForwardQueue(path, budget_bytes=64 * 1024 * 1024)
    queue.open()
    try:
        return {lane: [json.loads(r.body)["n"] for r in queue.fetch(lane, -1, 10 * N)] for lane in range(4)}
    finally:
        queue.close()


def _deliver_all(cloud: Mosquitto, data: Path, expect_min: int) -> tuple[Forwarder, list[dict[str, object]]]:
    collector = Collector(cloud)
    fwd = Forwarder(ForwardConfig.from_dict(forward_config(cloud)), "gwc", data)
    fwd.start()
    try:
        fwd.submit("alert", {"n": -1, "after": "recovery"})
        assert fwd.wait_drained(60), fwd.status()
        acked = sum(lane["acked"] for lane in fwd.status()["lanes"].values())
        assert acked >= expect_min
        got = records(collector.wait_for(lambda m: len({r["key"] for r in records(m)}) >= acked))
    finally:
        fwd.stop()
        collector.close()
    return fwd, got


@pytest.mark.parametrize("damage", ["overwrite_pages", "truncate_file"])
def test_damaged_db_is_salvaged(damage: str, mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path) -> None:
    data = tmp_path / "data"
    db = data / "forward.db"
    _fill(db)
    size = db.stat().st_size
    with open(db, "r+b") as f:
        if damage == "overwrite_pages":
            f.seek(size // 2)
            f.write(os.urandom(3 * 4096))  # three pages of garbage in the middle of the file
        else:
            f.truncate(int(size * 0.7))  # the tail of the file never made it to the card
    cloud = mosquitto_factory()
    fwd, got = _deliver_all(cloud, data, expect_min=2)
    report = fwd.recovery
    assert report is not None
    assert report.state == "salvaged", report
    assert report.error  # says what was wrong
    assert report.unreadable_regions + report.bad_rows > 0  # says that something could not be read
    assert 0 < report.recovered_records < N
    assert report.moved_aside is not None and Path(report.moved_aside).exists()
    assert Path(report.moved_aside).name.startswith("forward.db.corrupt-")

    unique = {str(r["key"]): r for r in got}.values()
    recovered = [r["record"]["n"] for r in unique if r["record"].get("n", -1) >= 0]  # type: ignore[index,union-attr]
    assert len(recovered) == report.recovered_records
    # What was kept is exactly the original data (no damaged row is forwarded).
    for r in unique:
        rec = r["record"]
        if isinstance(rec, dict) and rec.get("n", -1) >= 0:
            assert rec == {"n": rec["n"], "pad": "p" * 80}
            assert LANES[rec["n"] % 4] == r["lane"]
    # The recovery is reported upward in the registry lane, and the new alert went through.
    reports = [r["record"] for r in unique if r["record"].get("type") == "queue_recovery"]  # type: ignore[union-attr]
    assert len(reports) == 1 and reports[0]["state"] == "salvaged"  # type: ignore[index]
    assert any(r["record"].get("after") == "recovery" for r in unique)  # type: ignore[union-attr]


def test_unreadable_db_is_moved_aside_and_replaced(mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path) -> None:
    data = tmp_path / "data"
    db = data / "forward.db"
    _fill(db)
    with open(db, "r+b") as f:
        f.write(b"\x00garbage" * 64)  # the SQLite header is gone
    cloud = mosquitto_factory()
    fwd, got = _deliver_all(cloud, data, expect_min=2)
    report = fwd.recovery
    assert report is not None and report.state == "replaced", report
    assert "not a database" in (report.error or "")
    assert report.moved_aside is not None
    aside = Path(report.moved_aside)
    assert aside.exists() and aside.read_bytes()[:8] == b"\x00garbage"  # kept for forensics
    unique = {str(r["key"]): r["record"] for r in got}.values()
    assert any(r.get("type") == "queue_recovery" and r["state"] == "replaced" for r in unique)  # type: ignore[union-attr]
    assert any(r.get("after") == "recovery" for r in unique)  # type: ignore[union-attr]


@pytest.mark.parametrize("damage", ["truncate_wal", "overwrite_wal"])
def test_half_written_wal_keeps_the_committed_prefix(
    damage: str, mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path
) -> None:
    cloud = mosquitto_factory()
    cloud.stop()
    data = tmp_path / "data"
    runner = Runner(tmp_path, forward_config(cloud), "gww", data)
    for batch in range(6):  # six separate commits, all still in the WAL
        runner.submit_many([(LANES[i % 4], {"n": i}) for i in range(batch * 100, batch * 100 + 100)])
        assert runner.request("flush", "flushed") is True
    runner.kill()  # power cut: no checkpoint, the WAL holds every commit
    wal = data / "forward.db-wal"
    size = wal.stat().st_size
    assert size > 0
    with open(wal, "r+b") as f:
        if damage == "truncate_wal":
            f.truncate(size // 2)
        else:
            f.seek(size // 2)
            f.write(os.urandom(4096))
    kept = _queued(data / "forward.db")
    time.sleep(0.01)
    # SQLite drops the WAL frames from the damage on: each lane keeps a prefix of what it had.
    total = sum(len(v) for v in kept.values())
    assert 0 < total < 600
    for lane, ns in kept.items():
        assert ns == list(range(lane, lane + 4 * len(ns), 4))
    fwd, got = _deliver_all(cloud_start(cloud), data, expect_min=total + 1)
    assert fwd.recovery is not None and fwd.recovery.state == "ok"
    delivered = sorted(
        r["record"]["n"]  # type: ignore[index]
        for r in {str(r["key"]): r for r in got}.values()
        if r["record"].get("n", -1) >= 0  # type: ignore[union-attr]
    )
    assert delivered == sorted(n for ns in kept.values() for n in ns)


def cloud_start(cloud: Mosquitto) -> Mosquitto:
    return cloud.start()
