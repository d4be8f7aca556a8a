# CircuitPython's `supervisor` (the parts the firmware uses). ticks_ms() wraps at 2**29
# and starts about 65 s before its first wrap, as on a board: wrap bugs show in tests.
from _cpsim import now_us

_MASK = (1 << 29) - 1
_START = (1 << 29) - 65000


def ticks_at(t_us):
    """ticks_ms() at simulated time t_us."""
    return (_START + t_us // 1000) & _MASK


def ticks_ms():
    return ticks_at(now_us())


class _Runtime:
    serial_connected = False
    usb_connected = False


runtime = _Runtime()


def reload():
    raise SystemExit(0)
