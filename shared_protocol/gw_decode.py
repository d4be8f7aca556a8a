"""Parsers of the frames the gateway sends (ACK, CMD), all runtimes.

The one place their layouts are read: decode.py decodes ACK and CMD with
ack_ranges() and cmd_parts(), and a board parses what the gateway sends with
parse() without loading decode.py (about 14 KB of heap on a board). The CMD
argument of each op is read with cmd_args.py, loaded only when a CMD arrives.
Layouts: docs/protocol.md, "ACK" and "CMD"; gw_encode.py builds them.
"""

import struct

from shared_protocol.errors import BadField, BadLength, TruncatedFrame
from shared_protocol.header import check_frame, read_ranges

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


# Private consts are inlined by the compiler (no RAM on a board); they mirror
# shared_protocol/__init__.py and header.py (tests/protocol/test_roundtrip.py checks it).
_ACK = const(6)
_CMD = const(7)
_HEADER_SIZE = const(13)
_CRC_SIZE = const(4)
_CMD_FIXED = const(7)  # cmd_id u32, op u8, arg_len u16


def check_length(n, want, what):
    """Raise TruncatedFrame if a `what` frame of n bytes is shorter than the want bytes its
    layout needs, BadLength if it is longer (every decoder's length rule)."""
    if n < want:
        raise TruncatedFrame("%s frame of %d bytes, layout needs %d" % (what, n, want))
    if n != want:
        raise BadLength("%s frame of %d bytes, its fields announce %d" % (what, n, want))


def payload(frame, n, ftype):
    """The payload of an ACK or CMD frame of n bytes whose header and CRC were checked;
    raises TruncatedFrame, BadLength or BadField.

    ACK: [(boot, first_seq, last_seq), ...]. CMD: (cmd_id, op, arg bytes); the op and
    its argument are checked by cmd_args.arg_values, not here.
    """
    if ftype == _ACK:
        if n < _HEADER_SIZE + 1 + _CRC_SIZE:
            raise TruncatedFrame("ACK frame of %d bytes has no range count" % n)
        count = frame[_HEADER_SIZE]
        check_length(n, _HEADER_SIZE + 1 + 10 * count + _CRC_SIZE, "ACK")
        return read_ranges(frame, _HEADER_SIZE + 1, count, "ACK")
    if n < _HEADER_SIZE + _CMD_FIXED + _CRC_SIZE:
        raise TruncatedFrame("CMD frame of %d bytes, fixed part needs %d" % (n, _HEADER_SIZE + _CMD_FIXED + _CRC_SIZE))
    cmd_id, op, alen = struct.unpack_from("<IBH", frame, _HEADER_SIZE)
    start = _HEADER_SIZE + _CMD_FIXED
    check_length(n, start + alen + _CRC_SIZE, "CMD")
    return cmd_id, op, bytes(frame[start : start + alen])


def parse(frame):
    """(ftype, payload) of a frame sent to a device (ACK or CMD, see payload());
    raises a ProtocolError subclass."""
    n = check_frame(frame)
    ftype = frame[1]
    if ftype != _ACK and ftype != _CMD:  # noqa: PLR1714 (no tuple built per frame on a board)
        raise BadField("frame type %d is not for a device (expected ACK or CMD)" % ftype)
    return ftype, payload(frame, n, ftype)
