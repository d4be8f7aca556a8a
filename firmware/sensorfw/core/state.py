# Boot counter and frame sequence across resets and deep sleep.
#
# - Power-on / reset: boot counter + 1 (kept in flash, boot.dat), sequence from 0.
# - Wake from deep sleep: same boot, sequence continues. Both are kept in RTC
#   memory where the port has it (ESP32), else in flash (sleep.dat, Pico W).
# - boot.dat also remembers how the last few boots ended (from seq.dat, see
#   seqlease.py), so the device can answer the gateway's CMD_RESEND about an older
#   boot: which numbers it used, and whether that end is exact or a bound.
# Records carry a magic and a CRC so stale or torn data is never trusted.
# Plain functions: the module is dropped from RAM after start-up.

import os
import struct
from binascii import crc32

from sensorfw.core import seqlease

_MAGIC = 0x454C  # "EL": the sleep record, and boot.dat before boot ends were kept
_MAGIC_BOOT = 0x4245  # "EB": boot.dat with the ends of earlier boots
KEEP_ENDS = 4  # earlier boots whose end is remembered (the gateway tracks as many)


def _pack(boot, seq):
    body = struct.pack("<HHI", _MAGIC, boot, seq)
    return body + struct.pack("<I", crc32(body) & 0xFFFFFFFF)


def _unpack(data):
    if data is None or len(data) < 12:
        return None
    magic, boot, seq, crc = struct.unpack_from("<HHII", data, 0)
    if magic != _MAGIC or crc32(bytes(data[:8])) & 0xFFFFFFFF != crc:
        return None
    return boot, seq


def _pack_boot(boot, ends):
    body = bytearray(struct.pack("<HHB", _MAGIC_BOOT, boot, len(ends)))
    for b, end, exact in ends:
        body.extend(struct.pack("<HIB", b, end, 1 if exact else 0))
    return bytes(body) + struct.pack("<I", crc32(body) & 0xFFFFFFFF)


def _unpack_boot(data):
    """(boot, [(boot, end, exact), ...]) from boot.dat (either format), or None."""
    old = _unpack(data)
    if old is not None:
        return old[0], []
    if data is None or len(data) < 9:
        return None
    magic, boot, n = struct.unpack_from("<HHB", data, 0)
    size = 5 + 7 * n
    if magic != _MAGIC_BOOT or len(data) < size + 4:
        return None
    if crc32(bytes(data[:size])) & 0xFFFFFFFF != struct.unpack_from("<I", data, size)[0]:
        return None
    ends = []
    o = 5
    i = 0
    while i < n:
        b, end, exact = struct.unpack_from("<HIB", data, o)
        ends.append((b, end, bool(exact)))
        o += 7
        i += 1
    return boot, ends


_write = seqlease.write_file


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _unpack_lease(data):
    """(boot, end, exact) of a seq.dat record (seqlease.pack), or None when absent or torn."""
    if data is None or len(data) < 13:
        return None
    magic, boot, end, exact = struct.unpack_from(seqlease.FMT, data, 0)
    if magic != seqlease.MAGIC or crc32(bytes(data[:9])) & 0xFFFFFFFF != struct.unpack_from("<I", data, 9)[0]:
        return None
    return boot, end, bool(exact)


def _read_lease(path):
    """The last lease record written (seq.dat, or its .tmp after a cut mid-write)."""
    got = _unpack_lease(_read(path))
    if got is None:
        got = _unpack_lease(_read(path + ".tmp"))
    return got


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def restore(board, directory):
    """(boot, seq, woke, ends): the state to run with after this reset, and how
    earlier boots ended: [(boot, end, exact)], newest first."""
    sleep_path = directory + "/sleep.dat"
    boot_path = directory + "/boot.dat"
    kept = None
    # None: the port cannot tell (rp2 has no DEEPSLEEP_RESET), so a valid sleep
    # record on flash is what marks a wake-up
    if board.woke_from_deepsleep() is not False:
        kept = _unpack(board.rtc_memory_read())
        if kept is None:
            kept = _unpack(_read(sleep_path))
    _remove(sleep_path)
    last = _unpack_boot(_read(boot_path))
    ends = last[1] if last else []
    if kept is not None:
        return kept[0], kept[1], True, ends
    prev = last[0] if last else 0
    lease = _read_lease(directory + "/seq.dat")
    if last is not None and lease is not None and lease[0] == prev:
        ends = [lease] + ends
        ends = ends[:KEEP_ENDS]
    boot = (prev + 1) & 0xFFFF
    _write(boot_path, _pack_boot(boot, ends))
    return boot, 0, False, ends


def save_for_sleep(board, directory, boot, seq):
    """Keep (boot, next seq) for the wake-up: RTC memory, else flash."""
    data = _pack(boot, seq)
    if not board.rtc_memory_write(data):
        _write(directory + "/sleep.dat", data)
