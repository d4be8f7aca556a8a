"""Decoders of the frames only the gateway reads: BIRTH, DATA, EVENT.

Loaded by decode.decode() on first use, so a board that only decodes ACK and CMD
never pays the RAM for them.
"""

import struct

from shared_protocol import FLAG_DELTA, ST_FLOAT32, ST_INT16, ST_INT32
from shared_protocol.config_change import EV_STATUS_MIN
from shared_protocol.errors import BadField, BadFlags, BadLength, SchemaMismatch, TruncatedFrame
from shared_protocol.gw_decode import check_length
from shared_protocol.header import CRC_SIZE, HEADER_SIZE
from shared_protocol.schema import parse_channel_table, table_schema_id

_DATA_FMT = "<IBBHH"
_DATA_HDR = 23
_SAMPLE_FMT = {
    ST_INT16: ("h", 2, -32768, 32767),
    ST_INT32: ("i", 4, -2147483648, 2147483647),
    ST_FLOAT32: ("f", 4, None, None),
}


def data_layout(nch, stype, nsamples, flags):
    """(sample width, frame length) of a DATA frame; raises BadField or BadFlags."""
    if nch < 1:
        raise BadField("DATA frame with 0 channels")
    if nsamples < 1:
        raise BadField("DATA frame with 0 samples")
    spec = _SAMPLE_FMT.get(stype)
    if spec is None:
        raise BadField("DATA frame with unknown sample type %d" % stype)
    width = spec[1]
    if flags & FLAG_DELTA:
        if stype == ST_FLOAT32:
            raise BadFlags("FLAG_DELTA on a DATA frame of float32 samples (only integer samples are delta-coded)")
        if nsamples < 2:
            raise BadFlags("FLAG_DELTA on a DATA frame of 1 sample (encoders write it plain)")
        return width, _DATA_HDR + nch * width + (nsamples - 1) * nch + CRC_SIZE
    return width, _DATA_HDR + nch * nsamples * width + CRC_SIZE


def decode_data_fields(frame, n, flags, schema):
    if n < _DATA_HDR + CRC_SIZE:
        raise TruncatedFrame("DATA frame of %d bytes, fixed part needs %d" % (n, _DATA_HDR + CRC_SIZE))
    period_us, nch, stype, nsamples, sid = struct.unpack_from(_DATA_FMT, frame, HEADER_SIZE)
    width, want = data_layout(nch, stype, nsamples, flags)
    check_length(n, want, "DATA")
    if nsamples > 1 and period_us == 0:
        raise BadField("DATA frame of %d samples with period_us 0" % nsamples)
    if schema is not None:
        schema.check(nch, sid)
    code, width, lo, hi = _SAMPLE_FMT[stype]
    total = nch * nsamples
    if flags & FLAG_DELTA:
        raw = list(struct.unpack_from("<%d%s" % (nch, code), frame, _DATA_HDR))
        deltas = struct.unpack_from("<%db" % (total - nch), frame, _DATA_HDR + nch * width)
        i = 0
        m = total - nch
        while i < m:
            v = raw[i] + deltas[i]
            if v < lo or v > hi:
                raise BadField("delta-coded DATA leaves the sample range at value %d" % (i + nch))
            raw.append(v)
            i += 1
    else:
        raw = list(struct.unpack_from("<%d%s" % (total, code), frame, _DATA_HDR))
        if stype == ST_FLOAT32:
            for i, v in enumerate(raw):
                if v - v != 0:  # NaN or +-inf (NaN is unequal to itself, inf - inf is NaN)
                    raise BadField("DATA frame with a non-finite float32 sample (value %d)" % i)
    fields = {
        "period_us": period_us,
        "nchannels": nch,
        "nsamples": nsamples,
        "sample_type": stype,
        "schema_id": sid,
        "raw": raw,
    }
    if schema is not None:
        scales = schema.scales
        offsets = schema.offsets
        values = []
        i = 0
        while i < total:
            c = i % nch
            values.append(raw[i] * scales[c] + offsets[c])
            i += 1
        fields["values"] = values
    return fields


def decode_birth_fields(frame, n):
    end = n - CRC_SIZE
    pos = HEADER_SIZE
    if pos >= end:
        raise TruncatedFrame("BIRTH frame without payload")
    ln = frame[pos]
    pos += 1
    if ln > 32 or pos + ln + 3 > end:
        raise BadField("BIRTH fw_version length %d runs past the frame or exceeds 32" % ln)
    try:
        fw = bytes(frame[pos : pos + ln]).decode("utf-8")
    except UnicodeError:
        raise BadField("BIRTH fw_version is not UTF-8") from None
    pos += ln
    tick_bits, sid = struct.unpack_from("<BH", frame, pos)
    pos += 3
    if tick_bits < 16 or tick_bits > 32:
        raise BadField("BIRTH tick_bits %d outside 16..32" % tick_bits)
    table_start = pos
    channels, pos = parse_channel_table(frame, pos, end)
    if pos != end:
        raise BadLength("BIRTH frame has %d bytes after its channel table" % (end - pos))
    if table_schema_id(bytes(frame[table_start:end])) != sid:
        raise BadField("BIRTH schema id %04x does not match its channel table" % sid)
    return {"fw_version": fw, "tick_bits": tick_bits, "schema_id": sid, "channels": channels}


def decode_event_fields(frame, n, schema):
    if n < HEADER_SIZE + 1 + CRC_SIZE:
        raise TruncatedFrame("EVENT frame of %d bytes has no event count" % n)
    count = frame[HEADER_SIZE]
    if count < 1:
        raise BadField("EVENT frame with 0 events")
    check_length(n, HEADER_SIZE + 1 + 9 * count + CRC_SIZE, "EVENT")
    flat = struct.unpack_from("<" + "BIi" * count, frame, HEADER_SIZE + 1)
    events = []
    i = 0
    while i < count:
        events.append((flat[3 * i], flat[3 * i + 1], flat[3 * i + 2]))
        i += 1
    fields = {"events": events}
    if schema is not None:
        values = []
        for ch, _t, v in events:
            if ch >= EV_STATUS_MIN:
                values.append(float(v))  # a status code (config_change.py), not a channel: as sent
                continue
            if ch >= schema.nchannels:
                raise SchemaMismatch(
                    "EVENT on channel %d, schema %04x has %d channels" % (ch, schema.schema_id, schema.nchannels)
                )
            values.append(v * schema.scales[ch] + schema.offsets[ch])
        fields["values"] = values
    return fields
