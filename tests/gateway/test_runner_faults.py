"""The running gateway process under faults: a raw log that cannot be written stops it at
once, and SIGTERM under a backlog that keeps coming ends in bounded time, ACKing only what
it stored. Real Mosquitto, real ``python -m gateway run`` processes."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gateway.runner import DRAIN_S
from shared_protocol.decode import decode
from tests.support.gateway_proc import GatewayProcess
from tests.support.mosquitto import Mosquitto
from tests.support.simdevice import SimDevice, device_of
from tests.support.upy import ROOT
from tests.support.waiting import wait_until


class AckListener:
    """Every (device, boot, seq) the gateway ACKs on the broker."""

    def __init__(self, broker: Mosquitto) -> None:
        self.acked: set[tuple[str, int, int]] = set()
        self.subscribed = threading.Event()
        self.lock = threading.Lock()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="ack-listener")
        c.on_connect = lambda cl, *_: cl.subscribe("el/s1/+/ack", qos=1)
        c.on_subscribe = lambda *_: self.subscribed.set()
        c.on_message = self._on_message
        c.connect(broker.host, broker.port)
        c.loop_start()
        self.client = c
        assert self.subscribed.wait(10)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        device = device_of(msg.topic)
        with self.lock:
            for boot, first, last in decode(msg.payload).fields["ranges"]:
                self.acked.update((device, boot, s) for s in range(first, last + 1))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _publisher(broker: Mosquitto, client_id: str) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    c.max_queued_messages_set(0)
    c.connect(broker.host, broker.port)
    c.loop_start()
    return c


def test_a_failed_commit_stops_the_gateway_at_once_and_acks_nothing(tmp_path: Path, mosquitto: Mosquitto) -> None:
    gw = GatewayProcess(tmp_path, mosquitto.port)
    marker = tmp_path / "failed"
    with open(gw.log, "ab") as log:
        gw.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.stalling_gateway", str(gw.config), str(marker), "fail"],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        gw.wait_subscribed()
        acks = AckListener(mosquitto)
        pub = _publisher(mosquitto, "pump-1")
        dev = SimDevice("pump-1", site="s1")
        pub.publish(dev.topic("birth"), dev.birth(), qos=1)
        pub.publish(dev.topic("data"), dev.data(), qos=1)
        wait_until(marker.exists, what="the failing commit")
        # It stops by itself: intake closed, no drain, exit status 2 with the reason.
        rc = gw.proc.wait(DRAIN_S)
        pub.disconnect()
        pub.loop_stop()
        acks.close()
    finally:
        gw.kill()  # only if it is still running (a failure above)
    out = gw.log.read_text()
    assert rc == 2, out[-2000:]
    assert "raw log could not be written" in out and "database or disk is full" in out
    assert not {a for a in acks.acked if a[0] == "pump-1" and a[2] >= 2}  # the DATA was never ACKed


def test_sigterm_under_a_backlog_that_keeps_coming_ends_in_bounded_time(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """300 devices publish new frames as fast as they can, far beyond what the gateway processes,
    so its ingest queue stays full. SIGTERM closes intake, processes what was queued and exits
    well within DRAIN_S; every frame it ACKed is in its raw log."""
    gw = GatewayProcess(tmp_path, mosquitto.port, extra_toml="[ingest]\nqueue_size = 1000\nblock_timeout_ms = 0\n")
    devices = [SimDevice(f"d{i:03d}", site="s1") for i in range(300)]
    births = [(d.topic("birth"), d.birth()) for d in devices]
    # New frames (a duplicate costs the gateway next to nothing), device after device.
    frames = [(d.topic("data"), d.data()) for _ in range(40) for d in devices]
    stop = threading.Event()

    def flood() -> None:
        pub = _publisher(mosquitto, "flood")
        for topic, payload in births:
            pub.publish(topic, payload, qos=1)
        while not stop.is_set():
            for topic, payload in frames:
                pub.publish(topic, payload, qos=0)
                if stop.is_set():
                    break
        pub.disconnect()
        pub.loop_stop()

    gw.start()
    acks = AckListener(mosquitto)
    t = threading.Thread(target=flood, daemon=True)
    t.start()
    try:
        # Loaded: the queue has been full (frames dropped, counted, never ACKed).
        wait_until(lambda: (st := gw.status()) and st["ingest"]["queue"]["dropped"] > 0, 60, "a full ingest queue")
        assert gw.proc is not None
        t0 = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)
        rc = gw.proc.wait(DRAIN_S + 10)
        took = time.monotonic() - t0
    finally:
        stop.set()
        t.join(10)
        gw.kill()  # only if it is still running (a failure above)
        acks.close()
    log = gw.log.read_text()
    assert rc == 0, log[-3000:]
    assert took < DRAIN_S, f"stop took {took:.1f} s"
    assert "intake closed" in log
    stored = {(d.device, b, s) for d in devices for b, s in gw.stored(d.device)}
    assert acks.acked, "nothing was ACKed"
    assert acks.acked <= stored, sorted(acks.acked - stored)[:10]
