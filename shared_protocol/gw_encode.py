"""Gateway-side encoders: ACK and CMD (gateway -> device).

Re-exported by encode.py (encode_ack, encode_cmd, cmd_arg); kept apart so a
board that only sends frames does not load them.
"""

import struct

from shared_protocol import ACK, CMD, CMD_CONFIG, CMD_OTA, CMD_RESEND
from shared_protocol.cmd_args import arg_size, arg_spec
from shared_protocol.errors import BadField
from shared_protocol.header import pack_header, seal

_HDR = 13
_CRC = 4
_U32 = 0xFFFFFFFF
MAX_RANGES = 255


def _need(buf, n, what):
    if len(buf) < n:
        raise BadField("buffer of %d bytes is too small for a %d-byte %s frame" % (len(buf), n, what))


def encode_ack(buf, boot, seq, ticks, ranges):
    """ACK (gateway -> device): ranges of (boot, first_seq, last_seq), inclusive,
    that the gateway has persisted. Header boot/seq/ticks are the gateway's."""
    n = len(ranges)
    if n > MAX_RANGES:
        raise BadField("an ACK carries at most %d ranges, got %d" % (MAX_RANGES, n))
    _need(buf, _HDR + 1 + 10 * n + _CRC, "ACK")
    pack_header(buf, ACK, 0, boot, seq, ticks)
    buf[_HDR] = n
    return seal(buf, write_ranges(buf, _HDR + 1, ranges, "ACK"))


def write_ranges(buf, offset, ranges, what):
    """Write (u16 boot, u32 first, u32 last) ranges at offset (ACK, CMD_RESEND; read back
    by header.read_ranges); return the offset after them. Raises BadField for a range
    out of bounds or with first > last."""
    for boot, first, last in ranges:
        if not (0 <= boot <= 0xFFFF and 0 <= first <= last <= _U32):
            raise BadField("bad %s range (%r, %r, %r): need boot u16, first <= last u32" % (what, boot, first, last))
        struct.pack_into("<HII", buf, offset, boot, first, last)
        offset += 10
    return offset


def cmd_arg(op, *values):
    """Build the argument bytes of a CMD op, e.g. cmd_arg(CMD_SET_RATE, 50000)
    (layouts: cmd_args.CMD_ARGS)."""
    spec = arg_spec(op)
    if op == CMD_CONFIG:
        if len(values) != 1:
            raise BadField("CMD_CONFIG takes one argument: JSON text or bytes")
        v = values[0]
        return v.encode("utf-8") if isinstance(v, str) else bytes(v)
    if op == CMD_OTA:
        if len(values) != 1:
            raise BadField(
                "CMD_OTA takes one argument: bytes from shared_protocol.ota (begin_arg, chunk_arg, abort_arg)"
            )
        return bytes(values[0])
    if op == CMD_RESEND:
        if len(values) != 1:
            raise BadField("CMD_RESEND takes one argument: a list of (boot, first, last) ranges")
        from shared_protocol.repair import resend_arg

        return resend_arg(values[0])
    fmt, names = spec
    if len(values) != len(names):
        raise BadField("CMD op %d takes %d values (%s), got %d" % (op, len(names), ", ".join(names), len(values)))
    try:
        return struct.pack(fmt, *values)
    except (struct.error, OverflowError, TypeError, ValueError):
        raise BadField("bad argument %r for CMD op %d (format %s)" % (values, op, fmt)) from None


def encode_cmd(buf, boot, seq, ticks, cmd_id, op, arg=b""):  # noqa: PLR0917
    """CMD (gateway -> device): cmd_id u32 (echoed by the device), op u8,
    arg_len u16, arg (op-specific, see cmd_arg)."""
    want = arg_size(op)  # raises BadField for an unknown op
    if want is not None and len(arg) != want:
        raise BadField("CMD op %d needs a %d-byte argument, got %d" % (op, want, len(arg)))
    if op == CMD_RESEND:
        from shared_protocol.repair import resend_ranges

        resend_ranges(arg)  # raises BadField for a malformed range list
    if not 0 <= cmd_id <= _U32:
        raise BadField("cmd_id must be a u32, got %r" % cmd_id)
    if len(arg) > 0xFFFF:
        raise BadField("CMD argument longer than 65535 bytes")
    _need(buf, _HDR + 7 + len(arg) + _CRC, "CMD")
    pack_header(buf, CMD, 0, boot, seq, ticks)
    struct.pack_into("<IBH", buf, _HDR, cmd_id, op, len(arg))
    o = _HDR + 7
    buf[o : o + len(arg)] = arg
    return seal(buf, o + len(arg))
