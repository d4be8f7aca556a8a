# DATA frames straight from the sample ring with one C-level copy.
#
# shared_protocol's DataEncoder writes int16 samples one value at a time (portable to
# any runtime and byte order). The ring's array('h') already holds the samples as
# little-endian int16 on every board we target (ESP32, RP2040, x86/ARM unix), which
# is the DATA frame's sample layout, so this subclass copies them with a single
# struct.pack_into(..."Ns") and writes the same header and CRC. The frame is
# byte-identical (tests/upy/test_fw_alloc.py compares both) and allocation-free once
# each batch length has been seen. Delta coding and other layouts use the parent.

import struct
import sys
from array import array
from binascii import crc32

from shared_protocol.encode import DataEncoder

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


_ST_INT16 = const(1)
_FLAG_DELTA = const(2)
_DATA_HDR = const(23)  # 13-byte header + period_us u32, nch u8, stype u8, nsamples u16, schema u16


def _raw_copy_works():
    # struct "Ns" must take an int16 array's raw bytes (MicroPython); CPython refuses
    try:
        b = bytearray(4)
        struct.pack_into("4s", b, 0, array("h", [0x0102, -2]))
    except (TypeError, ValueError, struct.error if hasattr(struct, "error") else ValueError):
        return False
    return bytes(b) == b"\x02\x01\xfe\xff"


_FAST = sys.byteorder == "little" and _raw_copy_works()
# Called explicitly, not via super(): super() makes the method a closure, and calling
# a closure with this many arguments allocates on MicroPython.
_parent_encode = DataEncoder.encode


class RingDataEncoder(DataEncoder):
    def __init__(self, nchannels, max_samples, sample_type=_ST_INT16, schema_id=0):
        DataEncoder.__init__(self, nchannels, max_samples, sample_type, schema_id)
        self.fast = _FAST and sample_type == _ST_INT16
        self._fmt = [None] * (max_samples + 1)
        self._crc_in = [None] * (max_samples + 1)
        self._whole = [None] * (max_samples + 1)

    def encode(self, boot, seq, ticks, period_us, samples, nsamples, flags=0):  # noqa: PLR0917
        if not self.fast or flags & _FLAG_DELTA or nsamples < 1 or nsamples > self.max_samples:
            return _parent_encode(self, boot, seq, ticks, period_us, samples, nsamples, flags)
        nch = self.nchannels
        if len(samples) < nch * nsamples:
            return _parent_encode(self, boot, seq, ticks, period_us, samples, nsamples, flags)  # raises BadField
        buf = self.buf
        nbytes = 2 * nch * nsamples
        fmt = self._fmt[nsamples]
        if fmt is None:
            fmt = "%ds" % nbytes
            self._fmt[nsamples] = fmt
            self._crc_in[nsamples] = self.mv[: _DATA_HDR + nbytes]
            self._whole[nsamples] = self.mv[: _DATA_HDR + nbytes + 4]
        struct.pack_into(fmt, buf, _DATA_HDR, samples)
        struct.pack_into("<BBBHII", buf, 0, 1, 2, flags, boot, seq, ticks)
        struct.pack_into("<IBBHH", buf, 13, period_us, nch, _ST_INT16, nsamples, self.schema_id)
        n = _DATA_HDR + nbytes
        struct.pack_into("<I", buf, n, crc32(self._crc_in[nsamples]) & 0xFFFFFFFF)
        self.frame = self._whole[nsamples]
        self.plain_frames += 1
        return n + 4
