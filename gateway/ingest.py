"""Ingest: paho-mqtt's network loop hands raw frames to the pipeline in batches.

The paho callback does one thing: append ``(topic, payload, received)`` to a
bounded queue. All decoding happens on the processing thread, which takes
whatever has accumulated as one batch. When the queue is full the callback
waits (up to ``block_timeout_ms``, which back-pressures the TCP socket and so
the broker) and then drops the frame, counting it. A dropped DATA frame is
never ACKed, so the device keeps it and replays it later.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from shared_protocol.topics import DEVICE_KINDS, subscription

log = logging.getLogger(__name__)

DROP_LOG_S = 10.0  # a full queue is logged at most this often (every drop is counted)
# QoS 1 publishes paho may hold (in flight or waiting) before it refuses more: a broker that
# stops reading cannot make the gateway's memory grow without limit. A refused ACK is kept and
# sent again (gateway/acker.py); a refused alert or CMD is counted and logged.
MAX_QUEUED_PUBLISHES = 20_000


class RawFrame(NamedTuple):
    topic: str
    payload: bytes
    received: float  # time.time() when paho handed the message over


@dataclass(frozen=True)
class QueueStats:
    capacity: int
    depth: int
    high_water: int
    enqueued: int
    dropped: int
    blocked_s: float
    blocked_events: int
    refused_after_stop: int


class FrameQueue:
    """Bounded FIFO between paho's network thread and the processing thread."""

    def __init__(self, capacity: int, *, block_timeout_s: float = 0.2) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self.block_timeout_s = block_timeout_s
        self._items: deque[RawFrame] = deque()
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)
        self._not_full = threading.Condition(self._lock)
        self._high_water = 0
        self._enqueued = 0
        self._dropped = 0
        self._blocked_s = 0.0
        self._blocked_events = 0
        self._closed = False
        self._intake = True
        self._refused = 0  # offered after stop_intake (never ACKed: devices send them again)
        self._drop_logged = 0.0

    def put(self, item: RawFrame) -> bool:
        """Append; wait while full up to block_timeout_s, then drop and count."""
        with self._lock:
            if not self._intake:
                self._refused += 1
                return False
            items = self._items
            if len(items) >= self.capacity:
                t0 = time.perf_counter()
                self._blocked_events += 1
                deadline = t0 + self.block_timeout_s
                while len(items) >= self.capacity and not self._closed and self._intake:
                    left = deadline - time.perf_counter()
                    if left <= 0:
                        break
                    self._not_full.wait(left)
                self._blocked_s += time.perf_counter() - t0
                if not self._intake:
                    self._refused += 1
                    return False
                if len(items) >= self.capacity:
                    self._dropped += 1
                    self._log_drop()
                    return False
            items.append(item)
            self._enqueued += 1
            n = len(items)
            self._high_water = max(self._high_water, n)
            self._not_empty.notify()
            return True

    def _log_drop(self) -> None:
        now = time.monotonic()
        if now - self._drop_logged >= DROP_LOG_S:
            self._drop_logged = now
            log.warning(
                "ingest queue full (%d frames, processing falls behind): %d frame(s) dropped so far; "
                "they are not ACKed, devices send them again",
                self.capacity,
                self._dropped,
            )

    def stop_intake(self) -> None:
        """Take nothing more in (a stop, or a raw log that cannot be written); what is queued stays."""
        with self._lock:
            self._intake = False
            self._not_full.notify_all()

    def get_batch(self, max_items: int, timeout: float) -> list[RawFrame]:
        """Everything queued (up to max_items); waits up to ``timeout`` for the first."""
        with self._lock:
            items = self._items
            if not items and not self._closed:
                self._not_empty.wait(timeout)
            n = min(len(items), max_items)
            if n == 0:
                return []
            if n == len(items):
                batch = list(items)
                items.clear()
            else:
                pop = items.popleft
                batch = [pop() for _ in range(n)]
            self._not_full.notify_all()
            return batch

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._not_empty.notify_all()
            self._not_full.notify_all()

    def stats(self) -> QueueStats:
        with self._lock:
            return QueueStats(
                capacity=self.capacity,
                depth=len(self._items),
                high_water=self._high_water,
                enqueued=self._enqueued,
                dropped=self._dropped,
                blocked_s=self._blocked_s,
                blocked_events=self._blocked_events,
                refused_after_stop=self._refused,
            )


@dataclass(frozen=True)
class MQTTSettings:
    host: str
    port: int
    client_id: str
    username: str | None = None
    password: str | None = None
    keepalive_s: int = 30


class MQTTIngest:
    """The gateway's single connection to the local broker.

    Subscribes to the device -> gateway topics of one site, queues every
    message as a RawFrame, and publishes (ACK, CMD, alerts) for the pipeline.
    """

    def __init__(
        self,
        settings: MQTTSettings,
        queue: FrameQueue,
        *,
        prefix: str,
        site: str,
        will: tuple[str, bytes] | None = None,
        data_qos: int = 0,
    ) -> None:
        self.settings = settings
        self.queue = queue
        # DATA at QoS 0 by default: a QoS 1 subscription costs paho a PUBACK per frame, which
        # roughly doubles the alert latency under load (docs/gateway.md). Nothing is lost for
        # it: the broker does not keep QoS 0 DATA while the gateway is away, but the devices
        # keep every frame until the gateway ACKs it and send what it asks for (gap repair);
        # those frames arrive after newer ones and are stored and summarised, not scored. At
        # QoS 1 the broker keeps them in order instead (scored). Control frames (BIRTH, DEATH,
        # HEALTH, EVENT, LOSS) are always QoS 1.
        self.subscriptions = [
            (subscription(prefix, site, "+", kind), data_qos if kind == "data" else 1) for kind in DEVICE_KINDS
        ]
        self.connected = threading.Event()
        self.subscribed = threading.Event()  # the broker granted the subscriptions (SUBACK)
        self.connects = 0
        self.disconnects = 0
        self.last_connect_error: str | None = None
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=settings.client_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
        )
        if settings.username is not None:
            client.username_pw_set(settings.username, settings.password)
        if will is not None:
            client.will_set(will[0], will[1], qos=1, retain=True)
        client.max_queued_messages_set(MAX_QUEUED_PUBLISHES)
        client.max_inflight_messages_set(100)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        self.client = client

    def add_route(self, topic_filter: str, qos: int, callback: Callable[[str, bytes], None]) -> None:
        """Also subscribe to ``topic_filter`` and hand its messages to ``callback(topic, payload)``
        on paho's network thread, past the frame queue (Home Assistant's switch commands).
        Call before ``start``."""
        self.subscriptions.append((topic_filter, qos))
        self.client.message_callback_add(topic_filter, lambda c, u, msg: callback(msg.topic, bytes(msg.payload)))

    # paho callbacks (network thread): keep them tiny.
    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.queue.put(RawFrame(msg.topic, bytes(msg.payload), time.time()))

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Any,
    ) -> None:
        if reason_code.is_failure:
            self.last_connect_error = str(reason_code)
            log.error("MQTT connect to %s:%d refused: %s", self.settings.host, self.settings.port, reason_code)
            return
        self.connects += 1
        # Alerts, CMDs and ACKs are small packets that must leave now: no Nagle delay
        # (paho leaves TCP_NODELAY off).
        sock = client.socket()
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.subscribe(self.subscriptions)
        self.connected.set()
        log.info("connected to MQTT broker %s:%d", self.settings.host, self.settings.port)

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: list[ReasonCode], properties: Any
    ) -> None:
        if any(rc.is_failure for rc in reason_codes):
            log.error("MQTT subscription refused: %s", [str(rc) for rc in reason_codes])
            return
        self.subscribed.set()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Any,
    ) -> None:
        self.connected.clear()
        self.subscribed.clear()
        self.disconnects += 1
        log.warning("disconnected from MQTT broker: %s", reason_code)

    def start(self) -> None:
        self.client.connect_async(self.settings.host, self.settings.port, self.settings.keepalive_s)
        self.client.loop_start()

    def stop(self) -> None:
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()
            self.queue.close()

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> bool:
        """Queue a publish with paho; False when paho refused it (not connected)."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        return info.rc == mqtt.MQTT_ERR_SUCCESS
