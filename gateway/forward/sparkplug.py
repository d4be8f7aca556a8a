"""Sparkplug B payloads toward the cloud (``payload_format = "sparkplug"``), with pysparkplug.

Topic ``spBv1.0/<sparkplug_group>/DDATA/<gateway_id>/<lane>``: one DDATA payload per record whose
metrics are ``edgeline/key`` (String, the idempotency key), ``edgeline/seq`` (UInt64),
``edgeline/created`` (DateTime) and the record's leaves flattened with ``/`` (numbers as Double or
Int64, booleans as Boolean, strings as String, lists and null as JSON String).  Records older than
60 s when sent are flagged historical, as Sparkplug's store-and-forward expects.  An NBIRTH (bdSeq)
is published on every connection.  Imported only when that format is configured.
"""

from __future__ import annotations

import datetime
import json
import time
from typing import Any

import pysparkplug as spb

from gateway.forward.payload import idempotency_key
from gateway.forward.queue import LANES, QueuedRecord

HISTORICAL_AFTER_S = 60.0


def nbirth(group: str, gateway_id: str, bd_seq: int) -> tuple[str, bytes]:
    now = int(time.time() * 1000)
    birth = spb.NBirth(timestamp=now, seq=0, metrics=(spb.Metric(now, "bdSeq", spb.DataType.UINT64, bd_seq % 256),))
    topic = spb.Topic(group_id=group, message_type=spb.MessageType.NBIRTH, edge_node_id=gateway_id)
    return str(topic), bytes(birth.encode())


def sparkplug_topic(group: str, gateway_id: str, lane: int) -> str:
    return str(
        spb.Topic(group_id=group, message_type=spb.MessageType.DDATA, edge_node_id=gateway_id, device_id=LANES[lane])
    )


def encode_sparkplug(gateway_id: str, record: QueuedRecord, *, now: float | None = None) -> bytes:
    now_s = time.time() if now is None else now
    ts = int(record.created * 1000)
    created = datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC)
    historical = now_s - record.created > HISTORICAL_AFTER_S
    metrics = [
        spb.Metric(
            ts,
            "edgeline/key",
            spb.DataType.STRING,
            idempotency_key(gateway_id, record.lane, record.epoch, record.seq),
            is_historical=historical,
        ),
        spb.Metric(ts, "edgeline/seq", spb.DataType.UINT64, record.seq, is_historical=historical),
        spb.Metric(ts, "edgeline/created", spb.DataType.DATETIME, created, is_historical=historical),
    ]
    body = json.loads(record.body)
    for name, dtype, value in _flatten("record", body):
        metrics.append(spb.Metric(ts, name, dtype, value, is_historical=historical, is_null=value is None))
    # Sparkplug's seq is 0..255 per message; our own per-lane seq travels in edgeline/seq.
    payload = spb.DData(timestamp=int(now_s * 1000), seq=record.seq % 256, metrics=tuple(metrics))
    return bytes(payload.encode(include_dtypes=True))


def decode_sparkplug(raw: bytes) -> dict[str, Any]:
    """Metric name -> value of a DDATA payload made by :func:`encode_sparkplug` (used by tests and tools)."""
    payload = spb.DData.decode(raw)
    return {str(m.name): m.value for m in payload.metrics}


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _flatten(prefix: str, value: Any) -> list[tuple[str, spb.DataType, Any]]:
    if isinstance(value, dict):
        out: list[tuple[str, spb.DataType, Any]] = []
        for key, item in value.items():
            out.extend(_flatten(f"{prefix}/{key}", item))
        return out
    if isinstance(value, bool):
        return [(prefix, spb.DataType.BOOLEAN, value)]
    if isinstance(value, int) and _INT64_MIN <= value <= _INT64_MAX:
        return [(prefix, spb.DataType.INT64, value)]
    if isinstance(value, float):
        return [(prefix, spb.DataType.DOUBLE, value)]
    if isinstance(value, str):
        return [(prefix, spb.DataType.STRING, value)]
    return [(prefix, spb.DataType.STRING, json.dumps(value, separators=(",", ":")))]
