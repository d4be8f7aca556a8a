"""Gap repair (all runtimes): the CMD_RESEND argument and the LOSS frame.

The gateway knows which sequence numbers it is missing; it asks the device for
them with CMD_RESEND (ranges of (boot, first, last)). The device sends every
frame of those ranges it still holds again (flagged historical) and answers the
rest with one LOSS frame: ranges of (boot, first, last, reason) it can never
send. Layouts: docs/protocol.md, "CMD_RESEND" and "LOSS".

A board loads this module only when a CMD_RESEND arrives (it is rare).
"""

import struct

from shared_protocol import LOSS, LOSS_GONE, LOSS_UNSAVED, LOSS_UNUSED
from shared_protocol.errors import BadField
from shared_protocol.gw_decode import check_length
from shared_protocol.header import pack_header, read_ranges, seal

_HDR = 13
_CRC = 4
_U32 = 0xFFFFFFFF
RESEND_MAX_RANGES = 24  # one CMD stays small; the gateway asks again for the rest
LOSS_MAX_RANGES = 16  # one LOSS frame of at most 13 + 1 + 16 x 11 + 4 = 194 bytes
LOSS_REASONS = (LOSS_GONE, LOSS_UNSAVED, LOSS_UNUSED)


def resend_arg(ranges):
    """CMD_RESEND argument bytes for [(boot, first, last), ...] (1..RESEND_MAX_RANGES)."""
    n = len(ranges)
    if not 1 <= n <= RESEND_MAX_RANGES:
        raise BadField("CMD_RESEND carries 1..%d ranges, got %d" % (RESEND_MAX_RANGES, n))
    from shared_protocol.gw_encode import write_ranges  # gateway side: a board never builds one

    out = bytearray(1 + 10 * n)
    out[0] = n
    write_ranges(out, 1, ranges, "CMD_RESEND")
    return bytes(out)


def resend_ranges(arg):
    """[(boot, first, last), ...] of a CMD_RESEND argument; raises BadField."""
    n = len(arg)
    if n < 1:
        raise BadField("CMD_RESEND argument is empty (needs a range count)")
    count = arg[0]
    if count < 1 or count > RESEND_MAX_RANGES or n != 1 + 10 * count:
        raise BadField("CMD_RESEND argument of %d bytes does not hold 1..%d ranges" % (n, RESEND_MAX_RANGES))
    return read_ranges(arg, 1, count, "CMD_RESEND")


def loss_size(count):
    return _HDR + 1 + 11 * count + _CRC


def encode_loss(buf, boot, seq, ticks, ranges):
    """LOSS (device -> gateway): [(boot, first, last, reason), ...], 1..LOSS_MAX_RANGES.

    Header boot/seq/ticks are the device's current ones; seq is the next sequence
    number and is not consumed (like DEATH). Returns the frame length."""
    n = len(ranges)
    if not 1 <= n <= LOSS_MAX_RANGES:
        raise BadField("a LOSS frame carries 1..%d ranges, got %d" % (LOSS_MAX_RANGES, n))
    if len(buf) < loss_size(n):
        raise BadField("buffer of %d bytes is too small for a %d-byte LOSS frame" % (len(buf), loss_size(n)))
    pack_header(buf, LOSS, 0, boot, seq, ticks)
    buf[_HDR] = n
    o = _HDR + 1
    for rb, first, last, reason in ranges:
        if not (0 <= rb <= 0xFFFF and 0 <= first <= last <= _U32) or reason not in LOSS_REASONS:
            raise BadField("bad LOSS range (%r, %r, %r, reason %r)" % (rb, first, last, reason))
        struct.pack_into("<HIIB", buf, o, rb, first, last, reason)
        o += 11
    return seal(buf, o)


def decode_loss_fields(frame, n):
    """Fields of a LOSS frame whose header and CRC were checked: {"ranges": [...]}."""
    if n < _HDR + 1 + _CRC:
        from shared_protocol.errors import TruncatedFrame

        raise TruncatedFrame("LOSS frame of %d bytes has no range count" % n)
    count = frame[_HDR]
    want = loss_size(count)
    check_length(n, want, "LOSS")
    if count < 1:
        raise BadField("LOSS frame with 0 ranges")
    out = []
    o = _HDR + 1
    i = 0
    while i < count:
        rb, first, last, reason = struct.unpack_from("<HIIB", frame, o)
        if first > last:
            raise BadField("LOSS range %d: first %d > last %d" % (i, first, last))
        if reason not in LOSS_REASONS:
            raise BadField("LOSS range %d: unknown reason %d" % (i, reason))
        out.append((rb, first, last, reason))
        o += 11
        i += 1
    return {"ranges": out}
