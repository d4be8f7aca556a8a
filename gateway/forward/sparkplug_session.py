"""The gateway as a Sparkplug B 3.0 edge node on the cloud link: which messages a record becomes, and
in which order, so that a Sparkplug host application (Ignition's MQTT Engine, a Tahu host) accepts
the stream.

The gateway is the edge node (``<group>/<gateway id>``), every board it serves a device.  The
session follows the specification's rules (Sparkplug 3.0, "Operational Behavior"):

* every MQTT CONNECT carries the NDEATH as its will with a new ``bdSeq`` (:meth:`will`, persisted by
  ``sparkplug_state.py``); the NBIRTH of that connection repeats it, also on a rebirth;
* :meth:`begin` opens a session: NBIRTH (``seq`` 0) then a DBIRTH for each device known online, with
  every metric it will publish (name, alias, datatype, current value or null, units);
* :meth:`messages_for` turns a queued record into DDATA by alias (or NDATA for the gateway's own
  records), a DBIRTH first when the device is not born in this session or its metrics changed (a
  new BIRTH with other channels, a field never seen), a DDEATH when it went offline;
* ``seq`` counts every message after the NBIRTH, 0..255 and round again;
* data a host must not take as live is flagged ``is_historical``: records queued before this
  connection after an earlier one was lost, records of an earlier run of the forwarder, records older
  than ``HISTORICAL_AFTER_S``, and a late record of a device already dead (sent between a DBIRTH and
  a DDEATH of its own, so the device stays dead).

Aliases are unique across the edge node and stable while the process runs.  Not thread-safe: the
store thread calls :meth:`begin` and :meth:`messages_for`; :meth:`will` and :meth:`death` are called
by the network thread only while the store thread publishes nothing of that connection.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.forward import sparkplug as wire
from gateway.forward.payload import idempotency_key
from gateway.forward.queue import LANES, QueuedRecord
from gateway.forward.sparkplug import DataType, MessageType, Value
from gateway.forward.sparkplug_metrics import BIRTH, DEATH, KEY_METRIC, NODE_METRICS, Observation, observe
from gateway.forward.sparkplug_state import SparkplugState

HISTORICAL_AFTER_S = 60.0
Message = tuple[str, bytes]


@dataclass
class _Metric:
    datatype: DataType
    alias: int
    unit: str | None = None
    value: Any = None
    timestamp_ms: int | None = None


class _Device:
    __slots__ = ("born", "channels", "metrics", "name", "offline_at", "online")

    def __init__(self, name: str) -> None:
        self.name = name
        self.metrics: dict[str, _Metric] = {}
        self.channels: tuple[str, ...] = ()
        self.online = True
        self.offline_at: float | None = None
        self.born = False  # DBIRTH sent in this Sparkplug session with the current definitions


class SparkplugSession:
    def __init__(self, group: str, node: str, state_path: Path, *, epoch: str = "") -> None:
        self.group = wire.check_id("forward.sparkplug_group", group)
        self.node = wire.check_id("gateway id", node)
        self.epoch = epoch  # the queue's: records of another epoch were queued by an earlier run
        self.state = SparkplugState(state_path)
        self._aliases: dict[tuple[str, str], int] = {}
        self._node_metrics = {name: _Metric(dt, self._alias("", name)) for name, dt in NODE_METRICS}
        self._devices: dict[str, _Device] = {}
        self._seq = 0
        self._bd_seq = 0
        self._connections = 0
        self._connected_at = 0.0
        self.counters = {"births": 0, "node_births": 0, "deaths": 0, "data": 0, "historical": 0}
        for name, entry in self.state.devices.items():
            self._restore(name, entry)

    # -- network thread ---------------------------------------------------------------------
    def will(self) -> tuple[str, bytes]:
        """(topic, payload) of the NDEATH to register as the will of the next CONNECT: a new bdSeq."""
        self._bd_seq = self.state.next_bd_seq()
        return wire.topic(self.group, self.node, MessageType.NDEATH), wire.ndeath(self._bd_seq)

    def death(self) -> tuple[str, bytes]:
        """The NDEATH to publish before a clean disconnect (the bdSeq of this connection)."""
        return wire.topic(self.group, self.node, MessageType.NDEATH), wire.ndeath(
            self._bd_seq, timestamp_ms=wire.now_ms()
        )

    def ncmd_topic(self) -> str:
        return wire.topic(self.group, self.node, MessageType.NCMD)

    # -- store thread -----------------------------------------------------------------------
    def begin(self, *, new_connection: bool, now: float | None = None) -> list[Message]:
        """The birth sequence: NBIRTH, then a DBIRTH per device known online.  ``new_connection``: the
        first births of an MQTT connection (else a rebirth asked for by a host)."""
        now = time.time() if now is None else now
        if new_connection:
            self._connections += 1
            self._connected_at = now
        ts = int(now * 1000)
        node_values = [self._value(name, m, ts) for name, m in self._node_metrics.items()]
        self._seq = 0
        out = [
            (self._topic(MessageType.NBIRTH), wire.nbirth(self._next_seq(), self._bd_seq, node_values, timestamp_ms=ts))
        ]
        self.counters["node_births"] += 1
        for name in sorted(self._devices):
            device = self._devices[name]
            device.born = False
            if device.online:
                out.append(self._dbirth(device, ts))
        return out

    def messages_for(self, record: QueuedRecord, *, now: float | None = None) -> list[Message]:
        """What ``record`` becomes on the wire, in order (the last one is the record itself)."""
        now = time.time() if now is None else now
        obs = observe(LANES[record.lane], json.loads(record.body), created=record.created)
        key = idempotency_key(self.node, record.lane, record.epoch, record.seq)
        historical = self._historical(record, now)
        ts = int(obs.timestamp * 1000)
        if obs.device is None:
            obs.values["Gateway/Last Record/key"] = (DataType.STRING, key)
            return [self._ndata(obs, ts, historical, int(now * 1000))]
        device = self._devices.get(obs.device)
        if device is None:
            device = self._devices[obs.device] = _Device(obs.device)
        if obs.kind == BIRTH:
            self._apply_birth(device, obs, ts)
            return [self._dbirth(device, int(now * 1000))]
        if obs.kind == DEATH:
            device.online, device.offline_at, device.born = False, obs.timestamp, False
            self._save(device)
            self.counters["deaths"] += 1
            return [(self._topic(MessageType.DDEATH, device.name), wire.ddeath(self._next_seq(), timestamp_ms=ts))]
        obs.values[KEY_METRIC] = (DataType.STRING, key)
        late = not device.online and (device.offline_at is None or obs.timestamp <= device.offline_at)
        if not device.online and not late:  # a record from after its death: the device is back
            device.online, device.offline_at = True, None
            self._save(device)
        out = []
        if self._define(device, obs) or not device.born:
            out.append(self._dbirth(device, int(now * 1000)))
        out.append(self._ddata(device, obs, ts, historical or late, int(now * 1000)))
        if late:
            out.append((self._topic(MessageType.DDEATH, device.name), wire.ddeath(self._next_seq(), timestamp_ms=ts)))
            device.born = False
        return out

    def save(self) -> None:
        self.state.save()

    def status(self) -> dict[str, Any]:
        """bdSeq of the current connection, devices known (online), messages sent by kind."""
        online = sum(1 for d in list(self._devices.values()) if d.online)
        return {"bdSeq": self._bd_seq, "devices": len(self._devices), "online": online, **self.counters}

    # -- helpers ----------------------------------------------------------------------------
    def _next_seq(self) -> int:
        seq = self._seq
        self._seq = (seq + 1) % 256
        return seq

    def _topic(self, message_type: MessageType, device: str | None = None) -> str:
        return wire.topic(self.group, self.node, message_type, device)

    def _alias(self, device: str, name: str) -> int:
        alias = self._aliases.get((device, name))
        if alias is None:
            alias = self._aliases[(device, name)] = len(self._aliases) + 1
        return alias

    def _historical(self, record: QueuedRecord, now: float) -> bool:
        return (
            (bool(self.epoch) and record.epoch != self.epoch)
            or (self._connections > 1 and record.created < self._connected_at)
            or now - record.created > HISTORICAL_AFTER_S
        )

    @staticmethod
    def _value(name: str, metric: _Metric, ts: int) -> Value:
        stamp = metric.timestamp_ms if metric.timestamp_ms is not None else ts
        return Value(name, metric.alias, metric.datatype, metric.value, stamp, metric.unit)

    def _dbirth(self, device: _Device, ts: int) -> Message:
        values = [self._value(name, m, ts) for name, m in device.metrics.items()]
        device.born = True
        self.counters["births"] += 1
        return self._topic(MessageType.DBIRTH, device.name), wire.dbirth(self._next_seq(), values, timestamp_ms=ts)

    def _ddata(self, device: _Device, obs: Observation, ts: int, historical: bool, sent_ms: int) -> Message:
        values = []
        for name, (_dt, raw) in obs.values.items():
            metric = device.metrics[name]
            value = _coerce(metric.datatype, raw)
            values.append(Value(name, metric.alias, metric.datatype, value, ts, historical=historical))
            if not historical:
                metric.value, metric.timestamp_ms = value, ts
        self.counters["data"] += 1
        self.counters["historical"] += historical
        return self._topic(MessageType.DDATA, device.name), wire.ddata(self._next_seq(), values, timestamp_ms=sent_ms)

    def _ndata(self, obs: Observation, ts: int, historical: bool, sent_ms: int) -> Message:
        values = []
        for name, (_dt, value) in obs.values.items():
            metric = self._node_metrics[name]
            values.append(Value(name, metric.alias, metric.datatype, value, ts, historical=historical))
            if not historical:
                metric.value, metric.timestamp_ms = value, ts
        return self._topic(MessageType.NDATA), wire.ndata(self._next_seq(), values, timestamp_ms=sent_ms)

    def _define(self, device: _Device, obs: Observation) -> bool:
        """Add the metrics of ``obs`` the device has not declared (or declared with a type its value
        does not fit); True if its definitions changed (a DBIRTH must go first)."""
        changed = False
        for name, (datatype, value) in obs.values.items():
            metric = device.metrics.get(name)
            if metric is None:
                device.metrics[name] = _Metric(datatype, self._alias(device.name, name), obs.units.get(name))
                changed = True
            elif value is not None and not _fits(metric.datatype, datatype):
                metric.datatype, metric.value, metric.timestamp_ms = datatype, None, None
                changed = True
        if changed:
            self._save(device)
        return changed

    def _apply_birth(self, device: _Device, obs: Observation, ts: int) -> None:
        """A BIRTH of the board: its channel metrics are replaced, its device and health values set."""
        channels = obs.channels or ()
        if channels != device.channels:
            prefixes = tuple(f"Channels/{c}/" for c in device.channels if c not in channels)
            for name in [n for n in device.metrics if n.startswith(prefixes)] if prefixes else []:
                del device.metrics[name]
            device.channels = channels
        self._define(device, obs)
        for name, unit in obs.units.items():
            device.metrics[name].unit = unit
        for name, (_dt, value) in obs.values.items():
            if value is not None:
                metric = device.metrics[name]
                metric.value, metric.timestamp_ms = _coerce(metric.datatype, value), ts
        device.online, device.offline_at = True, None
        self._save(device)

    def _save(self, device: _Device) -> None:
        entry = {
            "online": device.online,
            "offline_at": device.offline_at,
            "channels": list(device.channels),
            "metrics": [[name, int(m.datatype), m.unit] for name, m in device.metrics.items()],
        }
        self.state.set_device(device.name, entry)
        self.state.save_if_due()

    def _restore(self, name: str, entry: dict[str, Any]) -> None:
        device = _Device(name)
        try:
            device.online = bool(entry.get("online", True))
            offline_at = entry.get("offline_at")
            device.offline_at = float(offline_at) if offline_at is not None else None
            device.channels = tuple(str(c) for c in entry.get("channels") or ())
            for metric_name, datatype, unit in entry.get("metrics") or []:
                device.metrics[str(metric_name)] = _Metric(
                    DataType(int(datatype)), self._alias(name, str(metric_name)), unit or None
                )
        except (TypeError, ValueError):  # a damaged entry: the device is born again with its next record
            return
        self._devices[name] = device


def _fits(declared: DataType, datatype: DataType) -> bool:
    return declared == datatype or (declared == DataType.DOUBLE and datatype == DataType.INT64)


def _coerce(declared: DataType, value: Any) -> Any:
    if value is not None and declared == DataType.DOUBLE and not isinstance(value, float):
        return float(value)
    return value
