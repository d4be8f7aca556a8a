# Frames the gateway sends to the device (ACK, CMD), parsed without loading the
# full decoder (shared_protocol.decode costs ~14 KB of heap on a board).
# Layouts: docs/protocol.md; CRC, version and type are checked by header.check_frame.

import struct

from shared_protocol import ACK, CMD
from shared_protocol.errors import BadField, TruncatedFrame
from shared_protocol.header import HEADER_SIZE, check_frame, read_ranges


def parse(frame):
    """(ftype, payload) for an ACK or CMD frame; raises a ProtocolError subclass.

    ACK payload: list of (boot, first_seq, last_seq).
    CMD payload: (cmd_id, op, arg bytes).
    """
    n = check_frame(frame)
    ftype = frame[1]
    body = n - 4
    if ftype == ACK:
        if body < HEADER_SIZE + 1:
            raise TruncatedFrame("ACK frame of %d bytes has no range count" % n)
        count = frame[HEADER_SIZE]
        if HEADER_SIZE + 1 + 10 * count != body:
            raise BadField("ACK frame of %d bytes does not hold %d ranges" % (n, count))
        return ftype, read_ranges(frame, HEADER_SIZE + 1, count, "ACK")
    if ftype == CMD:
        if body < HEADER_SIZE + 7:
            raise TruncatedFrame("CMD frame of %d bytes, fixed part needs %d" % (n, HEADER_SIZE + 11))
        cmd_id, op, alen = struct.unpack_from("<IBH", frame, HEADER_SIZE)
        if HEADER_SIZE + 7 + alen != body:
            raise BadField("CMD frame of %d bytes announces a %d-byte argument" % (n, alen))
        return ftype, (cmd_id, op, bytes(frame[HEADER_SIZE + 7 : body]))
    raise BadField("frame type %d is not for a device (expected ACK or CMD)" % ftype)
