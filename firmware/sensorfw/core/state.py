# Boot counter and frame sequence across resets and deep sleep.
#
# - Power-on / reset: boot counter + 1 (kept in flash, boot.dat), sequence from 0.
# - Wake from deep sleep: same boot, sequence continues. Both are kept in RTC
#   memory where the port has it (ESP32), else in flash (sleep.dat, Pico W).
# Records carry a magic and a CRC so stale or torn data is never trusted.
# Plain functions: the module is dropped from RAM after start-up.

import os
import struct
from binascii import crc32

_MAGIC = 0x454C  # "EL"


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


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _write(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    _remove(path)
    os.rename(tmp, path)


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def restore(board, directory):
    """(boot, seq, woke): the state to run with after this reset."""
    sleep_path = directory + "/sleep.dat"
    kept = None
    if board.woke_from_deepsleep():
        kept = _unpack(board.rtc_memory_read())
        if kept is None:
            kept = _unpack(_read(sleep_path))
    _remove(sleep_path)
    if kept is not None:
        return kept[0], kept[1], True
    boot_path = directory + "/boot.dat"
    last = _unpack(_read(boot_path))
    boot = ((last[0] if last else 0) + 1) & 0xFFFF
    _write(boot_path, _pack(boot, 0))
    return boot, 0, False


def save_for_sleep(board, directory, boot, seq):
    """Keep (boot, next seq) for the wake-up: RTC memory, else flash."""
    data = _pack(boot, seq)
    if not board.rtc_memory_write(data):
        _write(directory + "/sleep.dat", data)
