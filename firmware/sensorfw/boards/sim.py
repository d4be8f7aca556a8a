# Simulation board for the MicroPython unix port (no `machine` module there).
#
# It provides what the firmware takes from a real board: a clock, Timer, Pin, ADC,
# I2C (an MPU-6050 answering on its registers), WDT, RTC memory, deep sleep, reset,
# Wi-Fi state and an MQTT transport, with values from boards/sim_signals.py or a
# recorded file. Timers are driven by the main loop (board.poll) and call their
# handler the way a soft IRQ would; the clock can run faster than real time.
#
# Environment (all optional):
#   EDGELINE_SIM_DIR        flash directory (default: current directory)
#   EDGELINE_CONFIG         config.json path (default: <flash>/config.json)
#   EDGELINE_SIM_SPEED      "max" (skip idle time) or a factor (default 1 = real time)
#   EDGELINE_SIM_DURATION_S stop after this much simulated time
#   EDGELINE_SIM_SAMPLES    stop after this many sample rows
#   EDGELINE_SIM_STOP_FILE  stop (as at the end of a bounded run) once this file exists
#   EDGELINE_SIM_DRAIN_S    at the stop, keep the link up to this many real seconds
#                           until the queue is empty (default 0)
#   EDGELINE_SIM_FAULTS     "bearing@30:0.8,imbalance@60,none@90" (kind@t_s[:severity])
#   EDGELINE_SIM_LINK_DOWN  "10-20,40-45" simulated seconds without network
#   EDGELINE_SIM_REPLAY     text file, one row of 6 int16 (ax ay az gx gy gz) per line
#   EDGELINE_SIM_SEED       signal seed (default 1)
#   EDGELINE_SIM_STATS      write a JSON stats file at the end
#   EDGELINE_SIM_VERBOSE    1: print link changes and pin writes
#   EDGELINE_SIM_HANG_AT_S  the main loop hangs at this simulated time (watchdog test)
#   EDGELINE_SIM_NO_RTC     1: no RTC memory (like the Pico W): sleep state goes to flash
# Exit codes: 0 run limit reached, 3 deep sleep (restart = wake), 4 machine.reset,
#             137 watchdog expired (process killed).

import os
import sys
import time

from sensorfw.boards import sim_signals

EXIT_DEEPSLEEP = 3
EXIT_RESET = 4
_MASK30 = 0x3FFFFFFF
_PERIOD30 = 0x40000000
_HALF30 = 0x20000000

NAME = "sim"
HARD_TIMER_IRQ = False  # timers fire from the main loop, like soft IRQs
HARD_PIN_IRQ = False


def _unload(name):
    sys.modules.pop(name, None)
    pkg = sys.modules.get("sensorfw.boards")
    leaf = name.rsplit(".", 1)[1]
    if pkg is not None and leaf in pkg.__dict__:
        delattr(pkg, leaf)


def _env(name, default=None):
    v = os.getenv(name)
    return default if v is None or v == "" else v


class SimClock:
    """time.ticks_* over a virtual microsecond counter.

    speed: virtual = real * num / den (+ skipped idle time in "max" mode). During a
    catch-up the board pins the clock to the tick being delivered (`frozen`), as if
    the interrupt had fired on time. Integer arithmetic only: allocation-free.
    """

    def __init__(self, speed="1"):
        self.max = speed == "max"
        if self.max:
            self.num, self.den = 1, 1
        else:
            f = float(speed)
            if f <= 0:
                raise ValueError("EDGELINE_SIM_SPEED must be 'max' or > 0, got %r" % speed)
            self.num, self.den = int(f * 1000), 1000
        self._last = time.ticks_us()
        self._real = 0
        self.skip = 0
        self.frozen = -1

    def now_us(self):
        if self.frozen >= 0:
            return self.frozen
        r = time.ticks_us()
        self._real += time.ticks_diff(r, self._last)
        self._last = r
        return self._real * self.num // self.den + self.skip

    def ticks_us(self):
        return self.now_us() & _MASK30

    def ticks_ms(self):
        return (self.now_us() // 1000) & _MASK30

    # The ticks wrap at 2**30 as on the boards (the unix port's own time.ticks_* wrap at
    # 2**62 on 64 bits): arithmetic modulo 2**30, a difference in [-2**29, 2**29).
    def ticks_diff(self, a, b):
        d = (a - b) & _MASK30
        return d - _PERIOD30 if d >= _HALF30 else d

    def ticks_add(self, a, b):
        return (a + b) & _MASK30

    def sleep_ms(self, ms):
        if self.max:
            self.skip += ms * 1000
        else:
            time.sleep_us(ms * 1000 * self.den // self.num)


class SimTimer:
    PERIODIC = 1
    ONE_SHOT = 0

    def __init__(self, board):
        self.board = board
        self.callback = None
        self.period_us = 0
        self.next = 0

    def init(self, freq=None, period=None, mode=1, callback=None):
        self.period_us = int(1000000 / freq + 0.5) if freq else int(period) * 1000
        self.callback = callback
        self.next = self.board.clock.now_us() + self.period_us
        if self not in self.board.timers:
            self.board.timers.append(self)

    def deinit(self):
        if self in self.board.timers:
            self.board.timers.remove(self)


class SimNet:
    def __init__(self, board, windows):
        self.board = board
        self.windows = windows

    def down(self):
        if not self.windows:
            return False
        t = self.board.clock.now_us() // 1000000
        return any(a <= t < b for a, b in self.windows)

    def isconnected(self):
        return not self.down()

    def connect(self):
        pass

    def rssi(self):
        return -55


class SimBoard:
    needs_wifi = False
    hard_timer_irq = HARD_TIMER_IRQ
    hard_pin_irq = HARD_PIN_IRQ

    def __init__(self):
        self.flash_dir = _env("EDGELINE_SIM_DIR", ".")
        try:
            os.stat(self.flash_dir)
        except OSError:
            os.mkdir(self.flash_dir)
        self.config_path = _env("EDGELINE_CONFIG", self.flash_dir + "/config.json")
        self.clock = SimClock(_env("EDGELINE_SIM_SPEED", "1"))
        self.start_us = 0
        self.duration_us = int(float(_env("EDGELINE_SIM_DURATION_S", "0")) * 1000000)
        self.max_samples = int(_env("EDGELINE_SIM_SAMPLES", "0"))
        self.stop_file = _env("EDGELINE_SIM_STOP_FILE")
        self._stop_check_us = 0
        self.drain_s = float(_env("EDGELINE_SIM_DRAIN_S", "0"))
        self.seed = int(_env("EDGELINE_SIM_SEED", "1"))
        from sensorfw.boards import sim_extras

        self.faults = sim_extras.parse_faults(_env("EDGELINE_SIM_FAULTS"))
        self.replay_path = _env("EDGELINE_SIM_REPLAY")
        self.stats_path = _env("EDGELINE_SIM_STATS")
        self.verbose = _env("EDGELINE_SIM_VERBOSE") == "1"
        self.has_rtc = _env("EDGELINE_SIM_NO_RTC") != "1"
        self.hang_us = int(float(_env("EDGELINE_SIM_HANG_AT_S", "-1")) * 1000000)
        self.net = SimNet(self, sim_extras.parse_windows(_env("EDGELINE_SIM_LINK_DOWN")))
        del sim_extras
        _unload("sensorfw.boards.sim_extras")  # only needed at start-up and at the end
        self.timers = []
        self.latches = []  # sensors updated before each timer tick
        self.vib = []
        self.inputs = []
        self.outputs = []
        self.schedule = None
        self._was_down = False

    # --- hardware factories (what port/board.py does with `machine`) -------------
    def make_timer(self):
        return SimTimer(self)

    def start_timer(self, timer, rate_hz, callback):
        timer.init(freq=rate_hz, mode=SimTimer.PERIODIC, callback=callback)

    def stop_timer(self, timer):
        timer.deinit()

    def make_adc(self, pin):
        from sensorfw.boards.sim_io import SimADC

        a = SimADC(sim_signals.Analog(rate_hz=50.0, seed=self.seed + pin, period_s=30.0))
        self.latches.append(a)
        return a

    def make_i2c(self, i2c_id, scl, sda, freq):
        from sensorfw.boards.sim_i2c import SimI2C, SimMPU6050

        rate = 100.0
        gen = sim_signals.Vibration(rate_hz=rate, seed=self.seed + i2c_id)
        self.vib.append(gen)
        replay = None
        if self.replay_path:
            from sensorfw.boards.sim_extras import Replay

            replay = Replay(self.replay_path)
        dev = SimMPU6050(0x68, gen, replay)
        self.latches.append(dev)
        return SimI2C({0x68: dev})

    def make_pin_in(self, pin, pull, spec):
        from sensorfw.boards.sim_io import SimPin

        p = SimPin(self, pin, SimPin.IN)
        p.gen = sim_signals.Pulses(rate_hz=spec.get("sim_hz", 5.0), seed=self.seed + pin)
        p.next_edge = self.clock.now_us() + p.gen.next_interval_us()
        self.inputs.append(p)
        return p

    def attach_irq(self, pin, handler, edge):
        from sensorfw.boards.sim_io import SimPin

        trig = {"rising": SimPin.IRQ_RISING, "falling": SimPin.IRQ_FALLING, "both": 3}[edge]
        pin.irq(handler=handler, trigger=trig, hard=self.hard_pin_irq)

    def make_pin_out(self, pin):
        from sensorfw.boards.sim_io import SimPin

        p = SimPin(self, pin, SimPin.OUT)
        self.outputs.append(p)
        return p

    def make_wdt(self, timeout_ms):
        from sensorfw.boards.sim_extras import SimWDT

        return SimWDT(self, timeout_ms)

    def transport(self, client_id, host, port, user, password, keepalive_s, timeout_ms):  # noqa: PLR0917
        from sensorfw.port.mqtt import MQTTTransport

        return MQTTTransport(client_id, host, port, user, password, keepalive_s, timeout_ms, self.net.down)

    # --- RTC memory, deep sleep, reset --------------------------------------------
    def _path(self, name):
        return self.flash_dir + "/" + name

    def rtc_memory_read(self):
        if not self.has_rtc:
            return None
        try:
            with open(self._path("rtc.bin"), "rb") as f:
                return f.read()
        except OSError:
            return None

    def rtc_memory_write(self, data):
        if not self.has_rtc:
            return False
        with open(self._path("rtc.bin"), "wb") as f:
            f.write(data)
        return True

    def woke_from_deepsleep(self):
        try:
            os.remove(self._path("wake.flag"))
            return True
        except OSError:
            return False

    def deepsleep(self, ms):
        with open(self._path("wake.flag"), "w") as f:
            f.write("%d\n" % ms)
        sys.exit(EXIT_DEEPSLEEP)

    def reset(self):
        try:
            os.remove(self._path("rtc.bin"))
        except OSError:
            pass
        sys.exit(EXIT_RESET)

    # --- main-loop hooks ------------------------------------------------------------
    def poll(self):
        clock = self.clock
        now = clock.now_us()
        if 0 <= self.hang_us <= now:
            print("[sim] main loop hangs (EDGELINE_SIM_HANG_AT_S)")
            while True:  # a stuck driver or network call: only the watchdog ends this
                time.sleep_ms(100)
        if self.faults and now >= self.faults[0][0]:
            _, kind, sev = self.faults.pop(0)
            for g in self.vib:
                g.set_fault(kind, sev)
            print("[sim] fault %s severity %s at t=%.1fs" % (kind, sev, now / 1e6))
        if self.verbose:
            d = self.net.down()
            if d != self._was_down:
                print("[sim] link %s at t=%.1fs" % ("down" if d else "up", now / 1e6))
                self._was_down = d
        for p in self.inputs:
            while 0 <= p.next_edge <= now:
                clock.frozen = p.next_edge
                p._edge(1 - p.level)
                p.next_edge += p.gen.next_interval_us() // 2  # two edges per pulse
                clock.frozen = -1
        for t in self.timers:
            late = now - t.next
            while late >= 0 and t.callback is not None:
                for s in self.latches:
                    s.latch()
                if late > t.period_us:
                    clock.frozen = t.next  # catch-up: deliver as if on time
                t.callback(t)
                clock.frozen = -1
                t.next += t.period_us
                late = now - t.next

    def next_event_us(self):
        nxt = -1
        for t in self.timers:
            if nxt < 0 or t.next < nxt:
                nxt = t.next
        for p in self.inputs:
            if p.next_edge >= 0 and (nxt < 0 or p.next_edge < nxt):
                nxt = p.next_edge
        return nxt

    def idle(self, app):
        clock = self.clock
        nxt = self.next_event_us()
        now = clock.now_us()
        wait = 10000 if nxt < 0 else nxt - now
        if wait <= 0:
            return
        wait = min(wait, 10000)
        if clock.max:
            clock.skip += wait
        else:
            time.sleep_us(wait * clock.den // clock.num)

    def should_stop(self, app):
        if self.max_samples and app.sampler.samples >= self.max_samples:
            return True
        now = self.clock.now_us()
        if self.stop_file and now >= self._stop_check_us:
            self._stop_check_us = now + 100000  # a stat every 0.1 s of simulated time
            try:
                os.stat(self.stop_file)
                return True
            except OSError:
                pass
        return bool(self.duration_us and now >= self.duration_us)

    def drain(self, app):
        from sensorfw.boards.sim_extras import drain

        drain(self, app)

    def report(self, app):
        from sensorfw.boards.sim_extras import report

        report(self, app)


def make_board():
    return SimBoard()
