"""Channel table shared by BIRTH frames and DATA schema checks (all runtimes).

A channel is a tuple (name, unit, scale, offset, sample_type, rate_hz);
physical value = raw * scale + offset. The table's byte form is what BIRTH
carries; its CRC-32 folded to 16 bits is the schema id that DATA frames repeat
so the gateway notices a DATA frame decoded against a stale BIRTH.
"""

import struct

from shared_protocol import ST_FLOAT32, ST_INT16, ST_INT32
from shared_protocol.crc import crc32
from shared_protocol.errors import BadField

SAMPLE_SIZES = {ST_INT16: 2, ST_INT32: 4, ST_FLOAT32: 4}
MAX_CHANNELS = 64
MAX_NAME = 32
MAX_UNIT = 16
_CH_TAIL = "<dddB"  # scale, offset, rate_hz, sample_type
_CH_TAIL_SIZE = 25


def _utf8(text, what, lo, hi):
    if not isinstance(text, str):
        raise BadField("%s must be a str, got %r" % (what, text))
    raw = text.encode("utf-8")
    if len(raw) < lo or len(raw) > hi:
        raise BadField("%s %r must be %d..%d UTF-8 bytes" % (what, text, lo, hi))
    return raw


def _finite(x):
    # NaN is the only value unequal to itself; x - x is NaN for +-inf too.
    d = x - x
    return d == 0


def channel_table(channels):
    """Return the byte form of a channel list (see docs/protocol.md, BIRTH)."""
    n = len(channels)
    if n < 1 or n > MAX_CHANNELS:
        raise BadField("a schema needs 1..%d channels, got %d" % (MAX_CHANNELS, n))
    parts = [struct.pack("<B", n)]
    for ch in channels:
        if len(ch) != 6:
            raise BadField("channel %r must be (name, unit, scale, offset, sample_type, rate_hz)" % (ch,))
        name, unit, scale, offset, stype, rate = ch
        raw_name = _utf8(name, "channel name", 1, MAX_NAME)
        raw_unit = _utf8(unit, "unit of channel %s" % name, 0, MAX_UNIT)
        if stype not in SAMPLE_SIZES:
            raise BadField("channel %s: unknown sample type %r" % (name, stype))
        if not (_finite(scale) and _finite(offset) and _finite(rate)) or rate < 0:
            raise BadField("channel %s: scale, offset and rate_hz must be finite, rate_hz >= 0" % name)
        parts.append(struct.pack("<B", len(raw_name)) + raw_name)
        parts.append(struct.pack("<B", len(raw_unit)) + raw_unit)
        parts.append(struct.pack(_CH_TAIL, scale, offset, rate, stype))
    return b"".join(parts)


def table_schema_id(table):
    """16-bit schema id of a channel table (never 0: 0 means 'not given')."""
    sid = (crc32(table) & 0xFFFFFFFF) % 65535
    return sid + 1


def schema_id(channels):
    """16-bit schema id of a channel list, as DataEncoder(schema_id=...) wants it."""
    return table_schema_id(channel_table(channels))


def parse_channel_table(data, offset, end):
    """Parse a channel table from data[offset:end]; return (channels, next_offset)."""
    if offset >= end:
        raise BadField("channel table missing")
    n = data[offset]
    if n < 1 or n > MAX_CHANNELS:
        raise BadField("channel count %d outside 1..%d" % (n, MAX_CHANNELS))
    pos = offset + 1
    channels = []
    i = 0
    while i < n:
        texts = []
        k = 0
        while k < 2:
            if pos >= end:
                raise BadField("channel %d: table ends inside a string" % i)
            ln = data[pos]
            pos += 1
            if pos + ln > end:
                raise BadField("channel %d: string runs past the table" % i)
            try:
                texts.append(bytes(data[pos : pos + ln]).decode("utf-8"))
            except UnicodeError:
                raise BadField("channel %d: string is not UTF-8" % i) from None
            pos += ln
            k += 1
        if pos + _CH_TAIL_SIZE > end:
            raise BadField("channel %d: table ends inside scale/offset/rate" % i)
        scale, off, rate, stype = struct.unpack_from(_CH_TAIL, data, pos)
        pos += _CH_TAIL_SIZE
        name, unit = texts
        if not name or len(name.encode("utf-8")) > MAX_NAME:
            raise BadField("channel %d: name must be 1..%d bytes" % (i, MAX_NAME))
        if len(unit.encode("utf-8")) > MAX_UNIT:
            raise BadField("channel %d: unit longer than %d bytes" % (i, MAX_UNIT))
        if stype not in SAMPLE_SIZES:
            raise BadField("channel %s: unknown sample type %d" % (name, stype))
        if not (_finite(scale) and _finite(off) and _finite(rate)) or rate < 0:
            raise BadField("channel %s: scale, offset or rate is NaN, infinite or negative rate" % name)
        channels.append((name, unit, scale, off, stype, rate))
        i += 1
    return channels, pos
