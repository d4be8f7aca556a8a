"""The demo's fallback broker (amqtt, for machines without Mosquitto) carries QoS 1 traffic."""

from __future__ import annotations

import queue
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tools.demo.brokers import AmqttBroker, make_broker
from tools.mosquitto import Mosquitto


def test_amqtt_broker_pub_sub_stop_start(tmp_path: Path) -> None:
    broker = AmqttBroker(tmp_path / "amqtt").start()
    try:
        inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
        sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="sub")
        suback = threading.Event()
        sub.on_message = lambda _c, _u, m: inbox.put((m.topic, m.payload))
        sub.on_connect = lambda c, _u, _f, _rc, _p: c.subscribe("el/#", qos=1)
        sub.on_subscribe = lambda _c, _u, _mid, _rcs, _p: suback.set()
        sub.connect(broker.host, broker.port)
        sub.loop_start()
        assert suback.wait(10), "no SUBACK from amqtt"
        pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="pub")
        pub.connect(broker.host, broker.port)
        pub.loop_start()
        pub.publish("el/s/d/data", b"\x01\x02", qos=1).wait_for_publish(5)
        assert inbox.get(timeout=5) == ("el/s/d/data", b"\x01\x02")
        for c in (pub, sub):
            c.disconnect()
            c.loop_stop()
        port = broker.port
        broker.stop()
        assert not broker.running
        broker.start()
        assert broker.running and broker.port == port
    finally:
        broker.kill()


def test_make_broker_prefers_mosquitto_and_honours_a_choice(tmp_path: Path) -> None:
    assert isinstance(make_broker(tmp_path / "a"), Mosquitto)
    assert isinstance(make_broker(tmp_path / "b", "amqtt"), AmqttBroker)
