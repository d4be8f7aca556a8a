"""The Mosquitto fixture: a real broker with its own config, users, ACL, stop and restart."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt
import pytest

from tests.support.mosquitto import Mosquitto


def client(
    broker: Mosquitto, client_id: str, *, user: str | None = None, password: str | None = None, clean: bool = True
) -> tuple[mqtt.Client, queue.Queue[tuple[str, bytes]]]:
    inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean)
    if user is not None:
        c.username_pw_set(user, password)
    c.on_message = lambda _c, _u, msg: inbox.put((msg.topic, msg.payload))
    c.connect(broker.host, broker.port)
    c.loop_start()
    return c, inbox


def wait_connected(c: mqtt.Client, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not c.is_connected():
        assert time.monotonic() < deadline, "client did not connect"
        time.sleep(0.01)


def close(c: mqtt.Client) -> None:
    c.disconnect()
    c.loop_stop()


def test_publish_subscribe(mosquitto: Mosquitto) -> None:
    sub, inbox = client(mosquitto, "sub")
    wait_connected(sub)
    sub.subscribe("t/#", qos=1)[1]
    time.sleep(0.2)
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
    sub.subscribe("q/#", qos=1)
    time.sleep(0.2)
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
    admin.subscribe("el/#", qos=1)
    time.sleep(0.2)
    dev, _ = client(broker, "dev1", user="dev1", password="dev1-pw")
    wait_connected(dev)
    dev.publish("el/site/dev2/data", b"spoofed", qos=1).wait_for_publish(5)
    dev.publish("el/site/dev1/data", b"own", qos=1).wait_for_publish(5)
    # Only the message under the device's own id gets through.
    assert inbox.get(timeout=5) == ("el/site/dev1/data", b"own")
    time.sleep(0.3)
    assert inbox.empty()
    close(dev)
    # A wrong password is refused.
    bad = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bad")
    bad.username_pw_set("dev1", "wrong")
    codes: list[object] = []
    bad.on_connect = lambda _c, _u, _f, rc, _p: codes.append(rc)
    bad.connect(broker.host, broker.port)
    bad.loop_start()
    deadline = time.monotonic() + 5
    while not codes and time.monotonic() < deadline:
        time.sleep(0.01)
    bad.loop_stop()
    assert codes and getattr(codes[0], "is_failure", False), codes
    close(admin)
