"""The Mosquitto fixture: a real broker with its own config, users, ACL, stop and restart."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from tests.support.mosquitto import Mosquitto


def client(
    broker: Mosquitto, client_id: str, *, user: str | None = None, password: str | None = None, clean: bool = True
) -> tuple[mqtt.Client, queue.Queue[tuple[str, bytes]]]:
    inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean, userdata=_Acks())
    if user is not None:
        c.username_pw_set(user, password)
    c.on_message = lambda _c, _u, msg: inbox.put((msg.topic, msg.payload))
    c.on_connect = lambda _c, acks, _f, rc, _p: acks.connack(rc)
    c.on_subscribe = lambda _c, acks, _mid, _rcs, _p: acks.suback.set()
    c.connect(broker.host, broker.port)
    c.loop_start()
    return c, inbox


class _Acks:
    """The broker's answers a test waits for: CONNACK and SUBACK."""

    def __init__(self) -> None:
        self.connected = threading.Event()
        self.codes: list[Any] = []
        self.suback = threading.Event()

    def connack(self, rc: Any) -> None:
        self.codes.append(rc)
        self.connected.set()


def wait_connected(c: mqtt.Client, timeout: float = 5.0) -> None:
    acks: _Acks = c.user_data_get()
    assert acks.connected.wait(timeout), "no CONNACK"
    assert not acks.codes[0].is_failure, acks.codes


def subscribe(c: mqtt.Client, topic: str) -> None:
    """Subscribe at QoS 1 and wait for the broker's SUBACK."""
    acks: _Acks = c.user_data_get()
    acks.suback.clear()
    c.subscribe(topic, qos=1)
    assert acks.suback.wait(5), f"no SUBACK for {topic}"


def close(c: mqtt.Client) -> None:
    c.disconnect()
    c.loop_stop()


def test_publish_subscribe(mosquitto: Mosquitto) -> None:
    sub, inbox = client(mosquitto, "sub")
    wait_connected(sub)
    subscribe(sub, "t/#")
    pub, _ = client(mosquitto, "pub")
    wait_connected(pub)
    pub.publish("t/x", b"hello", qos=1).wait_for_publish(5)
    assert inbox.get(timeout=5) == ("t/x", b"hello")
    close(pub)
    close(sub)


def test_restart_keeps_port_and_persistent_sessions(mosquitto: Mosquitto) -> None:
    port = mosquitto.port
    sub, inbox = client(mosquitto, "durable", clean=False)
    wait_connected(sub)
    subscribe(sub, "q/#")
    close(sub)
    pub, _ = client(mosquitto, "pub")
    wait_connected(pub)
    pub.publish("q/1", b"kept", qos=1).wait_for_publish(5)
    close(pub)
    mosquitto.stop()
    assert not mosquitto.running
    mosquitto.start()
    assert mosquitto.port == port
    sub, inbox = client(mosquitto, "durable", clean=False)
    assert inbox.get(timeout=5) == ("q/1", b"kept")
    close(sub)


def test_kill_is_abrupt(mosquitto: Mosquitto) -> None:
    mosquitto.kill()
    assert not mosquitto.running
    with pytest.raises(OSError):
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="x")
        c.connect(mosquitto.host, mosquitto.port)


def test_users_and_acl(mosquitto_factory: Callable[..., Mosquitto]) -> None:
    acl = "user admin\ntopic readwrite #\n\npattern write el/+/%u/#\n"
    broker = mosquitto_factory(users={"admin": "admin-pw", "dev1": "dev1-pw"}, acl=acl)
    admin, inbox = client(broker, "admin", user="admin", password="admin-pw")
    wait_connected(admin)
    subscribe(admin, "el/#")
    dev, _ = client(broker, "dev1", user="dev1", password="dev1-pw")
    wait_connected(dev)
    dev.publish("el/site/dev2/data", b"spoofed", qos=1).wait_for_publish(5)
    dev.publish("el/site/dev1/data", b"own", qos=1).wait_for_publish(5)
    # Only the message under the device's own id gets through: the broker keeps one
    # client's QoS 1 order, so a spoofed message let through would have come first.
    assert inbox.get(timeout=5) == ("el/site/dev1/data", b"own")
    assert inbox.empty()
    close(dev)
    # A wrong password is refused.
    bad, _ = client(broker, "bad", user="dev1", password="wrong")
    acks: _Acks = bad.user_data_get()
    assert acks.connected.wait(5), "no CONNACK"
    bad.loop_stop()
    assert acks.codes[0].is_failure, acks.codes
    close(admin)
