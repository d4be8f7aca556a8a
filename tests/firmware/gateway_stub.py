"""A small stand-in for the gateway's ingest + ACK role, for firmware tests.

It subscribes to every device topic on a real Mosquitto with paho-mqtt, decodes each
frame with shared_protocol, records it, and (when `ack` is on) answers every sequenced
frame (all but DEATH, as the real gateway does) with ACK frames listing the (boot, first_seq, last_seq) ranges it "persisted".
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from shared_protocol import ACK, BIRTH, CMD, DATA, EVENT, HEALTH
from shared_protocol.decode import Frame, Schema, decode, schema_from_birth
from shared_protocol.encode import cmd_arg, encode_ack, encode_cmd
from shared_protocol.topics import parse_topic, subscription, topic
from tests.support.waiting import wait_until


@dataclass
class Received:
    kind: str
    frame: Frame
    raw: bytes
    retained: bool
    at: float = field(default_factory=time.monotonic)
    device: str = ""


class GatewayStub:
    def __init__(  # noqa: PLR0917
        self, host: str, port: int, site: str = "s1", ack: bool = True, prefix: str = "el", persistent: bool = False
    ) -> None:
        self.host = host
        self.port = port
        self.site = site
        self.prefix = prefix
        self.ack = ack
        self.lock = threading.Lock()
        self.frames: list[Received] = []
        self.errors: list[str] = []
        self.schemas: dict[str, Schema] = {}
        self.lose_once: set[int] = set()  # seqs whose first copy is "lost": not recorded, not ACKed
        self._cmd_id = 0
        # persistent: a durable session, so the broker queues what arrives while the
        # stub is away (broker restarts); the real gateway does the same
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"gwstub-{site}-{port}", clean_session=not persistent
        )
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 2)
        self._subscribed = threading.Event()  # SUBACK: from here on no device frame is missed

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> GatewayStub:
        self.client.connect_async(self.host, self.port, keepalive=10)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("gateway stub could not connect and subscribe to the broker")
        return self

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def __enter__(self) -> GatewayStub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        client.subscribe(subscription(self.prefix, self.site), qos=1)

    # -- receive -------------------------------------------------------------------
    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        _, _, device, kind = parse_topic(msg.topic)
        if kind in ("ack", "cmd"):
            return
        try:
            frame = decode(msg.payload)
        except ValueError as e:
            with self.lock:
                self.errors.append(f"{msg.topic}: {e}")
            return
        with self.lock:
            if frame.seq in self.lose_once and frame.type != BIRTH:
                self.lose_once.discard(frame.seq)
                return
            self.frames.append(Received(kind, frame, bytes(msg.payload), bool(msg.retain), device=device))
            if frame.type == BIRTH:
                self.schemas[device] = schema_from_birth(frame)
        if self.ack and frame.type in (DATA, EVENT, HEALTH, BIRTH):  # like the gateway: all but DEATH
            buf = bytearray(64)
            n = encode_ack(buf, 0, 0, 0, [(frame.boot, frame.seq, frame.seq)])
            client.publish(topic(self.prefix, self.site, device, "ack"), bytes(buf[:n]), qos=1)

    # -- queries -------------------------------------------------------------------
    def of(self, *types: int, device: str | None = None) -> list[Received]:
        with self.lock:
            return [r for r in self.frames if r.frame.type in types]

    def first_copies(self, *types: int) -> list[Received]:
        """The first copy of each frame (device, boot, seq) of these types, in arrival order.
        Delivery is at least once: after a lost session the device sends again what was not
        ACKed, so a frame the broker already had can arrive twice."""
        seen: set[tuple[str, int, int]] = set()
        out = []
        for r in self.of(*types):
            key = (r.device, r.frame.boot, r.frame.seq)
            if key not in seen:
                seen.add(key)
                out.append(r)
        return out

    def copies_again(self) -> int:
        """How many receptions repeated a frame already received."""
        every = self.of(BIRTH, DATA, EVENT, HEALTH)
        return len(every) - len({(r.device, r.frame.boot, r.frame.seq) for r in every})

    def data_keys(self) -> list[tuple[int, int]]:
        return [(r.frame.boot, r.frame.seq) for r in self.of(DATA)]

    def wait_for(self, pred: Callable[[GatewayStub], bool], timeout: float = 20.0, what: str = "condition") -> None:
        try:
            wait_until(lambda: pred(self), timeout=timeout, what=what)
        except TimeoutError:
            raise AssertionError(
                f"timed out waiting for {what}; got {len(self.frames)} frames, errors {self.errors[:3]}"
            ) from None

    # -- send ----------------------------------------------------------------------
    def send_cmd(self, device: str, op: int, *values: Any) -> int:
        self._cmd_id += 1
        arg = cmd_arg(op, *values)
        buf = bytearray(64 + len(arg))
        n = encode_cmd(buf, 0, self._cmd_id, 0, self._cmd_id, op, arg)
        self.client.publish(topic(self.prefix, self.site, device, "cmd"), bytes(buf[:n]), qos=1)
        return self._cmd_id

    def send_ack(self, device: str, ranges: list[tuple[int, int, int]]) -> None:
        buf = bytearray(16 + 10 * len(ranges))
        n = encode_ack(buf, 0, 0, 0, ranges)
        self.client.publish(topic(self.prefix, self.site, device, "ack"), bytes(buf[:n]), qos=1)


__all__ = ["ACK", "CMD", "HEALTH", "GatewayStub", "Received"]
