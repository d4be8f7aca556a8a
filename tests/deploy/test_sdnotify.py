"""sd_notify (gateway/sdnotify.py) and the gateway as systemd's Type=notify unit sees it: a real
AF_UNIX datagram socket stands in for systemd, the real ``python -m gateway run`` process and a
real Mosquitto. READY=1 only once subscribed, WATCHDOG=1 while the processing loop runs and not
once it hangs, STOPPING=1 on SIGTERM."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.sdnotify import Notifier
from tests.support.gateway_proc import GatewayProcess
from tests.support.mosquitto import Mosquitto
from tests.support.simdevice import SimDevice
from tests.support.upy import ROOT
from tests.support.waiting import wait_until

WATCHDOG_USEC = 1_000_000  # WatchdogSec=1: the gateway pings every 0.25 s


class FakeSystemd:
    """The service manager's end: a bound datagram socket; every message with its arrival time."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self.lock = threading.Lock()
        self.closed = False
        self.thread = threading.Thread(target=self._receive, daemon=True)
        self.thread.start()

    def _receive(self) -> None:
        while not self.closed:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines())
            with self.lock:
                self.messages.append((time.monotonic(), fields))

    def with_key(self, key: str) -> list[tuple[float, dict[str, str]]]:
        with self.lock:
            return [m for m in self.messages if key in m[1]]

    def close(self) -> None:
        self.closed = True
        self.thread.join(5)
        self.sock.close()

    def env(self) -> dict[str, str]:
        """The environment of a process under this manager: $NOTIFY_SOCKET, $WATCHDOG_USEC. Only
        the gateway gets it: Debian's Mosquitto speaks sd_notify too (its READY=1 is not ours)."""
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_PID")}
        return {**env, "NOTIFY_SOCKET": self.address, "WATCHDOG_USEC": str(WATCHDOG_USEC)}


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[FakeSystemd]:
    fake = FakeSystemd(str(tmp_path / "notify.sock"))
    yield fake
    fake.close()


@pytest.mark.parametrize("abstract", [False, True])
def test_notifier_sends_one_datagram_per_call(tmp_path: Path, abstract: bool) -> None:
    address = f"@edgeline-test-{os.getpid()}" if abstract else str(tmp_path / "n.sock")
    fake = FakeSystemd(address)
    n = Notifier(address)
    try:
        assert n.enabled
        assert n.ready("running") and n.watchdog() and n.stopping("bye")
        msgs = wait_until(lambda: len(fake.messages) == 3 and fake.messages, 5, "three datagrams")
        assert [m[1] for m in msgs] == [
            {"READY": "1", "STATUS": "running"},
            {"WATCHDOG": "1"},
            {"STOPPING": "1", "STATUS": "bye"},
        ]
    finally:
        n.close()
        fake.close()


def test_notifier_without_systemd_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    n = Notifier()
    assert not n.enabled and not n.ready("x") and not n.watchdog()
    gone = Notifier("/nonexistent/notify.sock")  # systemd went away: logged, never raised
    assert gone.enabled and not gone.watchdog()
    gone.close()


def test_watchdog_interval_follows_watchdog_usec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert Notifier("").watchdog_interval_s == 7.5
    monkeypatch.setenv("WATCHDOG_PID", "1")  # meant for another process
    assert Notifier("").watchdog_interval_s == 1.0


def test_ready_after_subscription_watchdog_while_running_stopping_on_sigterm(
    tmp_path: Path, systemd: FakeSystemd
) -> None:
    broker = Mosquitto(tmp_path / "broker")  # not started yet: the gateway waits for it
    gw = GatewayProcess(tmp_path / "gw", broker.port)
    try:
        with open(gw.log, "ab") as log:
            gw.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway", "run", "-c", str(gw.config)],
                cwd=ROOT,
                env=systemd.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        # Alive but not ready while the broker is down.
        wait_until(lambda: len(systemd.with_key("WATCHDOG")) >= 3, 20, "WATCHDOG=1 before the broker is up")
        waiting = [m[1]["STATUS"] for m in systemd.with_key("STATUS")]
        assert waiting and all(s.startswith("waiting for the broker 127.0.0.1:") for s in waiting), waiting
        assert not systemd.with_key("READY")
        broker_up = time.monotonic()
        broker.start()
        ready_at, ready = wait_until(lambda: systemd.with_key("READY"), 30, "READY=1")[0]
        assert ready_at > broker_up and ready["STATUS"].startswith("running: 0/0 devices online"), ready
        wait_until(lambda: (st := gw.status()) and st["ingest"]["subscribed"], 10, "status: subscribed")
        assert len(systemd.with_key("READY")) == 1
        # WATCHDOG keeps coming after READY, from the running loop.
        wait_until(lambda: len([t for t, _ in systemd.with_key("WATCHDOG") if t > ready_at]) >= 8, 20, "pings")
        pings = [t for t, _ in systemd.with_key("WATCHDOG") if t > ready_at]
        assert max(b - a for a, b in itertools.pairwise(pings)) < WATCHDOG_USEC / 1e6
        assert gw.proc is not None
        gw.proc.send_signal(signal.SIGTERM)
        assert gw.proc.wait(30) == 0
        assert len(systemd.with_key("STOPPING")) == 1
    finally:
        gw.kill()
        broker.stop()


def test_a_stalled_gateway_stops_pinging_the_watchdog(tmp_path: Path, systemd: FakeSystemd) -> None:
    """The raw log's commit hangs (tests/support/stalling_gateway.py): processing waits for the
    writer, the loop stops, so do the WATCHDOG pings, and systemd would restart the process."""
    broker = Mosquitto(tmp_path / "broker").start()
    gw = GatewayProcess(tmp_path / "gw", broker.port)
    marker = tmp_path / "stalled"
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="pump-1")
    try:
        with open(gw.log, "ab") as log:
            gw.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.support.stalling_gateway", str(gw.config), str(marker), "stall"],
                cwd=ROOT,
                env=systemd.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_until(lambda: systemd.with_key("READY"), 30, "READY=1")
        pub.connect(broker.host, broker.port)
        pub.loop_start()
        dev = SimDevice("pump-1", site="s1")
        pub.publish(dev.topic("birth"), dev.birth(), qos=1)

        def watchdog_silent() -> bool:
            # Frames keep coming, one batch each, until the writer's queue is full and the loop waits.
            pub.publish(dev.topic("data"), dev.data(), qos=1).wait_for_publish(5)
            last = systemd.with_key("WATCHDOG")[-1][0]
            return marker.exists() and time.monotonic() - last > 2.0

        wait_until(watchdog_silent, 60, "the WATCHDOG=1 pings to stop", poll=0.05)
        assert gw.proc.poll() is None, "the gateway exited; it should hang (that is what the watchdog is for)"
        assert not systemd.with_key("STOPPING")
    finally:
        pub.disconnect()
        pub.loop_stop()
        gw.kill()
        broker.stop()
