# CircuitPython's `microcontroller`: Pin, the chip's pins (microcontroller.pin.GPIOn),
# the watchdog, reset(). The simulated chip is the RP2040 (cp_pico_w) or the ESP32-S3
# (cp_esp32s3), EDGELINE_SIM_BOARD.
import sys

from _cpsim import BOARD, now_us, path
from watchdog import WatchDogMode

EXIT_RESET = 4
EXIT_WDT = 137


class Pin:
    def __init__(self, n):
        self.n = n
        self.used = None  # the object that claimed it (CircuitPython: "pin in use")

    def __repr__(self):
        return "microcontroller.pin.GPIO%d" % self.n

    def claim(self, owner):
        if self.used is not None:
            raise ValueError("%r in use" % self)
        self.used = owner

    def release(self):
        self.used = None


_GPIO = tuple(range(30)) if BOARD == "cp_pico_w" else tuple(range(22)) + tuple(range(26, 49))


class _Pins:
    pass


pin = _Pins()
for _n in _GPIO:
    setattr(pin, "GPIO%d" % _n, Pin(_n))


def reset():
    try:
        import os

        os.remove(path(".cpsim-sleep"))
    except OSError:
        pass
    print("[cpsim] microcontroller.reset()")
    sys.exit(EXIT_RESET)


class WatchDogTimer:
    """microcontroller.watchdog: RESET mode ends the process (as a reset) when not fed
    within timeout seconds of real time; the RP2040's limit is 8.388 s."""

    def __init__(self):
        self._timeout = 0.0
        self._mode = None
        self.fed_us = 0
        self._thread = False

    @property
    def timeout(self):
        return self._timeout

    @timeout.setter
    def timeout(self, t):
        if BOARD == "cp_pico_w" and t > 8.388:
            raise ValueError("timeout exceeds 8.388")
        if t <= 0:
            raise ValueError("watchdog timeout must be greater than 0")
        self._timeout = t

    @property
    def mode(self):
        return self._mode

    @mode.setter
    def mode(self, m):
        if m is not None and m not in (WatchDogMode.RAW, WatchDogMode.RESET):
            raise TypeError("mode must be a WatchDogMode")
        if m is not None and self._timeout <= 0:
            raise ValueError("watchdog timeout must be set first")
        self._mode = m
        self.fed_us = now_us()
        if m == WatchDogMode.RESET and not self._thread:
            self._watch()

    def feed(self):
        if self._mode is None:
            raise ValueError("WatchDogTimer is not currently running")
        self.fed_us = now_us()

    def deinit(self):
        self._mode = None

    def _watch(self):
        import _thread
        import time

        self._thread = True

        def watch():
            while True:
                time.sleep_ms(50)
                if self._mode == WatchDogMode.RESET and now_us() - self.fed_us > self._timeout * 1e6:
                    print("[cpsim] watchdog expired: not fed for %.3f s, resetting" % self._timeout)
                    import os

                    os.system("kill -9 $PPID")  # the shell's parent: this process
                    return

        _thread.start_new_thread(watch, ())


watchdog = WatchDogTimer()
