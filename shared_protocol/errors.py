"""Exceptions raised for frames that fail a check.

Every rejection is a ProtocolError (a ValueError) with a short, stable
``reason`` string that callers use as a counter key:

  "truncated"  frame shorter than its layout needs
  "length"     frame length does not match what its fields announce
  "crc"        CRC-32 mismatch
  "version"    protocol version this decoder does not speak
  "type"       unknown frame type
  "flags"      flag bit this decoder does not know, or not valid for the type
  "schema"     DATA frame does not match the channel schema it is decoded with
  "field"      a field value out of range or malformed (UTF-8, JSON, op...)
  "topic"      MQTT topic that breaks the topic rules
"""


class ProtocolError(ValueError):
    reason = "protocol"

    def __init__(self, message, reason=None):
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class TruncatedFrame(ProtocolError):
    reason = "truncated"


class BadLength(ProtocolError):
    reason = "length"


class BadCRC(ProtocolError):
    reason = "crc"


class UnsupportedVersion(ProtocolError):
    reason = "version"


class UnknownFrameType(ProtocolError):
    reason = "type"


class BadFlags(ProtocolError):
    reason = "flags"


class SchemaMismatch(ProtocolError):
    reason = "schema"


class BadField(ProtocolError):
    reason = "field"


class BadTopic(ProtocolError):
    reason = "topic"


REASONS = (
    "truncated",
    "length",
    "crc",
    "version",
    "type",
    "flags",
    "schema",
    "field",
    "topic",
)
