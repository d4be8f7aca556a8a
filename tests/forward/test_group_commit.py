"""Adaptive group commit with real SQLite, a real cloud Mosquitto and a real forwarder process:
a trickle is not committed record by record, an alert is committed and published at once, what
``committed()`` reported survives a kill -9, and a stop commits what is buffered."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from gateway.forward import ForwardConfig, Forwarder
from tests.forward.helpers import Collector, Runner, forward_config, queue_rows, records, wait_until
from tests.support.mosquitto import Mosquitto, free_port


def _unreachable(**extra: object) -> dict[str, object]:
    return {"host": "127.0.0.1", "port": free_port(), "backoff_min_s": 0.05, "backoff_max_s": 0.2, **extra}


def _trickle(fwd: Forwarder, n: int, rate: float) -> int:
    """Submit ``n`` summaries at ``rate`` per second (the workload's pace, not a synchronisation)."""
    t0 = time.monotonic()
    ticket = 0
    for i in range(n):
        time.sleep(max(0.0, t0 + i / rate - time.monotonic()))
        ticket = fwd.submit("summary", {"n": i})
    return ticket


def _commits(config: dict[str, object], tmp: Path) -> dict[str, float]:
    fwd = Forwarder(ForwardConfig.from_dict(config), "gwg", tmp)
    fwd.start()
    try:
        last = _trickle(fwd, 120, rate=100.0)
        wait_until(lambda: fwd.committed(last), "the trickle committed")
        return dict(fwd.status()["commits"])
    finally:
        fwd.stop()


def test_trickle_is_not_committed_record_by_record(tmp_path: Path) -> None:
    """120 records at 100/s: the old fixed 5 ms commits take one commit per record or close; the
    defaults group them (the delay doubles per commit up to 1 s)."""
    grouped = _commits(_unreachable(), tmp_path / "grouped")
    fixed = _commits(_unreachable(commit_max_delay_ms=5.0), tmp_path / "fixed")
    assert grouped["delay"] + grouped["full"] <= 15, grouped
    assert grouped["delay_ms"] == 1000.0  # grown to the cap while the trickle lasted
    assert fixed["delay"] >= 60, fixed  # the behaviour before: about a commit per record
    assert fixed["total"] > 4 * grouped["total"], (fixed, grouped)


def test_alert_is_committed_and_published_at_once_alone(
    mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path
) -> None:
    """Summaries wait for their group (a 10 s delay here); an alert submitted after them is committed
    on its own and reaches the cloud at once.  committed() keeps its order: the alert's ticket reads
    committed only once the summaries submitted before it are."""
    cloud = mosquitto_factory()
    collector = Collector(cloud)
    fwd = Forwarder(ForwardConfig.from_dict(forward_config(cloud, commit_interval_ms=10_000.0)), "gwa", tmp_path)
    fwd.start()
    try:
        wait_until(lambda: fwd.status()["connection"]["state"] == "connected", "connected")
        summaries = [fwd.submit("summary", {"n": i}) for i in range(5)]
        alert = fwd.submit("alert", {"alert": 1})
        got = collector.wait_for(lambda msgs: any(r["lane"] == "alert" for r in records(msgs)), timeout=10)
        assert [r["record"] for r in records(got)] == [{"alert": 1}]  # no summary went with it
        assert [rec for _lane, _seq, rec in queue_rows(fwd.db_path) if "n" in rec] == []
        assert fwd.status()["commits"]["urgent"] >= 1
        assert not fwd.committed(alert) and not fwd.committed(summaries[-1])
        assert fwd.flush(10)
        assert fwd.committed(alert) and all(fwd.committed(t) for t in summaries)
        collector.wait_for(lambda msgs: len(records(msgs)) == 6)
    finally:
        fwd.stop()
        collector.close()


def test_records_reported_committed_survive_kill_9_of_the_process(tmp_path: Path) -> None:
    """A real forwarder process with the default group commit: once committed(t) is true for the
    last of a trickle ending in an alert, a SIGKILL keeps every record up to it."""
    data = tmp_path / "data"
    runner = Runner(tmp_path, _unreachable(), "gwk", data)
    try:
        for i in range(40):
            runner.submit_many([("summary", {"n": i})])
        runner.send({"lane": "alert", "record": {"n": 40}, "ticket": True})
        ticket = runner.read_until("ticket", timeout=10)["ticket"]
        wait_until(lambda: runner.request("committed", "committed", ticket=ticket), "committed", timeout=20)
        status = runner.request("status", "status")
    finally:
        runner.kill()
    assert sorted(rec["n"] for _lane, _seq, rec in queue_rows(data / "forward.db")) == list(range(41))
    assert status["commits"]["total"] < 41  # grouped, not one commit per record


def test_stop_commits_what_is_buffered(tmp_path: Path) -> None:
    """Summaries waiting for their group (10 s) are committed by a clean stop, in a process too."""
    fwd = Forwarder(ForwardConfig.from_dict(_unreachable(commit_interval_ms=10_000.0)), "gws", tmp_path / "a")
    fwd.start()
    tickets = [fwd.submit("summary", {"n": i}) for i in range(25)]
    assert not fwd.committed(tickets[-1])
    fwd.stop()
    assert fwd.committed(tickets[-1])
    assert [rec["n"] for _lane, _seq, rec in queue_rows(fwd.db_path)] == list(range(25))

    runner = Runner(tmp_path, _unreachable(commit_interval_ms=10_000.0), "gws", tmp_path / "b")
    runner.submit_many([("summary", {"n": i}) for i in range(25)])
    runner.send({"lane": "summary", "record": {"n": 25}, "ticket": True})
    runner.read_until("ticket", timeout=10)  # every line before it was read and submitted
    runner.stop()
    assert runner.proc.returncode == 0
    assert [rec["n"] for _lane, _seq, rec in queue_rows(tmp_path / "b" / "forward.db")] == list(range(26))
