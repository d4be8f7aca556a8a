"""Frame encoders (all runtimes; board side).

Every encoder writes into a caller-provided buffer and returns the frame
length. DataEncoder.encode allocates nothing once it has seen a frame length
(proved by tests/upy/test_protocol_alloc.py under micropython.heap_lock()):
while loops only, no floats, no slicing, one cached memoryview per frame
length for the CRC and for publishing.
"""

import struct

from shared_protocol.crc import crc32
from shared_protocol.errors import BadField
from shared_protocol.header import pack_header, seal

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


# Private consts cost no RAM on a board (inlined by the compiler); they
# mirror shared_protocol/__init__.py (tests/protocol checks they agree).
_VERSION = const(1)
_BIRTH = const(1)
_DATA = const(2)
_EVENT = const(3)
_HEALTH = const(4)
_DEATH = const(5)
_ST_INT16 = const(1)
_ST_INT32 = const(2)
_ST_FLOAT32 = const(3)
_FLAG_DELTA = const(2)
_HDR = const(13)
_CRC = const(4)
_DATA_HDR = const(23)  # header + period_us u32, nch u8, stype u8, nsamples u16, schema u16
_DATA_OVERHEAD = const(27)  # _DATA_HDR + CRC
_MAX_EVENTS = const(255)
_HEALTH_SIZE = const(31)
_U32 = const(0xFFFFFFFF)
DATA_OVERHEAD = 27  # bytes per DATA frame besides the samples


def _need(buf, n, what):
    if len(buf) < n:
        raise BadField("buffer of %d bytes is too small for a %d-byte %s frame" % (len(buf), n, what))


class DataEncoder:
    """Encode DATA frames of `nchannels` channels and up to `max_samples`
    samples into its own preallocated buffer.

    `.buf` / `.mv` are the buffer and a memoryview over it; after encode(),
    `.frame` is a memoryview of exactly the frame just written (publish it
    as-is: no slicing, no copy). `.delta_frames` / `.plain_frames` count how
    often FLAG_DELTA was kept or fell back to plain samples.
    """

    def __init__(self, nchannels, max_samples, sample_type=_ST_INT16, schema_id=0):
        if nchannels < 1 or nchannels > 255:
            raise BadField("nchannels must be 1..255, got %r" % nchannels)
        if max_samples < 1 or max_samples > 65535:
            raise BadField("max_samples must be 1..65535, got %r" % max_samples)
        if sample_type == _ST_INT16:
            width = 2
        elif sample_type in (_ST_INT32, _ST_FLOAT32):
            width = 4
        else:
            raise BadField("unknown sample type %r" % sample_type)
        if schema_id < 0 or schema_id > 65535:
            raise BadField("schema_id must be 0..65535, got %r" % schema_id)
        self.nchannels = nchannels
        self.max_samples = max_samples
        self.sample_type = sample_type
        self.width = width
        self.schema_id = schema_id
        self.buf = bytearray(_DATA_OVERHEAD + nchannels * max_samples * width)
        self.mv = memoryview(self.buf)
        self.frame = self.mv[:0]
        # memoryviews per frame length, made the first time a length occurs
        # (CRC input = frame without its CRC, and the whole frame), per mode
        self._plain_views = [None] * (max_samples + 1)
        self._delta_views = [None] * (max_samples + 1)
        self._plain_frames_v = [None] * (max_samples + 1)
        self._delta_frames_v = [None] * (max_samples + 1)
        self.delta_frames = 0
        self.plain_frames = 0

    def frame_size(self, nsamples, delta=False):
        """Length of a DATA frame of nsamples samples (plain, or delta-coded)."""
        nch = self.nchannels
        if delta and nsamples > 1:
            return _DATA_OVERHEAD + nch * self.width + (nsamples - 1) * nch
        return _DATA_OVERHEAD + nch * nsamples * self.width

    def encode(self, boot, seq, ticks, period_us, samples, nsamples, flags=0):  # noqa: PLR0917
        """Encode nsamples interleaved samples (s0c0, s0c1, ..., s1c0, ...) from
        `samples` (array('h'), array('i') for ST_INT32, array('f') for ST_FLOAT32);
        return the frame length.

        With FLAG_DELTA in flags the samples after the first are written as
        int8 differences per channel; if one difference does not fit, or the
        samples are float32, the frame is written plain and FLAG_DELTA is
        cleared in its header.
        """
        nch = self.nchannels
        if nsamples < 1 or nsamples > self.max_samples:
            raise BadField("nsamples must be 1..%d, got %r" % (self.max_samples, nsamples))
        end = nch * nsamples
        if len(samples) < end:
            raise BadField("samples holds %d values, %d needed" % (len(samples), end))
        buf = self.buf
        pack_into = struct.pack_into
        wide = self.width == 4
        sfmt = "<f" if self.sample_type == _ST_FLOAT32 else "<i"
        n = -1
        if flags & _FLAG_DELTA and nsamples > 1 and self.sample_type != _ST_FLOAT32:
            n = self._deltas(buf, samples, nch, end, wide)
            if n < 0:
                flags = flags & ~_FLAG_DELTA
        else:
            flags = flags & ~_FLAG_DELTA
        if n < 0:
            i = 0
            o = _DATA_HDR
            if wide:
                while i < end:
                    pack_into(sfmt, buf, o, samples[i])
                    i += 1
                    o += 4
            else:
                while i < end:
                    v = samples[i]
                    buf[o] = v & 0xFF
                    buf[o + 1] = (v >> 8) & 0xFF
                    i += 1
                    o += 2
            n = o
            views = self._plain_views
            frames = self._plain_frames_v
            self.plain_frames += 1
        else:
            views = self._delta_views
            frames = self._delta_frames_v
            self.delta_frames += 1
        pack_into("<BBBHII", buf, 0, _VERSION, _DATA, flags, boot, seq, ticks)
        pack_into("<IBBHH", buf, _HDR, period_us, nch, self.sample_type, nsamples, self.schema_id)
        view = views[nsamples]
        if view is None:
            view = self.mv[:n]
            views[nsamples] = view
        pack_into("<I", buf, n, crc32(view))
        total = n + _CRC
        view = frames[nsamples]
        if view is None:
            view = self.mv[:total]
            frames[nsamples] = view
        self.frame = view
        return total

    def _deltas(self, buf, samples, nch, end, wide):
        # First sample raw, then per-channel int8 differences; -1 if one does not fit.
        i = 0
        o = _DATA_HDR
        if wide:
            while i < nch:
                struct.pack_into("<i", buf, o, samples[i])
                i += 1
                o += 4
        else:
            while i < nch:
                v = samples[i]
                buf[o] = v & 0xFF
                buf[o + 1] = (v >> 8) & 0xFF
                i += 1
                o += 2
        while i < end:
            d = samples[i] - samples[i - nch]
            if d < -128 or d > 127:
                return -1
            buf[o] = d & 0xFF
            i += 1
            o += 1
        return o


def encode_birth(buf, boot, seq, ticks, fw_version, channels, tick_bits=30, flags=0):  # noqa: PLR0917
    """BIRTH: firmware version, tick period (2**tick_bits ms) and channel table.

    channels: sequence of (name, unit, scale, offset, sample_type, rate_hz).
    tick_bits: 30 for MicroPython ticks_ms, 29 for CircuitPython
    supervisor.ticks_ms, 32 for a plain u32 millisecond counter.
    """
    fw = fw_version.encode("utf-8")
    if len(fw) > 32:
        raise BadField("fw_version %r longer than 32 bytes" % fw_version)
    if tick_bits < 16 or tick_bits > 32:
        raise BadField("tick_bits must be 16..32, got %r" % tick_bits)
    from shared_protocol.schema import channel_table, table_schema_id

    table = channel_table(channels)
    sid = table_schema_id(table)
    body = _HDR + 1 + len(fw) + 1 + 2 + len(table)
    _need(buf, body + _CRC, "BIRTH")
    pack_header(buf, _BIRTH, flags, boot, seq, ticks)
    o = _HDR
    buf[o] = len(fw)
    o += 1
    buf[o : o + len(fw)] = fw
    o += len(fw)
    struct.pack_into("<BH", buf, o, tick_bits, sid)
    o += 3
    buf[o : o + len(table)] = table
    return seal(buf, o + len(table))


def encode_event(buf, boot, seq, ticks, flags, channels, times, values, n):  # noqa: PLR0917
    """EVENT: n interrupt events (channel u8, ticks u32, value i32)."""
    if n < 1 or n > _MAX_EVENTS:
        raise BadField("an EVENT frame carries 1..255 events, got %r" % n)
    _need(buf, _HDR + 1 + 9 * n + _CRC, "EVENT")
    pack_header(buf, _EVENT, flags & ~_FLAG_DELTA, boot, seq, ticks)
    buf[_HDR] = n
    o = _HDR + 1
    i = 0
    while i < n:
        struct.pack_into("<BIi", buf, o, channels[i], times[i], values[i])
        i += 1
        o += 9
    return seal(buf, o)


def _clamp(v, lo, hi):
    if v < lo:
        return lo
    if v > hi:
        return hi
    return v


def encode_health(  # noqa: PLR0917
    buf,
    boot,
    seq,
    ticks,
    flags,
    uptime_s,
    free_heap,
    rssi,
    battery_mv,
    queue_depth,
    dropped_frames,
    irq_overruns,
    worst_latency_us,
    jitter_us,
):
    """HEALTH. Counters saturate at their field maximum instead of wrapping;
    rssi is dBm clamped to -128..127 (0 = unknown), battery_mv 0 = unknown."""
    _need(buf, _HDR + _HEALTH_SIZE + _CRC, "HEALTH")
    pack_header(buf, _HEALTH, flags & ~_FLAG_DELTA, boot, seq, ticks)
    struct.pack_into(
        "<IIbHIIIII",
        buf,
        _HDR,
        _clamp(int(uptime_s), 0, _U32),
        _clamp(int(free_heap), 0, _U32),
        _clamp(int(rssi), -128, 127),
        _clamp(int(battery_mv), 0, 0xFFFF),
        _clamp(int(queue_depth), 0, _U32),
        _clamp(int(dropped_frames), 0, _U32),
        _clamp(int(irq_overruns), 0, _U32),
        _clamp(int(worst_latency_us), 0, _U32),
        _clamp(int(jitter_us), 0, _U32),
    )
    return seal(buf, _HDR + _HEALTH_SIZE)


def encode_death(buf, boot, seq, ticks):
    """DEATH: header only; registered as the MQTT last will at connect time."""
    _need(buf, _HDR + _CRC, "DEATH")
    pack_header(buf, _DEATH, 0, boot, seq, ticks)
    return seal(buf, _HDR)


# Gateway-side encoders live in gw_encode.py so a board does not load them;
# these wrappers keep the documented names here.
def encode_ack(buf, boot, seq, ticks, ranges):
    """ACK (gateway -> device): ranges of (boot, first_seq, last_seq) persisted."""
    from shared_protocol.gw_encode import encode_ack as f

    return f(buf, boot, seq, ticks, ranges)


def encode_cmd(buf, boot, seq, ticks, cmd_id, op, arg=b""):  # noqa: PLR0917
    """CMD (gateway -> device): cmd_id u32, op u8, arg (see cmd_arg)."""
    from shared_protocol.gw_encode import encode_cmd as f

    return f(buf, boot, seq, ticks, cmd_id, op, arg)


def cmd_arg(op, *values):
    """Argument bytes of a CMD op, e.g. cmd_arg(CMD_SET_RATE, 50000)."""
    from shared_protocol.gw_encode import cmd_arg as f

    return f(op, *values)


def schema_id(channels):
    """16-bit schema id of a channel list, for DataEncoder(schema_id=...)."""
    from shared_protocol.schema import schema_id as f

    return f(channels)
