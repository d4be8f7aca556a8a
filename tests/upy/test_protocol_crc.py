# The frame CRC without binascii.crc32 (CircuitPython builds without zlib): the pure-Python
# CRC-32 gives zlib's results, and with binascii.crc32 missing the encoders switch to it and
# write the same bytes. On the MicroPython unix port and under CPython.
import sys
from binascii import crc32 as builtin_crc32

from shared_protocol.crc import crc32_py

RUNTIMES = ("micropython", "cpython")


def _data():
    out = [b"", b"123456789", bytes(range(256))]
    x = 12345
    big = bytearray(1000)
    i = 0
    while i < len(big):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        big[i] = x >> 16 & 0xFF
        i += 1
    out.append(bytes(big))
    return out


def test_pure_python_crc32_matches_the_runtime():
    assert crc32_py(b"123456789") == 0xCBF43926  # the CRC-32 check value
    for d in _data():
        assert crc32_py(d) == builtin_crc32(d) & 0xFFFFFFFF, len(d)
        assert crc32_py(memoryview(d)) == builtin_crc32(d) & 0xFFFFFFFF
    # chained, as binascii.crc32(data, value)
    a, b = b"edge", b"line frames"
    assert crc32_py(b, crc32_py(a)) == builtin_crc32(a + b) & 0xFFFFFFFF


def _frames():
    from shared_protocol import ST_INT16
    from shared_protocol.encode import encode_birth, encode_health
    from shared_protocol.schema import schema_id

    channels = [("imu_ax", "g", 1 / 8192, 0.0, ST_INT16, 50.0), ("temp", "degC", 0.01, -40.0, ST_INT16, 50.0)]
    buf = bytearray(256)
    n = encode_birth(buf, 3, 1, 1000, "sensorfw 0.1.0", channels)
    birth = bytes(buf[:n])
    n = encode_health(buf, 3, 2, 2000, 0, 2, 40000, -55, 0, 0, 0, 0, 0, 0)
    return birth, bytes(buf[:n]), schema_id(channels)


class _BinasciiWithoutCrc32:
    pass


def test_without_binascii_crc32_frames_are_the_same():
    want = _frames()
    names = ("shared_protocol.crc", "shared_protocol.header", "shared_protocol.encode", "shared_protocol.schema")
    saved = {}
    for n in names + ("binascii",):
        saved[n] = sys.modules.get(n)
    pkg = sys.modules["shared_protocol"]
    saved_attrs = {}
    for n in names:
        leaf = n.rsplit(".", 1)[1]
        saved_attrs[leaf] = getattr(pkg, leaf, None)
    try:
        for n in names:
            sys.modules.pop(n, None)
            leaf = n.rsplit(".", 1)[1]
            if leaf in pkg.__dict__:
                delattr(pkg, leaf)
        sys.modules["binascii"] = _BinasciiWithoutCrc32()
        from shared_protocol import crc

        assert crc.crc32 is crc.crc32_py
        assert _frames() == want
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m
        for leaf, m in saved_attrs.items():
            if m is not None:
                setattr(pkg, leaf, m)
