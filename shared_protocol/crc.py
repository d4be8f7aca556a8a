"""CRC-32 of the frame trailer and the schema id (all runtimes).

The polynomial and results of zlib / ``binascii.crc32``. The runtime's own function is used
where it exists: CPython, MicroPython, and CircuitPython builds that include zlib. Smaller
CircuitPython builds have no ``binascii.crc32``; there ``crc32`` is the table-driven
``crc32_py`` below, which gives the same results. It costs a 1 KB table, built on first
use, and a loop of bytecode per byte. On a 32-bit board its values above 2**30 are long
ints, so it allocates: it is for those builds only, never on the interrupt path.
"""

try:
    from binascii import crc32
except ImportError:  # CircuitPython without zlib
    crc32 = None

_table = None


def _make_table():
    from array import array

    t = array("I", range(256))
    i = 0
    while i < 256:
        c = i
        k = 0
        while k < 8:
            c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
            k += 1
        t[i] = c
        i += 1
    return t


def crc32_py(data, value=0):
    """binascii.crc32(data, value) in Python: data is any bytes-like object."""
    global _table
    t = _table
    if t is None:
        t = _table = _make_table()
    c = value ^ 0xFFFFFFFF
    for b in data:
        c = t[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


if crc32 is None:
    crc32 = crc32_py
