"""The gateway against a real Mosquitto: ingest, rebirth, alerts, actuator commands, status."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gateway.config import from_dict
from gateway.ingest import FrameQueue, MQTTIngest, MQTTSettings, RawFrame
from gateway.runner import Runner
from shared_protocol import CMD_REBIRTH, CMD_SET_OUTPUT
from shared_protocol.decode import decode
from tests.gateway.doubles import RMSModel
from tests.gateway.mqtt_util import Client
from tests.support.simdevice import SimDevice, ack_seqs
from tests.support.waiting import wait_until


def config(tmp_path: Path, broker: Any, **extra: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "gateway": {"id": "gw1", "site": "s1", "data_dir": str(tmp_path / "data"), "status_interval_s": 0.2},
        "mqtt": {"host": broker.host, "port": broker.port},
        "pipelines": [{"name": "vib", "model": "unused.json", "devices": ["pump-*"]}],
        "rules": [
            {
                "name": "valve",
                "on_alert_from": "pump-*",
                "device": "valve-1",
                "output": 0,
                "duration_s": 5.0,
                "cooldown_s": 60.0,
            }
        ],
        "summary": {"interval_s": 0.5},
    }
    d.update(extra)
    return d


@pytest.fixture
def running(tmp_path: Path, mosquitto: Any) -> Iterator[tuple[Runner, Any]]:
    runner = Runner(from_dict(config(tmp_path, mosquitto)), models={"vib": RMSModel()})
    t = threading.Thread(target=runner.run, daemon=True)
    t.start()
    assert runner.mqtt.subscribed.wait(10)  # SUBACK: nothing a test publishes is missed
    yield runner, mosquitto
    runner.stop_event.set()
    t.join(10)
    assert not t.is_alive()


def test_frame_queue_counts_drops_and_high_water() -> None:
    q = FrameQueue(4, block_timeout_s=0.0)
    frames = [RawFrame("t", bytes([i]), float(i)) for i in range(6)]
    assert [q.put(f) for f in frames] == [True, True, True, True, False, False]
    st = q.stats()
    assert (st.depth, st.high_water, st.enqueued, st.dropped, st.blocked_events) == (4, 4, 4, 2, 2)
    assert [f.payload for f in q.get_batch(3, 0)] == [b"\x00", b"\x01", b"\x02"]
    assert [f.payload for f in q.get_batch(10, 0)] == [b"\x03"]
    assert q.get_batch(10, 0.01) == []


def test_frame_queue_logs_drops_once_per_interval_and_refuses_after_stop(caplog: pytest.LogCaptureFixture) -> None:
    q = FrameQueue(1, block_timeout_s=0.0)
    with caplog.at_level(logging.WARNING, logger="gateway.ingest"):
        assert [q.put(RawFrame("t", bytes([i]), 0.0)) for i in range(4)] == [True, False, False, False]
    drops = [r for r in caplog.records if "ingest queue full" in r.getMessage()]
    assert len(drops) == 1 and "1 frame(s) dropped" in drops[0].getMessage()  # every drop counted, logged once
    assert q.stats().dropped == 3
    q.stop_intake()  # a stop, or a raw log that cannot be written: what is queued stays
    assert not q.put(RawFrame("t", b"late", 0.0))
    assert q.stats().refused_after_stop == 1 and q.stats().dropped == 3
    assert [f.payload for f in q.get_batch(10, 0)] == [b"\x00"]


def test_frame_queue_blocks_the_producer_until_consumer_drains() -> None:
    q = FrameQueue(2, block_timeout_s=5.0)
    q.put(RawFrame("t", b"a", 0))
    q.put(RawFrame("t", b"b", 0))
    done = threading.Event()

    def producer() -> None:
        q.put(RawFrame("t", b"c", 0))
        done.set()

    threading.Thread(target=producer, daemon=True).start()
    assert not done.wait(0.2)  # full: the producer (paho's thread) waits
    assert len(q.get_batch(10, 0)) == 2
    assert done.wait(5)
    st = q.stats()
    assert st.dropped == 0 and st.blocked_events == 1 and st.blocked_s > 0


def test_ingest_hands_frames_over_in_order(mosquitto: Any) -> None:
    q = FrameQueue(1000)
    ing = MQTTIngest(MQTTSettings(mosquitto.host, mosquitto.port, "ingest-test"), q, prefix="el", site="s1")
    ing.start()
    assert ing.subscribed.wait(10)  # SUBACK: the broker routes the device's frames from here on
    dev = Client(mosquitto.host, mosquitto.port, client_id="dev")
    for i in range(50):
        dev.publish("el/s1/pump-1/data", bytes([i]))
    dev.publish("el/s2/pump-1/data", b"other site")
    got: list[RawFrame] = []
    deadline = time.monotonic() + 10
    while len(got) < 50 and time.monotonic() < deadline:
        got += q.get_batch(100, 0.2)
    ing.stop()
    dev.close()
    assert [f.payload for f in got] == [bytes([i]) for i in range(50)]
    assert all(f.topic == "el/s1/pump-1/data" and f.received > 0 for f in got)


def test_unknown_device_is_asked_to_rebirth_over_mqtt(running: tuple[Runner, Any]) -> None:
    runner, broker = running
    dev = SimDevice("pump-3")
    dev.birth()  # lost: published before the gateway was listening
    c = Client(broker.host, broker.port, client_id="pump-3")
    c.subscribe(dev.topic("cmd"))
    c.subscribe(dev.topic("ack"))
    c.publish(dev.topic("data"), dev.data())
    _t, payload, _ = c.wait_for(lambda t, p: t == dev.topic("cmd"))
    assert decode(payload).fields["op"] == CMD_REBIRTH
    c.publish(dev.topic("birth"), dev.birth())
    c.publish(dev.topic("data"), dev.data())
    acked: set[int] = set()
    while not {2, 3, 4} <= acked:
        acked |= ack_seqs([c.wait_for(lambda t, p: t == dev.topic("ack"))[1]])
    wait_until(lambda: runner.gateway.counters.readings >= 32 * 3, timeout=10, what="96 readings decoded")
    assert runner.gateway.counters.readings == 32 * 3  # the DATA after BIRTH, decoded
    assert runner.gateway.pipeline_windows("pump-3")["samples"] == 64  # held frame + new one
    c.close()


def test_alert_and_actuator_command_over_mqtt(running: tuple[Runner, Any], tmp_path: Path) -> None:
    _runner, broker = running
    monitor = Client(broker.host, broker.port, client_id="monitor")
    monitor.subscribe("el/s1/+/alert")
    monitor.subscribe("el/s1/_gateway/summary")
    valve = Client(broker.host, broker.port, client_id="valve-1")
    valve.subscribe("el/s1/valve-1/cmd")
    pump = SimDevice("pump-1")
    c = Client(broker.host, broker.port, client_id="pump-1")
    c.publish(pump.topic("birth"), pump.birth())
    for _ in range(4):
        c.publish(pump.topic("data"), pump.data())
    fault = pump.raw_block(lambda t: np.stack([4000 * np.sin(2 * np.pi * 37 * t), 0 * t, 0 * t], axis=1))
    c.publish(pump.topic("data"), pump.data(fault))
    _t, payload, _ = monitor.wait_for(lambda t, p: t == "el/s1/pump-1/alert")
    alert = json.loads(payload)
    assert alert["device"] == "pump-1" and alert["score"] > alert["threshold"]
    assert alert["model_version"] == "rms-test-1" and alert["historical"] is False
    _t, cmd, _ = valve.wait_for(lambda t, p: True)
    frame = decode(cmd)
    assert frame.fields["op"] == CMD_SET_OUTPUT
    assert (frame.fields["output"], frame.fields["value"], frame.fields["duration_ms"]) == (0, 1, 5000)
    _t, summary, _ = monitor.wait_for(lambda t, p: t.endswith("/summary") and json.loads(p)["device"] == "pump-1")
    s = json.loads(summary)
    assert s["count"] >= 32 and "ax" in s["channels"]
    # status.json (what `edgeline-gateway status` prints) reflects it

    def counted() -> dict[str, Any] | None:
        st: dict[str, Any] = json.loads((tmp_path / "data" / "status.json").read_text())
        return st if st["alerts"] >= 1 and st["commands"] >= 1 else None

    st = wait_until(counted, timeout=5, what="the alert and the command in status.json")
    assert st["alerts"] >= 1 and st["commands"] == 1 and st["ingest"]["connected"] is True
    assert st["ingest"]["queue"]["dropped"] == 0
    for cl in (monitor, valve, c):
        cl.close()
