"""Sequence numbers are never reused within a lane, even when every record of the lane was acknowledged
and deleted and the forwarder is then killed with SIGKILL (no close, so nothing saved on the way out)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.forward.helpers import Collector, Runner, forward_config, queue_rows, records, wait_until
from tests.support.mosquitto import Mosquitto

LANES = ["alert", "registry", "summary", "raw"]


def test_seq_increases_across_kill_9_of_a_drained_queue(
    mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path
) -> None:
    cloud = mosquitto_factory()
    collector = Collector(cloud)
    data = tmp_path / "data"
    per_round = 3
    try:
        for run in range(3):
            runner = Runner(tmp_path, forward_config(cloud), "gws", data)
            try:
                runner.submit_many([(lane, {"run": run, "n": i}) for i in range(per_round) for lane in LANES])
                want = (run + 1) * per_round * len(LANES)
                collector.wait_for(lambda m, want=want: len({r["key"] for r in records(m)}) >= want)
                # Every record acknowledged and its delete committed: the lanes are empty in the file.
                wait_until(lambda: not queue_rows(data / "forward.db"), "queue file empty")
            finally:
                runner.kill()
        got = records(collector.snapshot())
    finally:
        collector.close()

    unique = {r["key"]: r for r in got}
    assert len(unique) == 3 * per_round * len(LANES)
    assert len({r["epoch"] for r in unique.values()}) == 3  # one epoch per run
    for lane in LANES:
        for run in range(1, 3):
            before = [r["seq"] for r in unique.values() if r["lane"] == lane and r["record"]["run"] < run]
            after = [r["seq"] for r in unique.values() if r["lane"] == lane and r["record"]["run"] == run]
            assert min(after) > max(before), f"lane {lane}: run {run} reused seq {sorted(after)} <= {max(before)}"
        in_order = [r["seq"] for r in got if r["lane"] == lane]
        assert in_order == sorted(set(in_order))  # one copy each, in increasing order
