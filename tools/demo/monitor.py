"""Watches the demo from the outside, as an operator would: MQTT on both brokers and the
gateway's status file. It decodes frames with shared_protocol, so it sees exactly what crossed
the wire: sizes, sequence numbers, alerts with their latency, and what reached the cloud.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from shared_protocol import CMD_OTA, CMD_SET_OUTPUT, DATA, FLAG_HISTORICAL, topics
from shared_protocol.decode import decode
from shared_protocol.errors import ProtocolError
from shared_protocol.topics import DEVICE_KINDS, levels

# Frames that do not use up a sequence number (docs/protocol.md): the last will is prepared at
# connect time with its own number, and a LOSS carries the next number the device will use, which
# its next frame then takes (that frame is new, not a repeat).
UNSEQUENCED = ("death", "loss")


def publish_packet_size(topic: str, payload_len: int, qos: int = 1) -> int:
    """Bytes of one MQTT 3.1.1 PUBLISH packet: fixed header, topic, packet id, payload."""
    remaining = 2 + len(topic.encode()) + (2 if qos else 0) + payload_len
    length_bytes = 1
    while remaining >= 128**length_bytes:
        length_bytes += 1
    return 1 + length_bytes + remaining


def json_equivalent_size(topic: str, names: list[str], values: list[list[float]]) -> int:
    """Wire bytes of the same readings sent the way most fleets do today: one Tasmota-style
    JSON message per sample time, all channels in it, QoS 1."""
    total = 0
    for row in values:
        body = {"Time": "2026-11-29T12:00:00.000", **{n: round(v, 4) for n, v in zip(names, row, strict=False)}}
        total += publish_packet_size(topic.rsplit("/", 1)[0] + "/SENSOR", len(json.dumps(body, separators=(",", ":"))))
    return total


@dataclass
class DeviceView:
    device: str
    online: bool = False
    birth: dict[str, Any] | None = None
    last_seen: float = 0.0
    frames: int = 0
    data_frames: int = 0
    historical_frames: int = 0
    repeated_frames: int = 0  # DATA frames seen before (each reading is counted once)
    readings: int = 0
    wire_bytes: int = 0
    json_bytes: int = 0
    seqs: dict[int, set[int]] = field(default_factory=lambda: defaultdict(set))  # boot -> frame seqs
    health: dict[str, Any] = field(default_factory=dict)
    first_data: float = 0.0
    commands: int = 0  # CMD_SET_OUTPUT: the actuator end of the alert loop
    ota_commands: int = 0  # CMD_OTA: firmware over the air
    other_commands: int = 0
    alerts: int = 0

    @property
    def rate_hz(self) -> float:
        if not self.birth:
            return 0.0
        rates = [c[5] for c in self.birth.get("channels", []) if len(c) > 5]
        return float(max(rates)) if rates else 0.0

    def missing_seqs(self) -> int:
        """Frame sequence numbers never seen between the first and last of each boot."""
        missing = 0
        for seqs in self.seqs.values():
            if seqs:
                missing += (max(seqs) - min(seqs) + 1) - len(seqs)
        return missing


@dataclass
class AlertView:
    device: str
    at: float  # monitor clock
    score: float
    threshold: float
    latency_ms: float | None  # device frame seen on the broker -> alert seen on the broker
    gateway_ms: float
    historical: bool
    state: str = "raised"  # of the alert episode: raised, updated or cleared
    alert_id: str = ""


class Monitor:
    """Subscribes to the local and cloud brokers; reads the gateway's status file."""

    def __init__(
        self,
        *,
        local: tuple[str, int],
        cloud: tuple[str, int],
        prefix: str,
        site: str,
        status: Path,
        local_user: tuple[str, str] | None = None,
        cloud_tls: tuple[Path, Path, Path] | None = None,
    ):
        """``local_user``: (username, password) on the local broker; ``cloud_tls``: (CA, certificate,
        key) for a cloud broker that requires a client certificate."""
        self.prefix = prefix
        self.site = site
        self.status_path = status
        self.started = time.monotonic()
        self.wall_started = time.time()
        self.lock = threading.Lock()
        self.devices: dict[str, DeviceView] = {}
        self.alerts: list[AlertView] = []
        self.scores: dict[str, list[tuple[float, float, float]]] = defaultdict(list)  # device -> (t, mean, max)
        self.frame_seen: dict[tuple[str, int, int], float] = {}
        self.cloud_keys: dict[str, list[str]] = defaultdict(list)
        self.cloud_messages = 0
        self.bad_frames = 0
        self.gateway_status: dict[str, Any] = {}
        self.local = self._client(
            "demo-monitor-local", local, topics.subscription(prefix, site, "+", "#"), self._on_local, user=local_user
        )
        self.cloud = self._client("demo-monitor-cloud", cloud, "#", self._on_cloud, tls=cloud_tls)

    # -- MQTT ------------------------------------------------------------------------------
    def _client(
        self,
        client_id: str,
        addr: tuple[str, int],
        topic: str,
        handler: Any,
        *,
        user: tuple[str, str] | None = None,
        tls: tuple[Path, Path, Path] | None = None,
    ) -> mqtt.Client:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        if user is not None:
            c.username_pw_set(*user)
        if tls is not None:
            c.tls_set(ca_certs=str(tls[0]), certfile=str(tls[1]), keyfile=str(tls[2]))
        c.on_message = handler
        c.on_connect = lambda cl, _u, _f, rc, _p: cl.subscribe(topic, qos=1) if not rc.is_failure else None
        c.reconnect_delay_set(1, 2)
        c.connect_async(addr[0], addr[1], keepalive=10)
        c.loop_start()
        return c

    def now(self) -> float:
        return time.monotonic() - self.started

    def _device(self, name: str) -> DeviceView:
        view = self.devices.get(name)
        if view is None:
            view = self.devices[name] = DeviceView(name)
        return view

    def _on_local(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        t = self.now()
        try:
            _prefix, _site, device, kind = levels(msg.topic)
        except ProtocolError:  # BadTopic: not a topic of the scheme
            return
        with self.lock:
            if device.startswith("_"):
                return
            if kind == "alert":
                self._alert(device, bytes(msg.payload), t)
            elif kind == "cmd":
                self._command(self._device(device), bytes(msg.payload))
            elif kind in DEVICE_KINDS:
                self._frame(self._device(device), kind, msg, t)

    def _command(self, view: DeviceView, payload: bytes) -> None:
        try:
            op = decode(payload).fields["op"]
        except ProtocolError:
            self.bad_frames += 1
            return
        if op == CMD_SET_OUTPUT:
            view.commands += 1
        elif op == CMD_OTA:
            view.ota_commands += 1
        else:
            view.other_commands += 1

    def _frame(self, view: DeviceView, kind: str, msg: mqtt.MQTTMessage, t: float) -> None:
        view.last_seen = t
        view.frames += 1
        size = publish_packet_size(msg.topic, len(msg.payload))
        try:
            frame = decode(msg.payload)
        except ProtocolError:
            self.bad_frames += 1
            return
        repeat = frame.seq in view.seqs[frame.boot]  # sent again (its ACK was late or lost)
        if kind not in UNSEQUENCED:
            view.seqs[frame.boot].add(frame.seq)
        if kind == "birth":
            view.birth = frame.fields
            view.online = True
        elif kind == "death":
            view.online = False
        elif kind == "health":
            view.health = dict(frame.fields)
            view.online = True
        elif frame.type == DATA and repeat:
            # the same readings again: the gateway drops it as a duplicate; its bytes count
            view.online = True
            view.repeated_frames += 1
            view.wire_bytes += size
        elif frame.type == DATA:
            view.online = True
            view.data_frames += 1
            view.wire_bytes += size
            self.frame_seen.setdefault((view.device, frame.boot, frame.seq), t)
            if frame.flags & FLAG_HISTORICAL:
                view.historical_frames += 1
            n = int(frame.fields["nsamples"]) * int(frame.fields["nchannels"])
            view.readings += n
            if not view.first_data:
                view.first_data = t
            if view.birth:
                channels = view.birth["channels"]
                names = [c[0] for c in channels]
                raw = frame.fields["raw"]
                nch = int(frame.fields["nchannels"])
                rows = [
                    [raw[i * nch + j] * channels[j][2] + channels[j][3] for j in range(nch)]
                    for i in range(int(frame.fields["nsamples"]))
                ]
                view.json_bytes += json_equivalent_size(msg.topic, names, rows)

    def _alert(self, device: str, payload: bytes, t: float) -> None:
        try:
            rec = json.loads(payload)
        except ValueError:
            return
        seen = self.frame_seen.get((device, int(rec.get("boot", -1)), int(rec.get("seq", -1))))
        self.alerts.append(
            AlertView(
                device=device,
                at=t,
                score=float(rec.get("score", 0.0)),
                threshold=float(rec.get("threshold", 0.0)),
                latency_ms=(t - seen) * 1000.0 if seen is not None else None,
                gateway_ms=float(rec.get("latency_ms", {}).get("gateway", 0.0)),
                historical=bool(rec.get("historical", False)),
                state=str(rec.get("state", "raised")),
                alert_id=str(rec.get("alert_id", "")),
            )
        )
        if rec.get("state", "raised") == "raised":
            self._device(device).alerts += 1  # episodes: one per fault, not per record

    def _on_cloud(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        t = self.now()
        try:
            rec = json.loads(msg.payload)
        except ValueError:
            return
        with self.lock:
            self.cloud_messages += 1
            key = rec.get("key") or rec.get("idempotency_key")
            lane = rec.get("lane") or msg.topic.rsplit("/", 1)[-1]
            if isinstance(key, str):
                self.cloud_keys[str(lane)].append(key)
            body = rec.get("record", rec)
            if isinstance(body, dict) and lane == "summary":
                self._summary(body, t)

    def _summary(self, body: dict[str, Any], t: float) -> None:
        device = body.get("device")
        scores = body.get("scores")
        if not device or not isinstance(scores, dict):
            return
        # Place the point at the end of its interval (gateway wall clock), not at its arrival:
        # summaries held back by a cloud outage arrive late but belong where they were made.
        end = body.get("end")
        at = float(end) - self.wall_started if isinstance(end, (int, float)) else t
        for pipe in scores.values():
            if isinstance(pipe, dict):
                self.scores[str(device)].append((at, float(pipe.get("mean", 0.0)), float(pipe.get("max", 0.0))))

    # -- gateway status ----------------------------------------------------------------------
    def poll_status(self) -> dict[str, Any]:
        with contextlib.suppress(OSError, ValueError):
            self.gateway_status = json.loads(self.status_path.read_text())
        return self.gateway_status

    def stop(self) -> None:
        for c in (self.local, self.cloud):
            c.disconnect()
            c.loop_stop()
