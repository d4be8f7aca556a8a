"""The local state topics (gateway/localstate.py): availability across BIRTH, DEATH, silence
and a reconnect within one boot, the rate-limited JSON state, alert states, the summary on
the local broker with a forwarder, and (real Mosquitto) what a new subscriber gets."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.config import from_dict
from gateway.ingest import RawFrame
from gateway.pipeline import Gateway
from gateway.runner import Runner
from shared_protocol.gw_topics import alert_state_topic, output_command_topic, state_topic
from shared_protocol.topics import DEVICE_KINDS, subscription
from tests.gateway.doubles import RMSModel
from tests.gateway.mqtt_util import Client
from tests.support.runner_thread import runner_thread
from tests.support.simdevice import SimDevice
from tools.demo.linkcut import LinkCut

T0 = float(int(time.time()))
AVAIL = state_topic("el", "s1", "pump-1", "availability")
STATE = state_topic("el", "s1", "pump-1", "state")
ALERT = alert_state_topic("el", "s1", "pump-1", "vib")


class Retained(list[tuple[str, bytes, bool]]):
    """A publisher that records (topic, payload, retain)."""

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> bool:
        self.append((topic, payload, retain))
        return True

    def on(self, topic: str) -> list[bytes]:
        return [p for t, p, r in self if t == topic and r]


def make(tmp_path: Path, now: list[float], **extra: Any) -> tuple[Gateway, Retained, list[Any]]:
    data: dict[str, Any] = {
        "gateway": {"id": "gw1", "site": "s1", "data_dir": str(tmp_path / "data")},
        "pipelines": [{"name": "vib", "model": "unused.json", "devices": ["pump-*"]}],
        "registry": {"offline_after_s": 30},
        "summary": {"interval_s": 60},
        **extra,
    }
    pub = Retained()
    forwarded: list[Any] = []
    gw = Gateway(
        from_dict(data, base_dir=tmp_path),
        pub,
        submit=lambda lane, rec: forwarded.append((lane, rec)),
        models={"vib": RMSModel()},
        clock=lambda: now[0],
    )
    return gw, pub, forwarded


def rx(dev: SimDevice, kind: str, payload: bytes, at: float) -> list[RawFrame]:
    return [RawFrame(dev.topic(kind), payload, at)]


def test_availability_follows_birth_death_reconnect_within_a_boot_and_silence(tmp_path: Path) -> None:
    now = [T0]
    gw, pub, fwd = make(tmp_path, now)
    dev = SimDevice("pump-1")
    gw.process(rx(dev, "birth", dev.birth(), now[0]) + rx(dev, "data", dev.data(), now[0]))
    gw.tick()
    assert pub.on(AVAIL) == [b"online"]
    state = json.loads(pub.on(STATE)[-1])
    assert state["online"] is True and state["boot"] == 1 and state["fw_version"] == "1.2.3"
    assert state["channels"]["ax"]["unit"] == "g" and state["channels"]["temp"]["value"] == pytest.approx(25.0)
    assert state["health"]["rssi"] is None  # present before any HEALTH: templates never miss a key
    assert json.loads(pub.on(ALERT)[-1])["state"] == "cleared"

    # The connection dies: the broker hands the gateway the device's will.
    now[0] += 1
    gw.process(rx(dev, "death", dev.death(), now[0]))
    gw.tick()
    assert pub.on(AVAIL) == [b"online", b"offline"]
    # It reconnects within the same boot: clears its retained DEATH (empty, ignored) and births again.
    now[0] += 1
    gw.process(rx(dev, "death", b"", now[0]) + rx(dev, "birth", dev.birth(), now[0]))
    gw.tick()
    assert pub.on(AVAIL) == [b"online", b"offline", b"online"]
    assert gw.registry.devices["pump-1"].boot == 1

    # A DEATH of an older boot (firmware that does not clear it) does not take a rebooted device down.
    now[0] += 1
    old = SimDevice("pump-1", boot=1, seq=50)
    dev.boot, dev.seq = 2, 0
    gw.process(rx(dev, "birth", dev.birth(), now[0]) + rx(old, "death", old.death(), now[0]))
    gw.tick()
    assert gw.registry.devices["pump-1"].online and pub.on(AVAIL)[-1] == b"online"

    # Silence, then data again.
    now[0] += 31
    gw.tick()
    assert pub.on(AVAIL)[-1] == b"offline"
    now[0] += 1
    gw.process(rx(dev, "data", dev.data(), now[0]))
    gw.tick()
    assert pub.on(AVAIL) == [b"online", b"offline", b"online", b"offline", b"online"]
    # The cloud learns both sides of the silence (registry lane; Sparkplug: DDEATH, then DBIRTH).
    events = [(r["event"], r.get("reason")) for lane, r in fwd if lane == "registry" and r.get("device") == "pump-1"]
    assert events[-2:] == [("offline", "silence"), ("online", "data")]
    gw.close()


def test_state_is_published_on_change_at_most_every_interval(tmp_path: Path) -> None:
    now = [T0]
    gw, pub, _ = make(tmp_path, now, state={"interval_s": 5})
    dev = SimDevice("pump-1")
    gw.process(rx(dev, "birth", dev.birth(), now[0]) + rx(dev, "health", dev.health(rssi=-71), now[0]))
    for _ in range(40):  # 40 frames over 12 s, a tick after each
        gw.process(rx(dev, "data", dev.data(), now[0]))
        gw.tick()
        now[0] += 0.3
    states = [json.loads(p) for p in pub.on(STATE)]
    assert len(states) == 3  # at 0, 5 and 10 s
    assert states[-1]["health"]["rssi"] == -71 and states[-1]["samples"] > states[0]["samples"]
    gw.tick()  # nothing changed since: nothing more, even after the interval
    now[0] += 10
    gw.tick()
    gw.tick()
    assert len(pub.on(STATE)) == 4  # the change of the last 0.3 s, once
    now[0] += 10
    gw.tick()
    assert len(pub.on(STATE)) == 4
    assert len(pub.on(AVAIL)) == 1
    gw.close()


def test_alert_state_topic_on_each_transition(tmp_path: Path) -> None:
    now = [T0]
    gw, pub, _ = make(tmp_path, now)
    dev = SimDevice("pump-1")
    gw.process(rx(dev, "birth", dev.birth(), now[0]))
    gw.tick()
    base = {"alert_id": "pump-1/vib/1", "device": "pump-1", "pipeline": "vib", "since": now[0], "cleared_at": None}
    for state, score in (("raised", 3.0), ("updated", 4.0), ("updated", 5.0), ("cleared", 0.5)):
        gw.live.alert({**base, "state": state, "score": score})
        gw.tick()
    got = [json.loads(p) for p in pub.on(ALERT)]
    assert [(g["state"], g["alert_id"]) for g in got] == [
        ("cleared", None),
        ("raised", "pump-1/vib/1"),
        ("cleared", "pump-1/vib/1"),
    ]
    assert got[1]["score"] == 3.0
    now[0] += 6
    gw.tick()
    assert json.loads(pub.on(STATE)[-1])["alerts"]["vib"]["state"] == "cleared"
    gw.close()


def test_summary_is_published_locally_with_a_forwarder_too(tmp_path: Path) -> None:
    now = [T0]
    gw, pub, forwarded = make(tmp_path, now, summary={"interval_s": 1})
    dev = SimDevice("pump-1")
    gw.process(rx(dev, "birth", dev.birth(), now[0]) + rx(dev, "data", dev.data(), now[0]))
    now[0] += 2
    gw.tick()
    local = [json.loads(p) for t, p, _ in pub if t == "el/s1/_gateway/summary"]
    assert [r["count"] for r in local] == [32]
    assert [r["count"] for lane, r in forwarded if lane == "summary"] == [32]
    gw.close()


def test_remove_clears_the_retained_topics(tmp_path: Path) -> None:
    now = [T0]
    gw, pub, _ = make(tmp_path, now)
    dev = SimDevice("pump-1")
    gw.process(rx(dev, "birth", dev.birth(), now[0]))
    gw.tick()
    pub.clear()
    gw.local_state.remove("pump-1")
    assert sorted(t for t, p, r in pub if r and p == b"") == sorted([AVAIL, STATE, ALERT])
    gw.close()


def test_state_topics_are_not_matched_by_the_ingest_subscription() -> None:
    subs = [subscription("el", "s1", "+", kind) for kind in DEVICE_KINDS]
    ours = [AVAIL, STATE, ALERT, output_command_topic("el", "s1", "pump-1", 0)]
    for topic in ours:
        assert not any(mqtt.topic_matches_sub(s, topic) for s in subs), topic
    assert mqtt.topic_matches_sub("el/s1/_state/#", AVAIL)


# ---------------------------------------------------------------------- real Mosquitto


@pytest.fixture
def running(tmp_path: Path, mosquitto: Any) -> Iterator[Runner]:
    cfg = {
        "gateway": {"id": "gw1", "site": "s1", "data_dir": str(tmp_path / "data"), "status_interval_s": 0.2},
        "mqtt": {"host": mosquitto.host, "port": mosquitto.port},
        "pipelines": [{"name": "vib", "model": "unused.json", "devices": ["pump-*"]}],
        "state": {"interval_s": 0.5},
    }
    with runner_thread(cfg, models={"vib": RMSModel()}) as runner:
        yield runner


class Board:
    """A device's MQTT session as the firmware opens it: retained DEATH as its will, the
    retained DEATH cleared first, then a retained BIRTH (docs/protocol.md, "MQTT topics")."""

    def __init__(self, dev: SimDevice, host: str, port: int) -> None:
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=dev.device)
        self.c.will_set(dev.topic("death"), dev.death(), qos=1, retain=True)
        up = threading.Event()
        self.c.on_connect = lambda *a: up.set()
        self.c.connect(host, port, 5)
        self.c.loop_start()
        assert up.wait(10)
        self.c.publish(dev.topic("death"), b"", qos=1, retain=True).wait_for_publish(10)
        self.c.publish(dev.topic("birth"), dev.birth(), qos=1, retain=True).wait_for_publish(10)

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def retained(host: str, port: int, topics: list[str]) -> dict[str, bytes]:
    """What a new subscriber gets: the retained message of each topic (subscribed in order;
    the last topic must hold one, which marks the end)."""
    got: dict[str, bytes] = {}
    done = threading.Event()
    c = mqtt.Client(CallbackAPIVersion.VERSION2)

    def on_message(client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.retain:
            got[msg.topic] = bytes(msg.payload)
            if msg.topic == topics[-1]:
                done.set()

    c.on_message = on_message
    c.connect(host, port, 5)
    c.loop_start()
    try:
        for t in topics:
            c.subscribe(t, 1)
        assert done.wait(10), f"no retained message on {topics[-1]}"
    finally:
        c.loop_stop()
        c.disconnect()
    return got


def test_reconnect_within_one_boot_on_a_real_broker(running: Runner, mosquitto: Any) -> None:
    link = LinkCut((mosquitto.host, mosquitto.port))
    link.start()
    monitor = Client(mosquitto.host, mosquitto.port, client_id="watcher")
    monitor.subscribe(AVAIL)
    dev = SimDevice("pump-1")
    board = Board(dev, link.host, link.port)
    monitor.wait_for(lambda t, p: p == b"online")
    link.cut()  # no DISCONNECT: the broker publishes the will, retained
    monitor.wait_for(lambda t, p: p == b"offline")
    board.close()
    link.restore()
    board = Board(dev, link.host, link.port)  # same boot, next seq
    monitor.wait_for(lambda t, p: p == b"online")
    kept = retained(mosquitto.host, mosquitto.port, [dev.topic("death"), dev.topic("birth"), AVAIL])
    assert dev.topic("death") not in kept  # cleared by the device: nothing says "down"
    assert kept[AVAIL] == b"online"
    state = json.loads(retained(mosquitto.host, mosquitto.port, [STATE])[STATE])
    assert state["online"] is True and state["boot"] == 1
    board.close()
    monitor.close()
    link.cut()


def test_a_fleet_born_at_once_is_published_within_the_budget_and_nothing_is_left_out(tmp_path: Path) -> None:
    now = [T0]
    gw, pub, _ = make(tmp_path, now, state={"interval_s": 5, "max_rate": 100})
    devs = [SimDevice(f"pump-{i}") for i in range(300)]
    gw.process([f for d in devs for f in rx(d, "birth", d.birth(), now[0])])
    per_tick = []
    for _ in range(40):  # 10 s of ticks every 0.25 s: 100 publishes a second at most
        n = len(pub)
        gw.tick()
        per_tick.append(len(pub) - n)
        now[0] += 0.25
    assert max(per_tick) <= 100 + 3  # a full bucket at first; the last device's few topics may overrun it
    assert sum(per_tick[4:]) <= 100 * 9 + 3 * 36  # then about 25 a tick
    # Every device's availability, alert state and JSON state got out.
    for d in devs:
        assert pub.on(state_topic("el", "s1", d.device, "availability")) == [b"online"], d.device
        assert pub.on(alert_state_topic("el", "s1", d.device, "vib")), d.device
        assert pub.on(state_topic("el", "s1", d.device, "state")), d.device
    assert gw.local_state.deferred > 0
    gw.close()
