# Shared state of the CircuitPython simulation (firmware/cpsim): the CIRCUITPY directory,
# the simulator's own settings (EDGELINE_SIM_* from the process environment, never from
# settings.toml), network windows, and which board is simulated. Real time: a simulated
# CircuitPython board runs in real time (there are no interrupts to replay).
import os as _os  # EDGELINE_SIM_* come from the process environment either way
import time as _t

T0_US = _t.ticks_us()


def env(name, default=None):
    v = _os.getenv(name)
    return default if v is None or v == "" else v


def now_us():
    return _t.ticks_diff(_t.ticks_us(), T0_US)


def drive():
    """The directory standing in for CIRCUITPY."""
    return env("EDGELINE_SIM_DIR", ".")


def path(name):
    return drive() + "/" + name


def _windows(text):
    out = []
    if text:
        for part in text.split(","):
            a, b = part.split("-")
            out.append((float(a) * 1e6, float(b) * 1e6))
    return out


LINK_DOWN = _windows(env("EDGELINE_SIM_LINK_DOWN"))
I2C_FAIL = env("EDGELINE_SIM_I2C_FAIL")
SEED = int(env("EDGELINE_SIM_SEED", "1"))
BOARD = env("EDGELINE_SIM_BOARD", "cp_pico_w")
if BOARD not in ("cp_pico_w", "cp_esp32s3"):
    raise ValueError("EDGELINE_SIM_BOARD must be cp_pico_w or cp_esp32s3, got %r" % BOARD)


def link_down():
    t = now_us()
    return any(a <= t < b for a, b in LINK_DOWN)


class Clock:
    """The clock the simulated sensors run on (sim_i2c.SimMPU6050 asks for now_us)."""

    def now_us(self):
        return now_us()


CLOCK = Clock()


class EdgeTrain:
    """The level of a simulated pulse input over real time: pulses around rate_hz with
    jitter (sim_signals.Pulses), two edges each. advance(t) returns the next edge at or
    before t as (t_us, level), or None."""

    def __init__(self, pin_n, rate_hz):
        from sensorfw.boards.sim_signals import Pulses

        self.gen = Pulses(rate_hz=rate_hz, seed=SEED + pin_n)
        self.level = 0
        self.next_us = now_us() + self.gen.next_interval_us() // 2

    def advance(self, t):
        if self.next_us > t:
            return None
        at = self.next_us
        self.level = 1 - self.level
        self.next_us += self.gen.next_interval_us() // 2
        return at, self.level
