"""Forwarder process killed (kill -9) in the middle of a drain, then restarted: nothing lost, and a
record delivered twice carries the same idempotency key (and the same content)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.forward.helpers import Collector, Runner, forward_config, records
from tests.support.mosquitto import Mosquitto

LANES = ["alert", "registry", "summary", "raw"]


def test_kill_9_mid_drain_loses_nothing(mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path) -> None:
    cloud = mosquitto_factory()
    collector = Collector(cloud)
    data = tmp_path / "data"
    # A small drain rate cap keeps the drain slow enough to kill the process in its middle.
    cfg = forward_config(cloud, drain_limit_messages_per_s=400.0, max_inflight=16)
    cloud.stop()
    runner = Runner(tmp_path, cfg, "gw9", data)
    total = 1600
    items = [(LANES[i % 4], {"n": i, "lane_n": i // 4}) for i in range(total)]
    runner.submit_many(items)
    assert runner.request("flush", "flushed") is True  # all 1600 committed to the queue file
    cloud.start()
    collector.wait_for(lambda m: len(records(m)) >= 200, timeout=60)
    runner.kill()  # SIGKILL in the middle of the drain
    partial = len(records(collector.snapshot()))
    assert partial < total, "the drain finished before the kill; the test did not test a crash"

    runner = Runner(tmp_path, forward_config(cloud), "gw9", data)
    try:
        assert runner.ready["recovery"]["state"] == "ok"
        assert runner.request("drain", "drained", timeout=60) is True
        got = collector.wait_for(lambda m: len({r["key"] for r in records(m)}) >= total, timeout=60)
        status = runner.request("status", "status")
    finally:
        runner.stop()
        collector.close()

    received = records(got)
    by_key: dict[str, list[dict[str, object]]] = {}
    for r in received:
        by_key.setdefault(str(r["key"]), []).append(r)
    assert sorted(r[0]["record"]["n"] for r in by_key.values()) == list(range(total))  # type: ignore[index]
    for copies in by_key.values():
        # A duplicate is the very same record: same key, same seq, same content.
        assert all(c == copies[0] for c in copies)
    for lane in LANES:
        assert status["lanes"][lane]["depth"] == 0
        first_seen: list[int] = []
        seen: set[str] = set()
        for r in received:
            if r["lane"] == lane and r["key"] not in seen:
                seen.add(str(r["key"]))
                first_seen.append(int(r["record"]["lane_n"]))
        assert first_seen == sorted(first_seen)  # order kept within a lane across the crash
