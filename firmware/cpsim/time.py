# CircuitPython's `time` on the unix port: the port's own module plus monotonic() and
# monotonic_ns() (CircuitPython has them; it has no ticks_*: code that uses those fails
# here as on a board, except that the port's own names stay visible).
import sys

_mod = sys.modules.pop("time", None)
sys.path, _saved = [p for p in sys.path if not p.endswith("cpsim")], sys.path
import time as _port  # noqa: E402
from time import *  # noqa: E402, F403

sys.path = _saved
if _mod is not None:
    sys.modules["time"] = _mod


def monotonic_ns():
    return _port.time_ns()


def monotonic():
    return _port.time_ns() / 1e9
