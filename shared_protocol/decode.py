"""Plain-Python frame decoder (all runtimes).

The gateway uses it for every frame type except the DATA hot path
(np_decode.py); a board parses ACK and CMD with gw_decode.py, whose layout code
this module shares. Every check failure raises a ProtocolError
subclass with a stable `.reason`; nothing else escapes for any input bytes.
"""

import struct

from shared_protocol.cmd_args import CMD_ARGS, arg_values
from shared_protocol.errors import BadField, BadFlags, ProtocolError, SchemaMismatch
from shared_protocol.gw_decode import check_length, payload
from shared_protocol.header import CRC_SIZE, HEADER_FMT, HEADER_SIZE, check_frame

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


# Private consts are inlined by the compiler (no RAM on a board); they mirror
# shared_protocol/__init__.py (tests/protocol/test_roundtrip.py checks it).
_ACK = const(6)
_BIRTH = const(1)
_CMD = const(7)
_CMD_CONFIG = const(7)
_CMD_OTA = const(9)
_DATA = const(2)
_DEATH = const(5)
_EVENT = const(3)
_FLAGS_KNOWN = const(3)
_FLAG_DELTA = const(2)
_HEALTH = const(4)
_LOSS = const(8)

TYPE_NAMES = {
    _BIRTH: "birth",
    _DATA: "data",
    _EVENT: "event",
    _HEALTH: "health",
    _DEATH: "death",
    _ACK: "ack",
    _CMD: "cmd",
    _LOSS: "loss",
}

# HEALTH field names in wire order (also the keyword names of encode.encode_health).
HEALTH_FIELDS = (
    "uptime_s",
    "free_heap",
    "rssi",
    "battery_mv",
    "queue_depth",
    "dropped_frames",
    "irq_overruns",
    "worst_latency_us",
    "jitter_us",
)
_HEALTH_FMT = "<IIbHIIIII"
_HEALTH_SIZE = 31


class Frame:
    """A decoded frame: header values plus a dict of type-specific fields."""

    def __init__(self, version, ftype, flags, boot, seq, ticks, fields):  # noqa: PLR0917
        self.version = version
        self.type = ftype
        self.flags = flags
        self.boot = boot
        self.seq = seq
        self.ticks = ticks
        self.fields = fields

    @property
    def kind(self):
        return TYPE_NAMES[self.type]

    def __repr__(self):
        return "Frame(%s v%d flags=%d boot=%d seq=%d ticks=%d %r)" % (
            TYPE_NAMES.get(self.type, "?"),
            self.version,
            self.flags,
            self.boot,
            self.seq,
            self.ticks,
            self.fields,
        )


class Schema:
    """Channel schema a DATA frame is decoded with (from a BIRTH frame).

    channels: list of (name, unit, scale, offset, sample_type, rate_hz).
    """

    def __init__(self, channels):
        channels = [tuple(c) for c in channels]
        from shared_protocol.schema import channel_table, table_schema_id

        self.channels = channels
        self.schema_id = table_schema_id(channel_table(channels))
        self.nchannels = len(channels)
        self.names = [c[0] for c in channels]
        self.units = [c[1] for c in channels]
        self.scales = [float(c[2]) for c in channels]
        self.offsets = [float(c[3]) for c in channels]

    def check(self, nchannels, schema_id):
        """Raise SchemaMismatch unless a DATA frame with these values fits."""
        if nchannels != self.nchannels:
            raise SchemaMismatch(
                "DATA frame has %d channels, schema %04x has %d: request a new BIRTH (CMD_REBIRTH)"
                % (nchannels, self.schema_id, self.nchannels)
            )
        if schema_id and schema_id != self.schema_id:
            raise SchemaMismatch(
                "DATA frame is for schema %04x, decoder holds %04x: request a new BIRTH (CMD_REBIRTH)"
                % (schema_id, self.schema_id)
            )

    def __repr__(self):
        return "Schema(%04x, %r)" % (self.schema_id, self.names)


def schema_from_birth(frame):
    """Schema of a BIRTH frame (a decoded Frame, or the frame's bytes)."""
    if not isinstance(frame, Frame):
        frame = decode(frame)
    if frame.type != _BIRTH:
        raise BadField("schema_from_birth needs a BIRTH frame, got type %d" % frame.type)
    return Schema(frame.fields["channels"])


def _decode_health(frame, n):
    check_length(n, HEADER_SIZE + _HEALTH_SIZE + CRC_SIZE, "HEALTH")
    vals = struct.unpack_from(_HEALTH_FMT, frame, HEADER_SIZE)
    fields = {}
    i = 0
    while i < len(HEALTH_FIELDS):
        fields[HEALTH_FIELDS[i]] = vals[i]
        i += 1
    return fields


def _decode_cmd(frame, n):
    cmd_id, op, arg = payload(frame, n, _CMD)
    fields = {"cmd_id": cmd_id, "op": op, "arg": arg}
    values = arg_values(op, arg)
    if values is not None:
        names = CMD_ARGS[op][1]
        i = 0
        while i < len(names):
            fields[names[i]] = values[i]
            i += 1
    elif op == _CMD_CONFIG:
        try:
            import json

            cfg = json.loads(arg.decode("utf-8"))
        except (ValueError, UnicodeError):
            raise BadField("CMD_CONFIG argument is not UTF-8 JSON") from None
        if not isinstance(cfg, dict):
            raise BadField("CMD_CONFIG argument must be a JSON object")
        fields["config"] = cfg
    elif op == _CMD_OTA:
        from shared_protocol.ota import parse_arg

        try:
            fields["ota"] = parse_arg(arg)  # (sub-op, transfer, its fields)
        except ValueError as e:
            raise BadField(str(e)) from None
    else:  # CMD_RESEND
        from shared_protocol.repair import resend_ranges

        fields["ranges"] = resend_ranges(arg)
    return fields


def decode(frame, schema=None):
    """Decode one frame (bytes, bytearray or memoryview) into a Frame.

    schema: a Schema to check DATA/EVENT frames against and to turn their raw
    integers into physical values ("values"). Raises a ProtocolError subclass
    for any frame that fails a check.
    """
    n = check_frame(frame)
    version, ftype, flags, boot, seq, ticks = struct.unpack_from(HEADER_FMT, frame, 0)
    if flags & ~_FLAGS_KNOWN:
        raise BadFlags("unknown flag bits %02x" % (flags & ~_FLAGS_KNOWN))
    if flags & _FLAG_DELTA and ftype != _DATA:
        raise BadFlags("FLAG_DELTA set on a %s frame" % TYPE_NAMES[ftype])
    if flags and ftype >= _DEATH:
        # DEATH (the last will), ACK, CMD and LOSS are never replayed: no flag applies
        raise BadFlags("flags %02x set on a %s frame" % (flags, TYPE_NAMES[ftype]))
    if ftype <= _EVENT:
        # BIRTH, DATA, EVENT: only the gateway decodes these; a board never loads them
        from shared_protocol import decode_device

        if ftype == _DATA:
            fields = decode_device.decode_data_fields(frame, n, flags, schema)
        elif ftype == _BIRTH:
            fields = decode_device.decode_birth_fields(frame, n)
        else:
            fields = decode_device.decode_event_fields(frame, n, schema)
    elif ftype == _HEALTH:
        fields = _decode_health(frame, n)
    elif ftype == _DEATH:
        check_length(n, HEADER_SIZE + CRC_SIZE, "DEATH")
        fields = {}
    elif ftype == _ACK:
        fields = {"ranges": payload(frame, n, _ACK)}
    elif ftype == _CMD:
        fields = _decode_cmd(frame, n)
    else:
        from shared_protocol.repair import decode_loss_fields

        fields = decode_loss_fields(frame, n)
    return Frame(version, ftype, flags, boot, seq, ticks, fields)


__all__ = ["TYPE_NAMES", "Frame", "ProtocolError", "Schema", "decode", "schema_from_birth"]
