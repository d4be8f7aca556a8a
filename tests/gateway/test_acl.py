"""Per-device credentials and the ACL of deploy/mosquitto/edgeline.acl, on a real Mosquitto."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from tests.gateway.mqtt_util import Client
from tests.support.upy import ROOT

ACL = (ROOT / "deploy" / "mosquitto" / "edgeline.acl").read_text()


def test_device_can_publish_only_under_its_own_id(mosquitto_factory: Callable[..., Any]) -> None:
    broker = mosquitto_factory(users={"pump-1": "pw-one-xx", "pump-2": "pw-two-xx", "gateway": "gw-secret"}, acl=ACL)
    gw = Client(broker.host, broker.port, client_id="gw", username="gateway", password="gw-secret")
    gw.subscribe("el/#")
    dev = Client(
        broker.host, broker.port, client_id="p1", username="pump-1", password="pw-one-xx", protocol=mqtt.MQTTv5
    )
    dev.subscribe("el/s1/+/cmd")
    # Allowed: its own data. Denied: another device's data, its own ACK topic, an alert.
    ok = dev.publish("el/s1/pump-1/data", b"mine")
    denied = [dev.publish(t, b"forged") for t in ("el/s1/pump-2/data", "el/s1/pump-1/ack", "el/s1/pump-1/alert")]
    dev.publish("el/s1/pump-1/health", b"marker")
    got = gw.drain()
    topics = [t for t, _, _ in got]
    assert "el/s1/pump-1/data" in topics and "el/s1/pump-1/health" in topics
    assert not [t for t, p, _ in got if p == b"forged"], topics
    # MQTT 5 tells the device why in the PUBACK.
    assert not dev.puback_reason(ok).is_failure
    assert [dev.puback_reason(d).getName() for d in denied] == ["Not authorized"] * 3
    # CMD for another device never reaches pump-1, its own does.
    gw.publish("el/s1/pump-2/cmd", b"for-2")
    gw.publish("el/s1/pump-1/cmd", b"for-1")
    received = [p for t, p, _ in dev.drain()]
    assert received == [b"for-1"]
    dev.close()
    gw.close()


def test_wrong_password_and_anonymous_refused(mosquitto_factory: Callable[..., Any]) -> None:
    broker = mosquitto_factory(users={"pump-1": "pw-one-xx"}, acl=ACL)
    for user, pw in (("pump-1", "wrong"), (None, None)):
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="x")
        if user:
            c.username_pw_set(user, pw)
        results: list[Any] = []
        c.on_connect = lambda cl, u, f, rc, p, results=results: results.append(rc)
        c.connect(broker.host, broker.port)
        for _ in range(100):
            c.loop(0.05)
            if results:
                break
        c.loop_stop()
        assert results and results[0].is_failure


def test_add_device_cli_creates_private_password_file(tmp_path: Path, mosquitto_factory: Callable[..., Any]) -> None:
    import subprocess
    import sys

    pw_file = tmp_path / "passwd"
    secret = tmp_path / "pump-9.secret"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "add-device",
            "pump-9",
            "--password-file",
            str(pw_file),
            "--generate",
            "--secret-out",
            str(secret),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    password = secret.read_text().strip()
    assert password not in r.stdout and password not in r.stderr  # never echoed when written to a file
    assert pw_file.stat().st_mode & 0o777 == 0o600 and secret.stat().st_mode & 0o777 == 0o600
    assert pw_file.read_text().startswith("pump-9:$7$")
    # Password given on stdin (a pipe), another device.
    r2 = subprocess.run(
        [sys.executable, "-m", "gateway", "add-device", "gateway", "--password-file", str(pw_file)],
        input="gateway-pw-123\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert r2.returncode == 0, r2.stderr
    assert "gateway-pw-123" not in r2.stdout + r2.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "gateway", "add-device", "bad/id", "--password-file", str(pw_file), "--generate"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert bad.returncode == 2 and "device id" in bad.stderr
    # The file works with a real broker and the ACL.
    acl_path = tmp_path / "acl"
    acl_path.write_text(ACL)
    broker = mosquitto_factory(extra_conf=f"password_file {pw_file}\nacl_file {acl_path}\nallow_anonymous false")
    gw = Client(broker.host, broker.port, client_id="gw", username="gateway", password="gateway-pw-123")
    gw.subscribe("el/#")
    dev = Client(broker.host, broker.port, client_id="p9", username="pump-9", password=password)
    dev.publish("el/s1/pump-9/data", b"hello")
    dev.publish("el/s1/pump-1/data", b"forged")
    payloads = [p for _, p, _ in gw.drain()]
    assert payloads == [b"hello"]
    dev.close()
    gw.close()


def test_gateway_and_device_work_under_the_shipped_acl(tmp_path: Path, mosquitto_factory: Callable[..., Any]) -> None:
    """The ACL grants the gateway what it needs: read device frames, write ACK / CMD / alerts / status."""
    import threading

    import numpy as np

    from gateway.config import from_dict
    from gateway.runner import Runner
    from shared_protocol.decode import decode
    from tests.gateway.simdevice import RMSModel, SimDevice

    broker = mosquitto_factory(
        users={"gateway": "gw-secret-1", "pump-1": "pump-pw-1", "valve-1": "valve-pw-1", "monitor": "mon-pw-1"},
        acl=ACL,
    )
    secret = tmp_path / "gw.secret"
    secret.write_text("gw-secret-1\n")
    secret.chmod(0o600)
    cfg = from_dict(
        {
            "gateway": {"id": "gw1", "site": "s1", "data_dir": str(tmp_path / "data")},
            "mqtt": {"host": broker.host, "port": broker.port, "username": "gateway", "password_file": str(secret)},
            "pipelines": [{"name": "vib", "model": "unused.json", "devices": ["pump-*"]}],
            "rules": [{"on_alert_from": "pump-*", "device": "valve-1", "output": 0}],
        }
    )
    runner = Runner(cfg, models={"vib": RMSModel()})
    t = threading.Thread(target=runner.run, daemon=True)
    t.start()
    try:
        assert runner.mqtt.connected.wait(10)
        monitor = Client(broker.host, broker.port, client_id="mon", username="monitor", password="mon-pw-1")
        monitor.subscribe("el/s1/+/alert")
        monitor.subscribe("el/s1/_gateway/status")
        valve = Client(broker.host, broker.port, client_id="valve-1", username="valve-1", password="valve-pw-1")
        valve.subscribe("el/s1/valve-1/cmd")
        pump = SimDevice("pump-1")
        dev = Client(broker.host, broker.port, client_id="pump-1", username="pump-1", password="pump-pw-1")
        dev.subscribe("el/s1/pump-1/ack")
        time.sleep(0.3)
        dev.publish(pump.topic("birth"), pump.birth())
        for _ in range(4):
            dev.publish(pump.topic("data"), pump.data())
        fault = pump.raw_block(lambda t: np.stack([4000 * np.sin(2 * np.pi * 37 * t), 0 * t, 0 * t], axis=1))
        dev.publish(pump.topic("data"), pump.data(fault))
        acked: set[int] = set()
        while not set(range(1, 7)) <= acked:
            _t, p, _ = dev.wait_for(lambda topic, p: topic.endswith("/ack"))
            for _b, first, last in decode(p).fields["ranges"]:
                acked.update(range(first, last + 1))
        monitor.wait_for(lambda topic, p: topic == "el/s1/pump-1/alert")
        monitor.wait_for(lambda topic, p: topic == "el/s1/_gateway/status" and json.loads(p)["online"])
        _t, cmd, _ = valve.wait_for(lambda topic, p: True)
        assert decode(cmd).fields["op"] == 5  # CMD_SET_OUTPUT
        for c in (monitor, valve, dev):
            c.close()
    finally:
        runner.stop_event.set()
        t.join(20)
