"""submit() never waits for the cloud or the disk: the local alert path is not slowed by a dead
cloud link or a stuck queue file (behaviour, not timing)."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from gateway.forward import ForwardConfig, Forwarder, RecordError
from tests.forward.helpers import Runner, queue_rows, wait_until
from tests.support.mosquitto import free_port


def _unreachable_config(**extra: object) -> ForwardConfig:
    # Nothing listens on this port: every connection attempt is refused.
    return ForwardConfig.from_dict(
        {"host": "127.0.0.1", "port": free_port(), "backoff_min_s": 0.05, "backoff_max_s": 0.2, **extra}
    )


def test_cloud_unreachable_submit_accepts_and_writer_commits(tmp_path: Path) -> None:
    fwd = Forwarder(_unreachable_config(), "gwu", tmp_path / "data")
    fwd.start()
    try:
        done = threading.Event()

        def produce() -> None:
            for i in range(20_000):
                fwd.submit("alert" if i % 100 == 0 else "summary", {"n": i})
            done.set()

        threading.Thread(target=produce).start()
        assert done.wait(60)
        assert fwd.flush(60)
        status = fwd.status()
    finally:
        fwd.stop()
    assert status["connection"]["state"] != "connected"
    assert "Refused" in str(status["connection"]["last_error"])
    assert status["lanes"]["alert"]["depth"] == 200
    assert status["lanes"]["summary"]["depth"] == 19_800
    assert status["lanes"]["alert"]["oldest_age_s"] is not None


def test_stuck_queue_file_does_not_block_submit(tmp_path: Path) -> None:
    fwd = Forwarder(_unreachable_config(), "gwl", tmp_path / "data")
    fwd.start()
    blocker = sqlite3.connect(str(fwd.db_path), isolation_level=None)
    try:
        assert fwd.flush(10)
        blocker.execute("BEGIN IMMEDIATE")  # another writer holds the file: no commit can happen
        done = threading.Event()

        def produce() -> None:
            for i in range(2000):
                fwd.submit("alert" if i % 10 == 0 else "raw", {"n": i})
            done.set()

        threading.Thread(target=produce).start()
        assert done.wait(60)  # every submit returned while the writer was stuck
        assert not fwd.flush(0.2)  # nothing could be committed while the lock is held
        deadline = time.monotonic() + 20
        while "locked" not in str(fwd.status()["last_write_error"]):
            assert time.monotonic() < deadline, fwd.status()
            time.sleep(0.02)
        blocker.execute("ROLLBACK")
        assert fwd.flush(30)  # the writer catches up by itself
        status = fwd.status()
    finally:
        blocker.close()
        fwd.stop()
    assert status["lanes"]["alert"]["depth"] == 200
    assert status["lanes"]["raw"]["depth"] == 1800
    assert status["counters"]["events.write_errors"] >= 1


def test_bad_records_are_rejected_and_counted(tmp_path: Path) -> None:
    fwd = Forwarder(_unreachable_config(), "gwr", tmp_path / "data")
    with pytest.raises(RecordError, match="lane 'alerts': expected one of alert, registry, summary, raw"):
        fwd.submit("alerts", {"n": 1})
    with pytest.raises(RecordError, match="not JSON-serialisable"):
        fwd.submit("summary", {"mean": float("nan")})
    with pytest.raises(RecordError, match="not JSON-serialisable"):
        fwd.submit("summary", {"when": object()})
    assert fwd.status()["lanes"]["summary"]["rejected"] == 2


def test_tickets_tell_when_records_are_committed(tmp_path: Path) -> None:
    """submit() returns increasing tickets; committed(t) turns true only once record t (and every
    record before it) is in the queue file, or was counted lost (memory buffer full)."""
    # Summaries wait up to a second for their commit: the first 50 fill the memory buffer at once.
    config = _unreachable_config(memory_buffer_max=50, commit_interval_ms=1000.0)
    fwd = Forwarder(config, "gwt", tmp_path / "data")
    fwd.start()
    blocker = sqlite3.connect(str(fwd.db_path), isolation_level=None)
    try:
        first = fwd.submit("alert", {"n": 0})  # an alert commits at once
        wait_until(lambda: fwd.committed(first), "first record committed")
        assert [rec["n"] for _lane, _seq, rec in queue_rows(fwd.db_path)] == [0]
        blocker.execute("BEGIN IMMEDIATE")  # another writer holds the file: no commit can happen
        tickets = [fwd.submit("summary", {"n": n}) for n in range(1, 80)]  # record 51 finds the buffer full
        assert tickets == list(range(first + 1, first + 80))
        wait_until(lambda: "locked" in str(fwd.status()["last_write_error"]), "a failed commit")
        # Nothing committed; the lost ones are settled only after the records before them.
        assert not any(fwd.committed(t) for t in tickets)
        blocker.execute("ROLLBACK")
        wait_until(lambda: fwd.committed(tickets[-1]), "every ticket settled")
        assert all(fwd.committed(t) for t in tickets)
        assert not fwd.committed(tickets[-1] + 1)  # not issued yet
        rows = [rec["n"] for _lane, _seq, rec in queue_rows(fwd.db_path) if "n" in rec]
        status = fwd.status()
    finally:
        blocker.close()
        fwd.stop()
    lost = status["lanes"]["summary"]["lost_buffer_full"]
    assert lost >= 1 and 51 not in rows
    assert rows[:51] == list(range(51)) and rows == sorted(rows)
    assert len(rows) - 1 + lost == 79  # every ticket: committed, or counted lost


def test_committed_record_survives_kill_9(tmp_path: Path) -> None:
    """Once committed(ticket) says so, the record is in the file: a SIGKILL right after keeps it."""
    config = {"host": "127.0.0.1", "port": free_port(), "commit_interval_ms": 200.0}
    runner = Runner(tmp_path, config, "gwk", tmp_path / "data")
    try:
        runner.submit_many([("summary", {"n": n}) for n in range(99)])
        runner.send({"lane": "summary", "record": {"n": 99}, "ticket": True})
        ticket = runner.read_until("ticket", timeout=10)["ticket"]
        wait_until(lambda: runner.request("committed", "committed", ticket=ticket), "committed")
    finally:
        runner.kill()
    assert [rec["n"] for _lane, _seq, rec in queue_rows(tmp_path / "data" / "forward.db")] == list(range(100))
