"""Typed facade over shared_protocol for the gateway.

shared_protocol's plain-Python modules run on boards and carry no type
annotations; this module gives the gateway typed entry points to them (one
place for the ``no-untyped-call`` exemptions) and nothing else.
"""

from __future__ import annotations

from typing import Any, Protocol

from shared_protocol import decode as _decode
from shared_protocol import gw_encode as _gw_encode
from shared_protocol import header as _header
from shared_protocol import topics as _topics
from shared_protocol.decode import Schema
from shared_protocol.errors import ProtocolError
from shared_protocol.np_decode import DataBatch, decode_data_many

__all__ = [
    "MAX_RANGES",
    "DataBatch",
    "DecodedFrame",
    "ProtocolError",
    "Schema",
    "decode_data_many",
    "decode_frame",
    "encode_ack",
    "encode_cmd",
    "make_schema",
    "parse_topic",
    "protocol_error",
    "unpack_header",
]

MAX_RANGES: int = _gw_encode.MAX_RANGES


class DecodedFrame(Protocol):
    version: int
    type: int
    flags: int
    boot: int
    seq: int
    ticks: int
    fields: dict[str, Any]


def decode_frame(frame: bytes) -> DecodedFrame:
    """Any frame type (plain decoder); raises ProtocolError."""
    result: DecodedFrame = _decode.decode(frame)  # type: ignore[no-untyped-call,unused-ignore]
    return result


def make_schema(channels: Any) -> Schema:
    schema: Schema = Schema(channels)  # type: ignore[no-untyped-call,unused-ignore]
    return schema


def unpack_header(frame: bytes) -> tuple[int, int, int, int, int, int]:
    """(version, type, flags, boot, seq, ticks) after length/CRC/version/type checks."""
    v, t, f, b, s, k = _header.unpack_header(frame)  # type: ignore[no-untyped-call,unused-ignore]
    return int(v), int(t), int(f), int(b), int(s), int(k)


def parse_topic(topic: str) -> tuple[str, str, str, str]:
    p, s, d, k = _topics.parse_topic(topic)  # type: ignore[no-untyped-call,unused-ignore]
    return str(p), str(s), str(d), str(k)


def encode_ack(buf: bytearray, boot: int, seq: int, ticks: int, ranges: list[tuple[int, int, int]]) -> int:
    n: int = _gw_encode.encode_ack(buf, boot, seq, ticks, ranges)  # type: ignore[no-untyped-call,unused-ignore]
    return n


def encode_cmd(buf: bytearray, boot: int, seq: int, ticks: int, *, cmd_id: int, op: int, arg: bytes = b"") -> int:
    n: int = _gw_encode.encode_cmd(buf, boot, seq, ticks, cmd_id, op, arg)  # type: ignore[no-untyped-call,unused-ignore]
    return n


def protocol_error(message: str, reason: str) -> ProtocolError:
    """A ProtocolError with a gateway-side reason (e.g. "kind": type does not match the topic)."""
    err: ProtocolError = ProtocolError(message, reason)  # type: ignore[no-untyped-call,unused-ignore]
    return err
