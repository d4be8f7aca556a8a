# CircuitPython's `alarm`: deep sleep until an alarm, and sleep_memory that survives it.
# The simulated deep sleep ends the process with exit code 3; the next run is the wake:
# wake_alarm is then the alarm that woke it (a TimeAlarm). sleep_memory lives in a file
# on the simulated drive; a reset or power-on (no wake) does not clear it on a board
# either, so only its content decides (core/state.py checks it).
import sys

from _cpsim import path

import alarm.pin
import alarm.time

EXIT_DEEPSLEEP = 3
SLEEP_MEMORY_SIZE = 4096


class _SleepMemory:
    def __init__(self):
        self._mem = bytearray(SLEEP_MEMORY_SIZE)
        try:
            with open(path(".cpsim-sleep_memory"), "rb") as f:
                data = f.read()
            self._mem[: len(data)] = data
        except OSError:
            pass

    def __len__(self):
        return len(self._mem)

    def __getitem__(self, i):
        return self._mem[i]

    def __setitem__(self, i, v):
        self._mem[i] = v
        with open(path(".cpsim-sleep_memory"), "wb") as f:
            f.write(self._mem)


sleep_memory = _SleepMemory()


def _woke():
    try:
        with open(path(".cpsim-wake")) as f:
            kind = f.read().strip()
    except OSError:
        return None
    import os

    os.remove(path(".cpsim-wake"))
    return alarm.time.TimeAlarm(monotonic_time=0) if kind == "time" else None


wake_alarm = _woke()


def exit_and_deep_sleep_until_alarms(*alarms, preserve_dios=()):
    if not alarms:
        raise ValueError("No alarms set")
    kind = "time" if isinstance(alarms[0], alarm.time.TimeAlarm) else "pin"
    with open(path(".cpsim-wake"), "w") as f:
        f.write(kind)
    for a in alarms:
        if isinstance(a, alarm.time.TimeAlarm):
            print("[cpsim] deep sleep until monotonic %.3f" % a.monotonic_time)
    sys.exit(EXIT_DEEPSLEEP)


def light_sleep_until_alarms(*alarms):
    import time

    for a in alarms:
        if isinstance(a, alarm.time.TimeAlarm):
            d = a.monotonic_time - time.monotonic()
            if d > 0:
                time.sleep(d)
            return a
    return None
