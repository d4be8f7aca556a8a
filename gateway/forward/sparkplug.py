"""Sparkplug B 3.0 on the wire (``payload_format = "sparkplug"``): topics and payloads, with pysparkplug.

Plain data in (metric definitions, values, sequence numbers), bytes out; which message to send when
is the session's job (``sparkplug_session.py``), what a record becomes is ``sparkplug_metrics.py``.
Imported only when that format is configured.

Rules of the specification this module enforces (Sparkplug 3.0, "Payloads"): NDEATH carries no
``seq``, only the ``bdSeq`` metric (Int64); births carry every metric with name, alias and datatype
(``Node Control/Rebirth`` without an alias, so any host can ask for a rebirth); DDATA and NDATA
carry aliases only, no names and no datatypes; every metric in a birth or data message has a
timestamp; a metric without a current value is sent with ``is_null``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pysparkplug as spb
from google.protobuf import descriptor_pool, message_factory  # type: ignore[import-untyped]

DataType = spb.DataType
MessageType = spb.MessageType

BD_SEQ = "bdSeq"
REBIRTH = "Node Control/Rebirth"
UNIT_PROPERTY = "engUnit"  # the property Ignition (MQTT Engine) turns into the tag's engineering unit

# The Tahu ``Payload`` message as pysparkplug registered it: used only to add metric properties
# (units) to a DBIRTH, which pysparkplug 0.3.0's Metric cannot carry.
_PB_PAYLOAD: Any = message_factory.GetMessageClass(
    descriptor_pool.Default().FindMessageTypeByName("org.eclipse.tahu.protobuf.Payload")
)
_PROPERTY_STRING = 12  # PropertyValue.type of a String


@dataclass(frozen=True)
class Value:
    """One metric of a birth or data message: ``value`` None means null."""

    name: str
    alias: int | None
    datatype: spb.DataType
    value: Any
    timestamp_ms: int
    unit: str | None = None
    historical: bool = False


def now_ms() -> int:
    return int(time.time() * 1000)


def topic(group: str, node: str, message_type: spb.MessageType, device: str | None = None) -> str:
    """``spBv1.0/<group>/<TYPE>/<edge node>[/<device>]``."""
    return str(spb.Topic(group_id=group, message_type=message_type, edge_node_id=node, device_id=device))


def check_id(what: str, value: str) -> str:
    """A Sparkplug id (group, edge node, device) is one MQTT topic level: no '/', '+' or '#'."""
    if not value or any(c in value for c in "/+#"):
        raise ValueError(f"{what} {value!r}: a Sparkplug id must be non-empty, without '/', '+' or '#'")
    return value


def ndeath(bd_seq: int, *, timestamp_ms: int | None = None) -> bytes:
    """The death certificate: registered as the MQTT will, and sent before a clean disconnect."""
    metric = spb.Metric(timestamp_ms, BD_SEQ, spb.DataType.INT64, bd_seq)
    return bytes(spb.NDeath(timestamp=timestamp_ms, bd_seq_metric=metric).encode())


def nbirth(seq: int, bd_seq: int, metrics: Sequence[Value], *, timestamp_ms: int) -> bytes:
    """NBIRTH: ``bdSeq`` (as in the will of this MQTT session), ``Node Control/Rebirth`` = false, ``metrics``."""
    head = (
        spb.Metric(timestamp_ms, BD_SEQ, spb.DataType.INT64, bd_seq),
        spb.Metric(timestamp_ms, REBIRTH, spb.DataType.BOOLEAN, False),
    )
    payload = spb.NBirth(timestamp=timestamp_ms, seq=seq, metrics=head + tuple(_birth_metric(v) for v in metrics))
    return _with_units(bytes(payload.encode()), metrics, offset=len(head))


def dbirth(seq: int, metrics: Sequence[Value], *, timestamp_ms: int) -> bytes:
    payload = spb.DBirth(timestamp=timestamp_ms, seq=seq, metrics=tuple(_birth_metric(v) for v in metrics))
    return _with_units(bytes(payload.encode()), metrics, offset=0)


def ddata(seq: int, metrics: Iterable[Value], *, timestamp_ms: int) -> bytes:
    payload = spb.DData(timestamp=timestamp_ms, seq=seq, metrics=tuple(_data_metric(v) for v in metrics))
    return bytes(payload.encode(include_dtypes=False))


def ndata(seq: int, metrics: Iterable[Value], *, timestamp_ms: int) -> bytes:
    payload = spb.NData(timestamp=timestamp_ms, seq=seq, metrics=tuple(_data_metric(v) for v in metrics))
    return bytes(payload.encode(include_dtypes=False))


def ddeath(seq: int, *, timestamp_ms: int) -> bytes:
    return bytes(spb.DDeath(timestamp=timestamp_ms, seq=seq).encode())


def rebirth_requested(raw: bytes) -> bool:
    """True for an NCMD with ``Node Control/Rebirth`` = true.  Raises ValueError for a payload that is
    not a Sparkplug B payload."""
    try:
        payload = _PB_PAYLOAD.FromString(raw)
    except Exception as exc:  # protobuf's DecodeError; a message in any case
        raise ValueError(f"not a Sparkplug B payload ({exc})") from exc
    return any(m.name == REBIRTH and m.HasField("boolean_value") and m.boolean_value for m in payload.metrics)


def _birth_metric(v: Value) -> spb.Metric:
    return spb.Metric(
        v.timestamp_ms, v.name, v.datatype, v.value, alias=v.alias, is_null=v.value is None, is_historical=v.historical
    )


def _data_metric(v: Value) -> spb.Metric:
    return spb.Metric(
        v.timestamp_ms, None, v.datatype, v.value, alias=v.alias, is_null=v.value is None, is_historical=v.historical
    )


def _with_units(raw: bytes, metrics: Sequence[Value], *, offset: int) -> bytes:
    """Add the ``engUnit`` property to the metrics that have a unit (births only)."""
    if not any(v.unit for v in metrics):
        return raw
    payload = _PB_PAYLOAD.FromString(raw)
    for i, v in enumerate(metrics):
        if v.unit:
            props = payload.metrics[offset + i].properties
            props.keys.append(UNIT_PROPERTY)
            prop = props.values.add()
            prop.type = _PROPERTY_STRING
            prop.string_value = v.unit
    return bytes(payload.SerializeToString())
