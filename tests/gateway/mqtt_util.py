"""Small paho helpers for gateway tests (real broker, real client)."""

from __future__ import annotations

import queue
import ssl
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


class Client:
    """A connected paho client that records every message it receives."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str = "",
        username: str | None = None,
        password: str | None = None,
        protocol: Any = mqtt.MQTTv311,
        will: tuple[str, bytes] | None = None,
        tls: ssl.SSLContext | None = None,
    ):
        self.messages: queue.Queue[tuple[str, bytes, float]] = queue.Queue()
        self._aside: list[tuple[str, bytes, float]] = []
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
        if username is not None:
            self.c.username_pw_set(username, password)
        if will is not None:
            self.c.will_set(will[0], will[1], qos=1)
        if tls is not None:
            self.c.tls_set_context(tls)
        self.connected = threading.Event()
        self.connect_rc: Any = None
        self.subacks: list[Any] = []
        self._suback = threading.Event()
        self.c.on_connect = self._on_connect
        self.c.on_message = lambda c, u, m: self.messages.put((m.topic, bytes(m.payload), time.time()))
        self.c.on_subscribe = self._on_subscribe
        self.puback: dict[int, Any] = {}
        self.c.on_publish = lambda c, u, mid, rc, props: self.puback.__setitem__(mid, rc)
        self.c.connect(host, port, 30)
        self.c.loop_start()
        if not self.connected.wait(10):
            raise TimeoutError(f"no CONNACK from {host}:{port}")

    def _on_connect(self, c: Any, u: Any, flags: Any, rc: Any, props: Any) -> None:
        self.connect_rc = rc
        self.connected.set()

    def _on_subscribe(self, c: Any, u: Any, mid: Any, rcs: Any, props: Any) -> None:
        self.subacks.append(rcs)
        self._suback.set()

    def subscribe(self, topic: str, qos: int = 1) -> None:
        self._suback.clear()
        self.c.subscribe(topic, qos)
        if not self._suback.wait(10):
            raise TimeoutError(f"no SUBACK for {topic}")

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> Any:
        info = self.c.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(10)
        return info

    def puback_reason(self, info: Any) -> Any:
        """The broker's PUBACK reason code for a QoS 1 publish (MQTT 5 carries it)."""
        return self.puback.get(info.mid)

    def wait_for(self, pred: Any, timeout: float = 10.0) -> tuple[str, bytes, float]:
        """The first received message with pred(topic, payload) true; others stay for later calls."""
        for i, (topic, payload, t) in enumerate(self._aside):
            if pred(topic, payload):
                del self._aside[i]
                return topic, payload, t
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("expected message did not arrive")
            try:
                topic, payload, t = self.messages.get(timeout=left)
            except queue.Empty:
                continue
            if pred(topic, payload):
                return topic, payload, t
            self._aside.append((topic, payload, t))

    def drain(self, settle: float = 0.3) -> list[tuple[str, bytes, float]]:
        """Everything received (and set aside) until nothing arrived for `settle` seconds."""
        out = self._aside
        self._aside = []
        while True:
            try:
                out.append(self.messages.get(timeout=settle))
            except queue.Empty:
                return out

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()
