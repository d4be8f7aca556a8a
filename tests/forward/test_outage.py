"""Cloud broker outage under load: everything accepted is delivered, in lane order, alerts first."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from gateway.forward import ForwardConfig, Forwarder
from tests.forward.helpers import Collector, forward_config, records
from tests.support.mosquitto import Mosquitto

LANE_ORDER = ["alert", "registry", "summary", "raw"]


def _wait(cond: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.01)
    raise AssertionError("condition not met")


def test_outage_then_restart_delivers_everything_alerts_first(
    mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path
) -> None:
    local = mosquitto_factory()  # the gateway's own broker keeps running: the cloud link is what fails
    cloud = mosquitto_factory()
    collector = Collector(cloud)
    fwd = Forwarder(ForwardConfig.from_dict(forward_config(cloud)), "gw1", tmp_path / "data")
    fwd.start()
    try:
        _wait(lambda: fwd.status()["connection"]["state"] == "connected")
        fwd.submit("summary", {"n": -1, "phase": "before"})
        assert fwd.wait_drained(20)
        collector.wait_for(lambda m: len(records(m)) == 1)

        cloud.stop()
        _wait(lambda: fwd.status()["connection"]["state"] != "connected")
        # Load during the outage, lanes interleaved, from two threads at once.
        submitted: dict[str, list[int]] = {lane: [] for lane in LANE_ORDER}
        lock = threading.Lock()

        def produce(offset: int) -> None:
            for i in range(offset, 1200, 2):
                lane = LANE_ORDER[(i * 7) % 4] if i % 10 else "alert"
                fwd.submit(lane, {"n": i, "payload": "x" * (i % 50)})
                with lock:
                    submitted[lane].append(i)

        threads = [threading.Thread(target=produce, args=(k,)) for k in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert fwd.flush(20)
        status = fwd.status()
        assert status["connection"]["state"] != "connected"
        assert sum(status["lanes"][lane]["depth"] for lane in LANE_ORDER) == 1200
        assert local.running  # the local side never depended on the cloud

        cloud.start()
        assert fwd.wait_drained(60), fwd.status()
        got = collector.wait_for(lambda m: len(records(m)) >= 1201)
    finally:
        fwd.stop()
        collector.close()

    outage = [r for r in records(got) if r["record"].get("phase") != "before"]
    keys = [r["key"] for r in outage]
    assert len(set(keys)) == 1200  # nothing lost
    # First copy of each record, in arrival order.
    seen: set[str] = set()
    first = []
    for r in outage:
        if r["key"] not in seen:
            seen.add(r["key"])
            first.append(r)
    lanes_in_arrival = [r["lane"] for r in first]
    # Strict lane priority after the outage: all alerts, then registry, then summaries, then raw.
    assert lanes_in_arrival == sorted(lanes_in_arrival, key=LANE_ORDER.index)
    for lane in LANE_ORDER:
        mine = [r for r in first if r["lane"] == lane]
        assert sorted(r["record"]["n"] for r in mine) == sorted(submitted[lane])
        seqs = [r["seq"] for r in mine]
        assert seqs == sorted(seqs)  # order kept within a lane
        assert all(r["key"] == f"gw1/{lane}/{r['epoch']}-{r['seq']}" for r in mine)


def test_alert_overtakes_a_backlog_of_summaries(mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path) -> None:
    cloud = mosquitto_factory()
    collector = Collector(cloud)
    # A capped drain rate keeps a backlog of summaries in front of the alert.
    cfg = ForwardConfig.from_dict(forward_config(cloud, drain_limit_messages_per_s=300.0, max_inflight=8))
    fwd = Forwarder(cfg, "gwp", tmp_path / "data")
    fwd.start()
    try:
        for i in range(600):
            fwd.submit("summary", {"n": i})
        collector.wait_for(lambda m: len(records(m)) >= 30)
        fwd.submit("alert", {"urgent": True})
        assert fwd.wait_drained(60)
        got = collector.wait_for(lambda m: len({r["key"] for r in records(m)}) >= 601)
    finally:
        fwd.stop()
        collector.close()
    order = [r["lane"] for r in records(got)]
    # The alert went out ahead of most of the backlog instead of after all 600 summaries.
    assert order.index("alert") < 300
