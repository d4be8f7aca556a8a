"""Per-device credentials and the generated ACL (`edgeline-gateway broker-config`), on a real
Mosquitto started with the generated configuration (tests/gateway/site_broker.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gateway.runner import Runner
from shared_protocol import CMD_SET_OUTPUT
from shared_protocol.decode import decode
from shared_protocol.topics import DEVICE_KINDS
from tests.gateway.doubles import RMSModel
from tests.gateway.mqtt_util import Client
from tests.gateway.site_broker import SiteBroker
from tests.support.simdevice import SimDevice, ack_seqs
from tests.support.upy import ROOT

USERS = {"pump-1": "pw-one-xx", "pump-2": "pw-two-xx", "gateway": "gw-secret"}


def test_device_can_publish_only_under_its_own_id_in_its_own_site(tmp_path: Path) -> None:
    with SiteBroker(tmp_path, users=USERS) as broker:
        gw = Client(broker.host, broker.port, client_id="gw", username="gateway", password="gw-secret")
        gw.subscribe("#")
        dev = Client(
            broker.device_host,
            broker.device_port,
            client_id="pump-1",
            username="pump-1",
            password="pw-one-xx",
            protocol=mqtt.MQTTv5,
        )
        dev.subscribe("el/s1/+/cmd")
        # Every device -> gateway kind of the protocol is allowed under its own id (the ACL is
        # generated from topics.DEVICE_KINDS).
        for kind in DEVICE_KINDS:
            assert not dev.puback_reason(dev.publish(f"el/s1/pump-1/{kind}", b"")).is_failure, kind
        # Allowed: its own data in its site. Denied: another device's data, its own ACK topic, an
        # alert, and its own data under another site or prefix.
        ok = dev.publish("el/s1/pump-1/data", b"mine")
        forged = (
            "el/s1/pump-2/data",
            "el/s1/pump-1/ack",
            "el/s1/pump-1/alert",
            "el/s2/pump-1/data",
            "x/s1/pump-1/data",
            # the gateway's own retained topics: not even its own availability, state or switch
            "el/s1/_state/pump-1/availability",
            "el/s1/_state/pump-1/state",
            "el/s1/_state/pump-1/alert/vib",
            "el/s1/_state/pump-2/output/0/set",
            "el/s1/_gateway/status",
            "homeassistant/sensor/pump-1/ax/config",
        )
        denied = [dev.publish(t, b"forged") for t in forged]
        dev.publish("el/s1/pump-1/health", b"marker")
        got = gw.drain()
        topics = [t for t, _, _ in got]
        assert "el/s1/pump-1/data" in topics and "el/s1/pump-1/health" in topics
        assert not [t for t, p, _ in got if p == b"forged"], topics
        # MQTT 5 tells the device why in the PUBACK.
        assert not dev.puback_reason(ok).is_failure
        assert [dev.puback_reason(d).getName() for d in denied] == ["Not authorized"] * len(forged)
        # CMD for another device never reaches pump-1, its own does.
        gw.publish("el/s1/pump-2/cmd", b"for-2")
        gw.publish("el/s1/pump-1/cmd", b"for-1")
        received = [p for t, p, _ in dev.drain()]
        assert received == [b"for-1"]
        dev.close()
        gw.close()


def _connect_result(host: str, port: int, user: str | None, password: str | None) -> Any:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="x")
    if user:
        c.username_pw_set(user, password)
    results: list[Any] = []
    c.on_connect = lambda cl, u, f, rc, p: results.append(rc)
    c.connect(host, port)
    for _ in range(200):
        c.loop(0.05)
        if results:
            break
    c.disconnect()
    return results[0] if results else None


def test_wrong_password_and_anonymous_refused_on_both_listeners(tmp_path: Path) -> None:
    with SiteBroker(tmp_path, users=USERS) as broker:
        for host, port in ((broker.host, broker.port), (broker.device_host, broker.device_port)):
            for user, pw in (("pump-1", "wrong"), (None, None)):
                rc = _connect_result(host, port, user, pw)
                assert rc is not None and rc.is_failure, (host, port, user)
            assert not _connect_result(host, port, "pump-1", "pw-one-xx").is_failure


def _cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], input=stdin, capture_output=True, text=True, cwd=ROOT, check=False
    )


def test_add_device_cli_creates_private_password_file(tmp_path: Path) -> None:
    broker = SiteBroker(tmp_path)  # no users yet: add-device creates broker.password_file
    pw_file = broker.config.broker.password_file
    secret = tmp_path / "pump-9.secret"
    # -c: the password file is broker.password_file of the gateway's configuration.
    r = _cli("add-device", "pump-9", "-c", str(broker.toml), "--generate", "--secret-out", str(secret))
    assert r.returncode == 0, r.stderr
    password = secret.read_text().strip()
    assert password not in r.stdout and password not in r.stderr  # never echoed when written to a file
    assert pw_file.stat().st_mode & 0o777 == 0o600 and secret.stat().st_mode & 0o777 == 0o600
    assert pw_file.read_text().startswith("pump-9:$7$")
    # Password given on stdin (a pipe), another user, the file named explicitly.
    r2 = _cli("add-device", "gateway", "--password-file", str(pw_file), stdin="gateway-pw-123\n")
    assert r2.returncode == 0, r2.stderr
    assert "gateway-pw-123" not in r2.stdout + r2.stderr
    bad = _cli("add-device", "bad/id", "--password-file", str(pw_file), "--generate")
    assert bad.returncode == 2 and "device id" in bad.stderr
    # The file works with the real broker and the ACL.
    with broker:
        gw = Client(broker.host, broker.port, client_id="gw", username="gateway", password="gateway-pw-123")
        gw.subscribe("el/#")
        dev = Client(broker.device_host, broker.device_port, client_id="p9", username="pump-9", password=password)
        dev.publish("el/s1/pump-9/data", b"hello")
        dev.publish("el/s1/pump-1/data", b"forged")
        payloads = [p for _, p, _ in gw.drain()]
        assert payloads == [b"hello"]
        dev.close()
        gw.close()


def test_gateway_and_device_work_under_the_generated_acl(tmp_path: Path) -> None:
    """The ACL grants the gateway what it needs: read device frames, write ACK / CMD / alerts / status."""
    users = {"gateway": "gw-secret-1", "pump-1": "pump-pw-1", "valve-1": "valve-pw-1", "monitor": "mon-pw-1"}
    extra = (
        '[[pipelines]]\nname = "vib"\nmodel = "unused.json"\ndevices = ["pump-*"]\n'
        '[[rules]]\non_alert_from = "pump-*"\ndevice = "valve-1"\noutput = 0\n'
    )
    with SiteBroker(tmp_path, users=users, extra_toml=extra) as broker:
        runner = Runner(broker.config, models={"vib": RMSModel()})
        t = threading.Thread(target=runner.run, daemon=True)
        t.start()
        try:
            monitor = Client(broker.host, broker.port, client_id="mon", username="monitor", password="mon-pw-1")
            monitor.subscribe("el/s1/+/alert")
            monitor.subscribe("el/s1/_gateway/status")
            # The gateway subscribes before it publishes its status: once "online" is seen, its
            # subscriptions are in place.
            monitor.wait_for(lambda topic, p: topic == "el/s1/_gateway/status" and json.loads(p)["online"])
            host, port = broker.device_host, broker.device_port
            valve = Client(host, port, client_id="valve-1", username="valve-1", password="valve-pw-1")
            valve.subscribe("el/s1/valve-1/cmd")
            pump = SimDevice("pump-1")
            dev = Client(host, port, client_id="pump-1", username="pump-1", password="pump-pw-1")
            dev.subscribe(pump.topic("ack"))
            dev.publish(pump.topic("birth"), pump.birth())
            for _ in range(4):
                dev.publish(pump.topic("data"), pump.data())
            fault = pump.raw_block(lambda t: np.stack([4000 * np.sin(2 * np.pi * 37 * t), 0 * t, 0 * t], axis=1))
            dev.publish(pump.topic("data"), pump.data(fault))
            acked: set[int] = set()
            while not set(range(1, 7)) <= acked:
                acked |= ack_seqs([dev.wait_for(lambda topic, p: topic == pump.topic("ack"))[1]])
            monitor.wait_for(lambda topic, p: topic == "el/s1/pump-1/alert")
            _t, cmd, _ = valve.wait_for(lambda topic, p: True)
            assert decode(cmd).fields["op"] == CMD_SET_OUTPUT
            for c in (monitor, valve, dev):
                c.close()
        finally:
            runner.stop_event.set()
            t.join(20)
