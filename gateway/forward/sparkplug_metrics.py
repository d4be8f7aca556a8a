"""What a forwarded record is in Sparkplug terms: which device, birth / death / data, which metrics.

Plain data in (the lane and the record as the gateway submitted it), plain data out
(:class:`Observation`).  Metric names are folders joined with ``/``; a record's nested fields are
flattened the same way:

========================  ==========================================================================
record                    Sparkplug
========================  ==========================================================================
registry ``birth``        the device's birth: ``Device/fw_version``, ``Device/boot``, ``Device/births``,
                          ``Health/<field>`` (its last HEALTH) and per channel
                          ``Channels/<name>/{min,max,mean,std}`` (Double, unit as property)
registry ``offline``      the device's death (DDEATH)
other registry events     ``Events/Last/type`` and ``Events/Last/json`` of the device, or of the
of a device               gateway (edge node) when the record names no device
summary                   ``Channels/<name>/<stat>``, ``Scores/<pipeline>/<stat>``, ``Summary/<field>``
alert                     ``Alerts/<pipeline>/<field>`` and ``Alerts/<pipeline>/active`` (Boolean:
                          state is not ``cleared``)
raw window                ``Raw/json`` (the window as JSON text)
========================  ==========================================================================

Every data message of a device also carries ``Record/key``: the record's idempotency key (at-least-once
delivery: a consumer drops a key it has seen).  Records without a ``device`` field are the gateway's
own (loss reports, queue recovery, rejected commands): node data ``Gateway/Last Record/{lane,key,json}``.
Numbers are Int64 (integers) or Double, booleans Boolean, text String, lists and objects in a list
JSON text (String).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from gateway.forward.sparkplug import DataType

BIRTH, DEATH, DATA = "birth", "death", "data"
KEY_METRIC = "Record/key"
NODE_METRICS: tuple[tuple[str, DataType], ...] = (
    ("Gateway/Last Record/lane", DataType.STRING),
    ("Gateway/Last Record/key", DataType.STRING),
    ("Gateway/Last Record/json", DataType.STRING),
)
CHANNEL_STATS = ("min", "max", "mean", "std")
_SKIP = frozenset({"device", "site"})
_TIME_FIELD = {"alert": "window_end", "summary": "end", "raw": "end", "registry": "at"}
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


@dataclass
class Observation:
    """A record as Sparkplug sees it.  ``values``: name -> (datatype, value); ``units``: name -> unit
    (births: the channel metrics)."""

    device: str | None
    kind: str  # BIRTH, DEATH or DATA
    timestamp: float  # seconds: when the values were captured
    values: dict[str, tuple[DataType, Any]] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    channels: tuple[str, ...] | None = None  # births: the device's channel names, in order


def observe(lane: str, record: dict[str, Any], *, created: float) -> Observation:
    """The Sparkplug view of ``record`` submitted on ``lane``."""
    device = record.get("device")
    at = record.get(_TIME_FIELD.get(lane, ""), created)
    timestamp = float(at) if isinstance(at, (int, float)) and not isinstance(at, bool) else created
    if not isinstance(device, str) or not device:
        obs = Observation(None, DATA, timestamp)
        obs.values["Gateway/Last Record/lane"] = (DataType.STRING, lane)
        obs.values["Gateway/Last Record/json"] = (DataType.STRING, _json(record))
        return obs
    event = record.get("event") if lane == "registry" else None
    if event == "birth":
        return _birth(device, record, timestamp)
    if event == "offline":
        return Observation(device, DEATH, timestamp)
    obs = Observation(device, DATA, timestamp)
    rest = {k: v for k, v in record.items() if k not in _SKIP}
    if lane == "summary":
        for folder, key in (("Channels", "channels"), ("Scores", "scores")):
            part = rest.pop(key, None)
            if isinstance(part, dict):
                _flatten(obs.values, folder, part)
        _flatten(obs.values, "Summary", rest)
    elif lane == "alert":
        pipeline = str(rest.pop("pipeline", "default")).replace("/", "_") or "default"
        _flatten(obs.values, f"Alerts/{pipeline}", rest)
        obs.values[f"Alerts/{pipeline}/active"] = (DataType.BOOLEAN, rest.get("state", "raised") != "cleared")
    elif lane == "raw":
        obs.values["Raw/json"] = (DataType.STRING, _json(rest))
    else:
        obs.values["Events/Last/type"] = (DataType.STRING, str(event))
        obs.values["Events/Last/json"] = (DataType.STRING, _json(rest))
    return obs


def value_type(value: Any) -> DataType:
    """The Sparkplug datatype of a JSON value (None: String, its value null)."""
    if isinstance(value, bool):
        return DataType.BOOLEAN
    if isinstance(value, int) and _INT64_MIN <= value <= _INT64_MAX:
        return DataType.INT64
    if isinstance(value, (int, float)):
        return DataType.DOUBLE
    return DataType.STRING


def _birth(device: str, record: dict[str, Any], timestamp: float) -> Observation:
    obs = Observation(device, BIRTH, timestamp)
    for key in ("fw_version", "boot", "births", "state_reason"):
        if key in record:
            _flatten(obs.values, "Device", {key: record[key]})
    health = record.get("last_health")
    if isinstance(health, dict):
        _flatten(obs.values, "Health", health)
    names = []
    for channel in record.get("channels") or []:
        if not isinstance(channel, (list, tuple)) or not channel:
            continue
        name = _level(str(channel[0]))
        unit = str(channel[1]) if len(channel) > 1 and channel[1] else ""
        names.append(name)
        for stat in CHANNEL_STATS:
            metric = f"Channels/{name}/{stat}"
            obs.values[metric] = (DataType.DOUBLE, None)
            if unit:
                obs.units[metric] = unit
    obs.channels = tuple(names)
    return obs


def _flatten(out: dict[str, tuple[DataType, Any]], prefix: str, value: Any) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(out, f"{prefix}/{_level(str(key))}", item)
        return
    if isinstance(value, (list, tuple)):
        out[prefix] = (DataType.STRING, _json(value))
        return
    out[prefix] = (value_type(value), value)


def _level(name: str) -> str:
    """One folder level: a '/' inside a field name would make a folder of it."""
    return name.replace("/", "_") or "_"


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)
