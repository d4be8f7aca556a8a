"""Spoofing with a device credential, against the generated (shipped) broker configuration and
the gateway: a forged sequence jump, and floods of unknown device ids.

Client-id takeover and publishing under another site: tests/gateway/test_broker_sessions.py
and tests/gateway/test_acl.py.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gateway.rawlog import read_all
from gateway.registry import read_devices
from gateway.runner import Runner
from tests.gateway.doubles import RMSModel
from tests.gateway.mqtt_util import Client
from tests.gateway.site_broker import SiteBroker
from tests.support.gateway_proc import GatewayProcess
from tests.support.simdevice import SimDevice, ack_seqs, kind_of
from tests.support.waiting import wait_until

USERS = {"gateway": "gw-secret-1", "pump-1": "pump-pw-1"}
PIPELINE = '[[pipelines]]\nname = "vib"\nmodel = "unused.json"\ndevices = ["pump-*"]\n'


def _acked(dev: Client, want: set[int]) -> None:
    got: set[int] = set()

    def more() -> bool:
        _t, p, _ = dev.wait_for(lambda topic, p: kind_of(topic) == "ack", timeout=15)
        got.update(ack_seqs([p]))
        return want <= got

    wait_until(more, what=f"ACKs of {sorted(want)}")


def _running(broker: SiteBroker) -> tuple[Runner, threading.Thread]:
    runner = Runner(broker.config, models={"vib": RMSModel()})
    t = threading.Thread(target=runner.run, daemon=True)
    t.start()
    wait_until(runner.mqtt.subscribed.is_set, what="the gateway's SUBACK")
    return runner, t


def test_a_forged_sequence_jump_does_not_stop_the_devices_scoring(tmp_path: Path) -> None:
    with SiteBroker(tmp_path, users=USERS, extra_toml=PIPELINE) as broker:
        runner, t = _running(broker)
        try:
            pump = SimDevice("pump-1")
            dev = Client(
                broker.device_host, broker.device_port, client_id="pump-1", username="pump-1", password="pump-pw-1"
            )
            dev.subscribe("el/s1/pump-1/ack")
            dev.publish(pump.topic("birth"), pump.birth())
            for _ in range(4):
                dev.publish(pump.topic("data"), pump.data())
            # One CRC-valid frame a million numbers ahead, with the device's own credential.
            forged = SimDevice("pump-1", seq=pump.seq + 1_000_000)
            dev.publish(pump.topic("data"), forged.data())
            for _ in range(4):
                dev.publish(pump.topic("data"), pump.data())
            _acked(dev, set(range(1, pump.seq + 1)))
            gw = runner.gateway
            wait_until(lambda: gw.pipeline_windows("pump-1").get("samples") == 8 * 32, what="all samples windowed")
            c = gw.sequence.counters["pump-1"]
            assert (c.suspect, c.gaps, c.missing_frames) == (1, 0, 0)
            w = gw.pipeline_windows("pump-1")
            assert w["gaps"] == 0 and w["late_frames"] == 0 and w["windows"] > 0
            dev.close()
        finally:
            runner.stop_event.set()
            t.join(20)
        seqs = {r.seq for r in read_all(broker.dir / "data" / "rawlog.sqlite", "pump-1")}
        assert seqs == set(range(1, 10)) and forged.seq not in seqs


def test_a_device_credential_cannot_flood_other_ids_past_the_broker(tmp_path: Path) -> None:
    with SiteBroker(tmp_path, users=USERS, extra_toml=PIPELINE) as broker:
        runner, t = _running(broker)
        try:
            dev = Client(
                broker.device_host, broker.device_port, client_id="pump-1", username="pump-1", password="pump-pw-1"
            )
            dev.subscribe("el/s1/pump-1/ack")
            for i in range(2000):
                fake = SimDevice(f"flood-{i}")
                dev.c.publish(fake.topic("birth"), fake.birth(), qos=0)
            pump = SimDevice("pump-1")
            dev.publish(pump.topic("birth"), pump.birth())  # after the flood, in order
            _acked(dev, {1})
            assert set(runner.gateway.registry.devices) == {"pump-1"}
            assert runner.gateway.admission.quarantined_frames == 0  # the ACL stopped them all
            dev.close()
        finally:
            runner.stop_event.set()
            t.join(20)


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def test_an_unknown_id_flood_on_an_open_broker_is_quarantined(tmp_path: Path, mosquitto: Any) -> None:
    """20,000 invented ids on a broker without authentication: bounded state, nothing stored."""
    gw = GatewayProcess(tmp_path / "gw", mosquitto.port, extra_toml="[registry]\nmax_devices = 20\n").start()
    try:
        pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="flooder")
        pub.connect(mosquitto.host, mosquitto.port)
        pub.loop_start()
        real = [SimDevice(f"pump-{i}") for i in range(5)]
        for d in real:
            pub.publish(d.topic("birth"), d.birth(), qos=1).wait_for_publish(10)
        wait_until(lambda: len(read_devices(gw.data / "registry.sqlite")) == 5, what="5 real devices registered")
        assert gw.proc is not None
        before = _rss_kb(gw.proc.pid)
        for i in range(20_000):
            fake = SimDevice(f"flood-{i}")
            pub.publish(fake.topic("birth"), fake.birth(), qos=0)
            pub.publish(fake.topic("data"), fake.data(), qos=0)
        marker = real[0]
        pub.publish(marker.topic("data"), marker.data(), qos=1).wait_for_publish(30)
        wait_until(lambda: (1, marker.seq) in gw.stored("pump-0"), 60, "the frame sent after the flood")
        stored_at = time.time()
        st = wait_until(lambda: (s := gw.status()) and s["written_at"] > stored_at and s, what="a newer status")
        after = _rss_kb(gw.proc.pid)
        pub.loop_stop()
        pub.disconnect()
    finally:
        gw.stop()
    a = st["admission"]
    assert a["admitted"] == 20 and a["quarantined_ids"] <= 256
    assert len(read_devices(gw.data / "registry.sqlite")) == 20  # 5 real + the first 15 invented
    assert st["rebirth_requests"] <= 20
    print(a, st["ingest"]["queue"], st["frames"]["received"])
    assert a["quarantined_frames"] + st["ingest"]["queue"]["dropped"] >= 2 * (20_000 - 15) - 100
    growth_mb = (after - before) / 1024
    print(f"gateway RSS {before / 1024:.1f} MB -> {after / 1024:.1f} MB over a 20,000-id flood")
    assert growth_mb < 20, growth_mb
