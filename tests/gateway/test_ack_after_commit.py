"""ACK only after the raw frame is committed: kill -9 between receive and commit, replay, ACK.

The gateway runs as a real process (`python -m gateway run`). A test hook
(EDGELINE_GATEWAY_TEST_STALL_BEFORE_COMMIT) makes it write a marker file and
stall just before committing a batch holding DATA; the test then kills it
with SIGKILL, as a power cut would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from gateway.pipeline import STALL_ENV
from gateway.rawlog import read_all
from shared_protocol.decode import decode
from tests.gateway.mqtt_util import Client
from tests.gateway.simdevice import SimDevice, historical
from tests.support.upy import ROOT


def write_config(tmp_path: Path, broker: Any) -> Path:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(
        f"""
[gateway]
id = "gw1"
site = "s1"
data_dir = "{tmp_path / "data"}"
status_interval_s = 0.2

[mqtt]
host = "{broker.host}"
port = {broker.port}
"""
    )
    return cfg


def start_gateway(cfg: Path, tmp_path: Path, env_extra: dict[str, str]) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != STALL_ENV}
    env.update(env_extra)
    with open(tmp_path / "gateway.log", "ab") as log:  # the child keeps its own copy
        return subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "-c", str(cfg), "--log-level", "debug"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def wait_status(tmp_path: Path, pid: int, timeout: float = 15.0) -> dict[str, Any]:
    """The status file of gateway process `pid` once it is connected."""
    path = tmp_path / "data" / "status.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            st = json.loads(path.read_text())
            if st["pid"] == pid and st["ingest"]["connected"]:
                return st  # type: ignore[no-any-return]
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            pass
        time.sleep(0.05)
    raise TimeoutError("gateway did not report connected: " + (tmp_path / "gateway.log").read_text())


def stored(tmp_path: Path, device: str) -> set[int]:
    return {r.seq for r in read_all(tmp_path / "data" / "rawlog.sqlite", device)}


def acked_seqs(messages: list[tuple[str, bytes, float]]) -> set[int]:
    out: set[int] = set()
    for topic, payload, _ in messages:
        if topic.endswith("/ack"):
            for _b, first, last in decode(payload).fields["ranges"]:
                out.update(range(first, last + 1))
    return out


def test_kill_between_receive_and_commit_then_replay_is_acked(tmp_path: Path, mosquitto: Any) -> None:
    cfg = write_config(tmp_path, mosquitto)
    marker = tmp_path / "stalled"
    dev = SimDevice("pump-1")
    c = Client(mosquitto.host, mosquitto.port, client_id="pump-1")
    c.subscribe(dev.topic("ack"))

    gw = start_gateway(cfg, tmp_path, {STALL_ENV: str(marker)})
    try:
        wait_status(tmp_path, gw.pid)
        time.sleep(0.3)  # its SUBACK
        c.publish(dev.topic("birth"), dev.birth())  # no DATA: committed and ACKed normally
        c.wait_for(lambda t, p: t.endswith("/ack"))
        unacked = [dev.data() for _ in range(3)]  # seq 2, 3, 4
        for f in unacked:
            c.publish(dev.topic("data"), f)
        deadline = time.monotonic() + 15
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert marker.exists(), "gateway never reached the commit with DATA"
        # Received, not committed: nothing of it on disk, no ACK for it.
        assert stored(tmp_path, "pump-1") == {1}
        assert not acked_seqs(c.drain(0.3)) & {2, 3, 4}
        os.kill(gw.pid, signal.SIGKILL)
        gw.wait(10)
    finally:
        if gw.poll() is None:
            gw.kill()
            gw.wait()
    assert stored(tmp_path, "pump-1") == {1}

    # Restart without the hook; the device replays what was never ACKed, flagged historical.
    gw2 = start_gateway(cfg, tmp_path, {})
    try:
        wait_status(tmp_path, gw2.pid)
        time.sleep(0.3)
        for f in unacked:
            c.publish(dev.topic("data"), historical(f))
        c.publish(dev.topic("data"), dev.data())  # and carries on live (seq 5)
        got: set[int] = set()
        deadline = time.monotonic() + 15
        while not {2, 3, 4, 5} <= got and time.monotonic() < deadline:
            got |= acked_seqs([c.wait_for(lambda t, p: t.endswith("/ack"), timeout=15)])
        assert {2, 3, 4, 5} <= got
        assert stored(tmp_path, "pump-1") == {1, 2, 3, 4, 5}
        # The schema came back from the registry: no rebirth needed, every reading decoded.
        st = wait_status(tmp_path, gw2.pid)
        deadline = time.monotonic() + 5
        while st["frames"]["readings"] < 4 * 96 and time.monotonic() < deadline:
            time.sleep(0.1)
            st = wait_status(tmp_path, gw2.pid)
        assert st["frames"]["readings"] == 4 * 96 and st["rebirth_requests"] == 0
    finally:
        gw2.send_signal(signal.SIGTERM)
        assert gw2.wait(20) == 0
        c.close()
