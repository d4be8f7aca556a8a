"""The CircuitPython MQTT stack on a MicroPython-family runtime: the pinned MiniMQTT and its
dependencies (tools/fetch_upy_deps.CP_PINS) on the unix port, through CircuitPython's
`socketpool` API (firmware/cpsim), against a real Mosquitto and a paho client."""

from __future__ import annotations

import signal
import socket
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.upy import ROOT, run_micropython, spawn_micropython
from tests.support.waiting import wait_until
from tools.fetch_upy_deps import CP_PINS, DEFAULT_ARCHIVES, DEFAULT_CP_CACHE, FetchError, read_archive, unpack
from tools.mosquitto import Mosquitto

HERE = Path(__file__).resolve().parent
CP_PATH = (ROOT / "firmware" / "cpsim", DEFAULT_CP_CACHE)


def test_the_circuitpython_libraries_are_the_pinned_files() -> None:
    for pin in CP_PINS:
        for member, content in unpack(pin, read_archive(pin)).items():
            assert (DEFAULT_CP_CACHE / member).read_bytes() == content, (pin.filename, member)
    assert {p.version for p in CP_PINS if p.project == "adafruit-circuitpython-minimqtt"} == {"8.1.0"}


def test_a_tampered_library_wheel_is_refused(tmp_path: Path) -> None:
    pin = CP_PINS[0]
    data = bytearray((DEFAULT_ARCHIVES / pin.filename).read_bytes())
    data[len(data) // 2] ^= 0x01
    (tmp_path / pin.filename).write_bytes(bytes(data))
    with pytest.raises(FetchError, match=f"not the pinned {pin.sha256}"):
        read_archive(pin, tmp_path)


def test_socketpool_keeps_circuitpython_semantics() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            assert conn.recv(2) == b"go"
            conn.sendall(b"hello")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        res = run_micropython([str(HERE / "upy_socketpool_semantics.py"), str(port)], micropypath=CP_PATH)
    finally:
        server.close()
    out = res.stdout.decode() + res.stderr.decode()
    assert res.returncode == 0 and "OK" in out, out


class Peer:
    """The other side: paho, subscribed to the device's topics."""

    def __init__(self, broker: Mosquitto, prefix: str) -> None:
        self.got: dict[str, list[bytes]] = {}
        self.lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="peer")
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.subscribe(prefix + "/#", qos=1)
        self.client.loop_start()

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.got.setdefault(msg.topic, []).append(bytes(msg.payload))

    def of(self, topic: str) -> list[bytes]:
        with self.lock:
            return list(self.got.get(topic, []))

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_minimqtt_publishes_subscribes_and_leaves_its_will(mosquitto: Mosquitto, tmp_path: Path) -> None:
    prefix = "edgeline/s1/cp-test"
    peer = Peer(mosquitto, prefix)
    log = (tmp_path / "client.log").open("wb")
    proc = spawn_micropython(
        [str(HERE / "upy_minimqtt_client.py"), str(mosquitto.port), prefix],
        micropypath=CP_PATH,
        cwd=tmp_path,
        stdout=log,
    )
    try:
        # binary payloads both ways, QoS 1, every byte value intact
        births = wait_until(lambda: peer.of(prefix + "/birth"), what="BIRTH from MiniMQTT")
        assert births == [bytes(range(256))], (tmp_path / "client.log").read_text()
        cmd = b"\x07\x00\xff\x80 cmd"
        peer.client.publish(prefix + "/cmd", cmd, qos=1)
        assert wait_until(lambda: peer.of(prefix + "/ack"), what="the echoed command") == [cmd]
        assert not peer.of(prefix + "/death")
        # a board that dies (power cut, crash): the broker publishes its last will
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert wait_until(lambda: peer.of(prefix + "/death"), what="the last will") == [b"\x05gone"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        peer.stop()
