"""A record leaves the queue on the cloud broker's PUBACK, never on publish: with every PUBACK held
back by a relay, the records reach the broker but stay in forward.db; after a kill -9 a restarted
forwarder sends every one of them again, with the same key and content."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.forward.helpers import Collector, Runner, forward_config, queue_rows, records
from tests.forward.relay import MQTTRelay
from tests.support.mosquitto import Mosquitto

LANES = ["alert", "registry", "summary", "raw"]


def test_records_stay_queued_until_puback(mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path) -> None:
    cloud = mosquitto_factory()
    collector = Collector(cloud)
    relay = MQTTRelay(cloud.host, cloud.port, hold_pubacks=True)
    data = tmp_path / "data"
    total = 24  # below max_inflight: paho puts every record on the wire without waiting for a PUBACK
    items = [(LANES[i % 4], {"n": i}) for i in range(total - 1)]
    runner = Runner(tmp_path, forward_config(cloud, host=relay.host, port=relay.port, max_inflight=32), "gwp", data)
    try:
        runner.submit_many(items)
        assert runner.request("flush", "flushed") is True
        relay.wait("published", total - 1)  # every record went through the relay to the broker ...
        relay.wait("withheld", total - 1)  # ... which acknowledged each one; the relay dropped the PUBACKs
        # A commit after the publishes: it carries every delete the forwarder has decided on by now.
        runner.submit_many([("registry", {"n": total - 1})])
        assert runner.request("flush", "flushed") is True
        relay.wait("published", total)
        got = collector.wait_for(lambda m: len(records(m)) >= total)
        status = runner.request("status", "status")

        rows = queue_rows(data / "forward.db")
        assert sorted(rec["n"] for _lane, _seq, rec in rows) == list(range(total))  # nothing deleted
        assert sum(lane["acked"] for lane in status["lanes"].values()) == 0
        assert sum(lane["sent"] for lane in status["lanes"].values()) == total
    finally:
        runner.kill()  # SIGKILL: no chance to tidy up
        relay.close()

    first = {r["key"]: r for r in records(got)}
    assert sorted(r["record"]["n"] for r in first.values()) == list(range(total))

    # Restart with a direct connection: every record is still queued and is sent again.
    runner = Runner(tmp_path, forward_config(cloud), "gwp", data)
    try:
        assert runner.ready["recovery"]["state"] == "ok"
        assert runner.request("drain", "drained", timeout=60) is True
        again = collector.wait_for(lambda m: len(records(m)) >= 2 * total)
    finally:
        runner.stop()
        collector.close()
    resent = records(again)[len(records(got)) :]
    assert sorted(r["record"]["n"] for r in resent) == list(range(total))
    for r in resent:
        assert r == first[r["key"]]  # the same key, seq, epoch and content as the copy the broker acked
