"""A Sparkplug B host application for the tests: subscribes to ``spBv1.0/#`` on the cloud broker,
decodes every message with an independent decoder (esio-spb-builder's Tahu protobuf module and its
``PacketDecoder``, not pysparkplug, which the gateway encodes with) and checks the session rules a
host relies on (Sparkplug 3.0):

* NBIRTH comes first, with ``seq`` 0, a ``bdSeq`` metric (Int64) and ``Node Control/Rebirth`` = false
  without an alias; its ``bdSeq`` is the one of the will (the NDEATH the broker sends on a kill);
* every other message but NDEATH carries ``seq`` one more than the message before it, 0 after 255;
* births carry name, alias and datatype for every metric; aliases are unique across the edge node;
* a DBIRTH of a device comes before any DDATA of it (after its DDEATH too, and within this NBIRTH);
* DDATA carries aliases only (no names, no datatypes), each resolving to a metric of that device's
  DBIRTH; NDATA the same against the NBIRTH;
* an NDEATH whose bdSeq is the current NBIRTH's puts the node offline.

Violations are collected in ``errors`` (a test asserts it stays empty); decoded messages in ``log``.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from esio_spb_builder.core import sparkplug_b_pb2 as pb
from esio_spb_builder.packets import PacketDecoder
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.mosquitto import Mosquitto

INT64, BOOLEAN = 4, 11
_SIGNED_BITS = {1: 8, 2: 16, 3: 32, 4: 64}  # Int8, Int16, Int32, Int64
REBIRTH = "Node Control/Rebirth"


@dataclass
class Message:
    kind: str  # NBIRTH, DBIRTH, DDATA, ...
    device: str | None
    seq: int | None
    metrics: list[dict[str, Any]]  # PacketDecoder's dicts, plus "resolved" (the name) and "historical"
    raw: bytes = b""

    def values(self) -> dict[str, Any]:
        return {m["resolved"]: m.get("value") for m in self.metrics}

    def metric(self, name: str) -> dict[str, Any]:
        return next(m for m in self.metrics if m["resolved"] == name)


@dataclass
class _Node:
    online: bool = False
    bd_seq: int | None = None
    next_seq: int | None = None
    node_aliases: dict[int, tuple[str, int]] = field(default_factory=dict)
    devices: dict[str, dict[int, tuple[str, int]]] = field(default_factory=dict)  # born: alias -> (name, datatype)


class SparkplugHost:
    def __init__(self, broker: Mosquitto, group: str, node: str) -> None:
        self.group, self.node = group, node
        self.log: list[Message] = []
        self.errors: list[str] = []
        self.deaths: list[int] = []  # bdSeq of every NDEATH received
        # QoS 1 redeliveries to this host's own session (DUP set, e.g. after a broker restart
        # that came before the host's PUBACK was saved): the same bytes again, not a new message.
        self.redelivered = 0
        self._seen: set[bytes] = set()
        self.state = _Node()
        self._lock = threading.Condition()  # notified on every message: wait_for wakes on the event
        self._subscribed = threading.Event()
        # A persistent session, so that nothing is missed across a broker restart in the outage test.
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"host-{uuid.uuid4().hex[:8]}", clean_session=False
        )
        self.client.reconnect_delay_set(0.05, 0.3)
        self.client.on_connect = lambda c, *a: c.subscribe("spBv1.0/#", qos=1)
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port, 5)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("sparkplug host could not subscribe")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    # -- what a test asks --------------------------------------------------------------------
    def messages(self, kind: str | None = None, device: str | None = None) -> list[Message]:
        with self._lock:
            return [m for m in self.log if (kind is None or m.kind == kind) and (device is None or m.device == device)]

    def wait_for(self, predicate: Any, what: str, timeout: float = 30.0) -> list[Message]:
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                snap = list(self.log)
                if predicate(snap):
                    return snap
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._lock.wait(left)
        kinds = [(m.kind, m.device, m.seq) for m in self.messages()]
        raise AssertionError(f"sparkplug host: {what} not seen within {timeout} s; got {kinds}; errors {self.errors}")

    def request_rebirth(self) -> None:
        """An NCMD with ``Node Control/Rebirth`` = true, as a host sends it (QoS 0, by name)."""
        payload = pb.Payload()
        payload.timestamp = int(time.time() * 1000)
        metric = payload.metrics.add()
        metric.name = REBIRTH
        metric.timestamp = payload.timestamp
        metric.datatype = BOOLEAN
        metric.boolean_value = True
        self.client.publish(f"spBv1.0/{self.group}/NCMD/{self.node}", payload.SerializeToString(), qos=0)

    # -- checks ---------------------------------------------------------------------------------
    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        parts = msg.topic.split("/")
        if len(parts) < 4 or parts[1] != self.group or parts[3] != self.node:
            return
        kind, device = parts[2], (parts[4] if len(parts) > 4 else None)
        if kind in ("NCMD", "DCMD"):
            return
        raw = bytes(msg.payload)
        with self._lock:
            if msg.dup and (msg.topic.encode() + raw) in self._seen:
                self.redelivered += 1
                return
            self._seen.add(msg.topic.encode() + raw)
        try:
            decoded = PacketDecoder.decode(raw)
            flags = pb.Payload.FromString(raw)
        except Exception as exc:
            self._error(f"{msg.topic}: undecodable payload ({exc})")
            return
        metrics = decoded["metrics"]
        for m, p in zip(metrics, flags.metrics, strict=True):
            m["historical"] = p.is_historical
            m["null"] = p.is_null
            m["has_datatype"] = p.HasField("datatype")
        message = Message(kind, device, decoded["seq"], metrics, raw)
        with self._lock:
            self._check(message)
            self.log.append(message)
            self._lock.notify_all()

    def _error(self, text: str) -> None:
        self.errors.append(text)

    def _check(self, m: Message) -> None:  # noqa: C901 - one rule per message type, as the spec lists them
        st = self.state
        where = f"{m.kind} {m.device or ''} seq={m.seq}"
        if m.kind == "NDEATH":
            bd = [x.get("value") for x in m.metrics if x["name"] == "bdSeq"]
            if m.seq is not None or len(bd) != 1:
                self._error(f"{where}: an NDEATH has no seq and exactly one metric, bdSeq")
            elif bd[0] == st.bd_seq:
                st.online = False
                st.devices.clear()
            self.deaths.extend(int(v) for v in bd)
            for x in m.metrics:
                x["resolved"] = x["name"]
            return
        if m.seq is None or not 0 <= m.seq <= 255:
            self._error(f"{where}: seq missing or out of 0..255")
        if m.kind == "NBIRTH":
            self._check_nbirth(m, where)
            return
        if not st.online:
            self._error(f"{where}: before any NBIRTH of this node (or after its NDEATH)")
            return
        if m.seq != st.next_seq:
            self._error(f"{where}: expected seq {st.next_seq}")
        st.next_seq = (0 if m.seq is None else m.seq + 1) % 256
        if m.kind == "DBIRTH":
            assert m.device is not None
            mine = self._birth_aliases(m, where, exclude=m.device)
            st.devices[m.device] = mine
        elif m.kind in ("DDATA", "NDATA"):
            table = st.node_aliases if m.kind == "NDATA" else st.devices.get(m.device or "")
            if table is None:
                self._error(f"{where}: DDATA of a device without a DBIRTH in this session")
                return
            for x in m.metrics:
                if x["name"] is not None or x["has_datatype"]:
                    self._error(f"{where}: data metrics carry the alias only (got name {x['name']!r})")
                known = table.get(x["alias"])
                if known is None:
                    self._error(f"{where}: alias {x['alias']} is not in the birth")
                    x["resolved"] = None
                else:
                    x["resolved"], x["datatype"] = known
                    _signed(x)
        elif m.kind == "DDEATH":
            if m.device not in st.devices:
                self._error(f"{where}: DDEATH of a device not born")
            st.devices.pop(m.device or "", None)
        else:
            self._error(f"{where}: unexpected message type")

    def _check_nbirth(self, m: Message, where: str) -> None:
        st = self.state
        if m.seq != 0:
            self._error(f"{where}: an NBIRTH has seq 0")
        bd = [x for x in m.metrics if x["name"] == "bdSeq"]
        if len(bd) != 1 or bd[0]["datatype"] != INT64:
            self._error(f"{where}: an NBIRTH has one bdSeq metric, Int64")
        rebirth = [x for x in m.metrics if x["name"] == REBIRTH]
        if len(rebirth) != 1 or rebirth[0]["datatype"] != BOOLEAN or rebirth[0].get("value") is not False:
            self._error(f"{where}: an NBIRTH has {REBIRTH} = false, Boolean")
        elif rebirth[0]["alias"] is not None:
            self._error(f"{where}: {REBIRTH} has no alias")
        st.online, st.next_seq = True, 1
        st.bd_seq = bd[0].get("value") if bd else None
        st.devices.clear()
        st.node_aliases = {}
        st.node_aliases = self._birth_aliases(m, where, exclude=None)

    def _birth_aliases(self, m: Message, where: str, *, exclude: str | None) -> dict[int, tuple[str, int]]:
        """alias -> name of a birth; checks names, datatypes and that the aliases are unique in the node."""
        st = self.state
        taken = set(st.node_aliases) if exclude is not None else set()
        for device, table in st.devices.items():
            if device != exclude:
                taken |= set(table)
        mine: dict[int, tuple[str, int]] = {}
        for x in m.metrics:
            x["resolved"] = x["name"]
            _signed(x)
            if not x["name"] or not x["has_datatype"]:
                self._error(f"{where}: a birth metric has a name and a datatype")
            if x["name"] in ("bdSeq", REBIRTH):
                continue
            alias = x["alias"]
            if alias is None:
                self._error(f"{where}: {x['name']} has no alias")
            elif alias in taken or alias in mine:
                self._error(f"{where}: alias {alias} of {x['name']} is not unique in the edge node")
            else:
                mine[alias] = (x["name"], x["datatype"])
        return mine


def _signed(metric: dict[str, Any]) -> None:
    """Signed integers travel as two's complement in the unsigned protobuf fields: the host converts."""
    bits = _SIGNED_BITS.get(metric["datatype"])
    value = metric.get("value")
    if bits is not None and isinstance(value, int) and value >= 1 << (bits - 1):
        metric["value"] = value - (1 << bits)
