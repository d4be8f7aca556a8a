"""ACK only after the raw frame is committed.

Deterministic checks of the order inside the gateway's commit (a raw-log write held
back or failing: no ACK may leave), and a real process killed with SIGKILL between
receive and commit, then restarted: the device's replay is stored and ACKed. Faults
are injected through constructors (Gateway/Runner take a RawLog), not test hooks.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.config import from_dict
from gateway.ingest import RawFrame
from gateway.pipeline import Gateway
from gateway.rawlog import LogRow, RawLog, SeqStates, read_all
from gateway.writer import CommitFailed
from shared_protocol import DATA
from shared_protocol.decode import decode
from tests.gateway.doubles import Published
from tests.gateway.mqtt_util import Client
from tests.support.simdevice import SimDevice, ack_seqs, device_of, historical, kind_of
from tests.support.upy import ROOT
from tests.support.waiting import wait_until


class HeldRawLog(RawLog):
    """A raw log whose commits with DATA wait for `gate` (or fail when `fail` is set)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, max_bytes=1 << 30, max_age_s=1e9)
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.fail = False

    def commit_batch(self, rows: list[LogRow], seq_states: SeqStates | None = None, *, now: float | None = None) -> int:
        if any(r.type == DATA for r in rows):
            self.entered.set()
            if self.fail:
                raise sqlite3.OperationalError("disk I/O error")
            assert self.gate.wait(30)
        return super().commit_batch(rows, seq_states, now=now)


def _gateway(tmp_path: Path) -> tuple[Gateway, Published, HeldRawLog]:
    cfg = from_dict({"gateway": {"id": "gw1", "site": "s1", "data_dir": str(tmp_path / "data")}})
    (tmp_path / "data").mkdir(parents=True, exist_ok=True)
    rawlog = HeldRawLog(tmp_path / "data" / "rawlog.sqlite")
    pub = Published()
    return Gateway(cfg, pub, rawlog=rawlog), pub, rawlog


def _acked(pub: Published) -> set[int]:
    return ack_seqs([payload for _topic, payload, _qos in pub.kind("ack")])


def test_no_ack_leaves_while_the_raw_log_write_is_in_progress(tmp_path: Path) -> None:
    gw, pub, rawlog = _gateway(tmp_path)
    gw.start_writer()
    dev = SimDevice("pump-1")
    now = time.time()
    gw.process([RawFrame(dev.topic("birth"), dev.birth(), now), RawFrame(dev.topic("data"), dev.data(), now)])
    assert rawlog.entered.wait(10)
    # The writer thread is inside the raw-log write of BIRTH seq 1 + DATA seq 2: nothing of
    # that batch may be ACKed yet (an ACK sent before the write returns is a lie on a crash).
    assert _acked(pub) == set()
    rawlog.gate.set()
    gw.close()
    assert _acked(pub) == {1, 2}
    assert {r.seq for r in read_all(rawlog.path, "pump-1")} == {1, 2}


def test_no_ack_ever_when_the_raw_log_write_fails(tmp_path: Path) -> None:
    gw, pub, rawlog = _gateway(tmp_path)
    rawlog.fail = True
    dev = SimDevice("pump-1")
    with pytest.raises(sqlite3.OperationalError):
        gw.process([RawFrame(dev.topic("birth"), dev.birth(), 1.0), RawFrame(dev.topic("data"), dev.data(), 1.1)])
    assert _acked(pub) == set()
    # On the writer thread the failure is fatal: later batches are refused, never ACKed.
    gw2, pub2, rawlog2 = _gateway(tmp_path / "second")
    rawlog2.fail = True
    failed = threading.Event()
    gw2.start_writer(on_error=lambda exc: failed.set())
    gw2.process([RawFrame(dev.topic("data"), dev.data(), 1.2)])
    assert rawlog2.entered.wait(10)
    # The runner hears of it at once (it stops intake there), not at the next submit.
    assert failed.wait(10)
    with pytest.raises(CommitFailed, match="raw log commit failed"):
        gw2.process([RawFrame(dev.topic("data"), dev.data(), 1.3)])
    assert gw2.close()
    assert _acked(pub2) == set()


def test_the_first_ack_after_a_restart_repeats_what_was_stored_before(tmp_path: Path) -> None:
    """A crash between the commit and the ACK's publish leaves the device holding frames that
    are stored here; nothing would ask for them again. The restarted gateway's first ACK to the
    device repeats its recent stored frames, and never a number it does not hold."""
    cfg = from_dict({"gateway": {"id": "gw1", "site": "s1", "data_dir": str(tmp_path / "data")}})
    dev, other = SimDevice("pump-1"), SimDevice("pump-2")
    now = time.time()  # the raw log evicts by age
    gw = Gateway(cfg, Published())  # its ACKs are "lost": nobody reads them
    gw.process(
        [RawFrame(dev.topic("birth"), dev.birth(), now)]
        + [RawFrame(dev.topic("data"), dev.data(), now) for _ in range(5)]
    )
    gw.close()
    dev.data()  # seq 7: never reaches the gateway
    pub = Published()
    gw2 = Gateway(cfg, pub)
    gw2.process(
        [RawFrame(dev.topic("data"), dev.data(), now + 1), RawFrame(other.topic("birth"), other.birth(), now + 1)]
    )
    ranges = {device_of(t): [tuple(r) for r in decode(p).fields["ranges"]] for t, p, _q in pub.kind("ack")}
    assert ranges == {"pump-1": [(1, 1, 6), (1, 8, 8)], "pump-2": [(1, 1, 1)]}  # 7 is not held here
    pub.clear()
    gw2.process([RawFrame(dev.topic("data"), dev.data(), now + 2)])
    assert _acked(pub) == {9}  # once per device and start
    assert gw2.acker.stats.resynced == 1
    gw2.close()


# --------------------------------------------------------------------------- a real process, kill -9


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


def start_gateway(cfg: Path, tmp_path: Path, *, stall_marker: Path | None = None) -> subprocess.Popen[bytes]:
    if stall_marker is None:
        args = [sys.executable, "-m", "gateway", "run", "-c", str(cfg), "--log-level", "debug"]
    else:
        args = [sys.executable, "-m", "tests.support.stalling_gateway", str(cfg), str(stall_marker)]
    with open(tmp_path / "gateway.log", "ab") as log:  # the child keeps its own copy
        return subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


def read_status(tmp_path: Path, pid: int) -> dict[str, Any] | None:
    try:
        st = json.loads((tmp_path / "data" / "status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return st if st.get("pid") == pid else None  # type: ignore[no-any-return]


def wait_subscribed(tmp_path: Path, pid: int) -> dict[str, Any]:
    """The status file of gateway process `pid` once the broker granted its subscriptions."""

    def check() -> dict[str, Any] | None:
        st = read_status(tmp_path, pid)
        return st if st and st["ingest"]["subscribed"] else None

    try:
        return wait_until(check, what="the gateway's SUBACK")
    except TimeoutError:
        raise TimeoutError("gateway did not subscribe: " + (tmp_path / "gateway.log").read_text()) from None


def stored(tmp_path: Path, device: str) -> set[int]:
    return {r.seq for r in read_all(tmp_path / "data" / "rawlog.sqlite", device)}


def acked_seqs(messages: list[tuple[str, bytes, float]]) -> set[int]:
    return ack_seqs([payload for topic, payload, _ in messages if kind_of(topic) == "ack"])


def test_kill_between_receive_and_commit_then_replay_is_acked(tmp_path: Path, mosquitto: Any) -> None:
    cfg = write_config(tmp_path, mosquitto)
    marker = tmp_path / "stalled"
    dev = SimDevice("pump-1")
    c = Client(mosquitto.host, mosquitto.port, client_id="pump-1")
    c.subscribe(dev.topic("ack"))

    gw = start_gateway(cfg, tmp_path, stall_marker=marker)
    try:
        wait_subscribed(tmp_path, gw.pid)
        c.publish(dev.topic("birth"), dev.birth())  # no DATA: committed and ACKed normally
        c.wait_for(lambda t, p: kind_of(t) == "ack")
        unacked = [dev.data() for _ in range(3)]  # seq 2, 3, 4
        for f in unacked:
            c.publish(dev.topic("data"), f)
        wait_until(marker.exists, what="the gateway to reach the commit holding DATA")
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

    # Restart normally; the device replays what was never ACKed, flagged historical.
    gw2 = start_gateway(cfg, tmp_path)
    try:
        wait_subscribed(tmp_path, gw2.pid)
        for f in unacked:
            c.publish(dev.topic("data"), historical(f))
        c.publish(dev.topic("data"), dev.data())  # and carries on live (seq 5)
        got: set[int] = set()

        def all_acked() -> bool:
            got.update(acked_seqs([c.wait_for(lambda t, p: kind_of(t) == "ack", timeout=15)]))
            return {2, 3, 4, 5} <= got

        wait_until(all_acked, what="ACKs of seq 2..5")
        assert stored(tmp_path, "pump-1") == {1, 2, 3, 4, 5}
        # The schema came back from the registry: no rebirth needed, every reading decoded.
        st = wait_until(
            lambda: (s := read_status(tmp_path, gw2.pid)) and s["frames"]["readings"] >= 4 * 96 and s,
            what="all readings decoded",
        )
        assert st["frames"]["readings"] == 4 * 96 and st["rebirth_requests"] == 0
    finally:
        gw2.send_signal(signal.SIGTERM)
        assert gw2.wait(20) == 0
        c.close()
