"""Common frame header and CRC trailer (all runtimes).

Layout, little-endian (docs/protocol.md, "Header"):

  offset size field
  0      1    version   protocol version (1)
  1      1    type      frame type (BIRTH=1 ... CMD=7, LOSS=8)
  2      1    flags     FLAG_HISTORICAL=0x01, FLAG_DELTA=0x02
  3      2    boot      u16 boot counter
  5      4    seq       u32 sequence number within the boot
  9      4    ticks     u32 device ticks in ms (ticks_ms, wraps at 2**tick_bits)
  13     ...  payload
  n-4    4    crc       CRC-32 (zlib's, shared_protocol/crc.py) of bytes [0, n-4)

The CRC trailer and the version byte at offset 0 are invariant across all
protocol versions, so any decoder can reject a corrupted frame ("crc") before
it looks at the version.
"""

import struct

from shared_protocol import PROTOCOL_VERSION
from shared_protocol.crc import crc32
from shared_protocol.errors import (
    BadCRC,
    BadField,
    TruncatedFrame,
    UnknownFrameType,
    UnsupportedVersion,
)

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


HEADER_FMT = "<BBBHII"
HEADER_SIZE = 13
CRC_SIZE = 4
MIN_FRAME = 17  # HEADER_SIZE + CRC_SIZE
_MAX_TYPE = const(8)


def pack_header(buf, ftype, flags, boot, seq, ticks):  # noqa: PLR0917
    """Write the 13-byte header at offset 0 of buf. Allocates nothing."""
    struct.pack_into(HEADER_FMT, buf, 0, PROTOCOL_VERSION, ftype, flags, boot, seq, ticks)


def seal(buf, n):
    """Append the CRC-32 of buf[0:n] at offset n; return the frame length n + 4.

    Slices a memoryview, so it allocates one small object: fine for the rare
    frames (BIRTH, HEALTH, ACK, CMD). DataEncoder caches its views instead.
    """
    struct.pack_into("<I", buf, n, crc32(memoryview(buf)[:n]))
    return n + CRC_SIZE


def check_frame(frame):
    """Check length, CRC, version and type of a complete frame; return its length.

    Raises TruncatedFrame, BadCRC, UnsupportedVersion or UnknownFrameType.
    """
    n = len(frame)
    if n < MIN_FRAME:
        raise TruncatedFrame("frame of %d bytes is shorter than the 17-byte minimum" % n)
    body = n - CRC_SIZE
    want = struct.unpack_from("<I", frame, body)[0]
    got = crc32(memoryview(frame)[:body]) & 0xFFFFFFFF
    if got != want:
        raise BadCRC("CRC-32 mismatch: frame says %08x, bytes give %08x" % (want, got))
    version = frame[0]
    if version != PROTOCOL_VERSION:
        raise UnsupportedVersion(
            "protocol version %d not supported (this decoder speaks %d); "
            "upgrade the gateway before the devices" % (version, PROTOCOL_VERSION)
        )
    ftype = frame[1]
    if ftype < 1 or ftype > _MAX_TYPE:
        raise UnknownFrameType("unknown frame type %d (v1 knows 1..8)" % ftype)
    return n


def unpack_header(frame):
    """Check the frame (length, CRC, version, type); return
    (version, ftype, flags, boot, seq, ticks)."""
    check_frame(frame)
    return struct.unpack_from(HEADER_FMT, frame, 0)


def read_ranges(buf, offset, count, what):
    """count inclusive (u16 boot, u32 first, u32 last) ranges at offset (ACK, CMD_RESEND);
    raises BadField for a range whose first > last. The caller checked the length."""
    out = []
    i = 0
    while i < count:
        boot, first, last = struct.unpack_from("<HII", buf, offset)
        if first > last:
            raise BadField("%s range %d: first_seq %d > last_seq %d" % (what, i, first, last))
        out.append((boot, first, last))
        offset += 10
        i += 1
    return out
