# Simulation board for the MicroPython unix port: a port-faithful ESP32 or Pico W.
#
# The firmware runs with the real board layer (port/board.py, port/mqtt.py) and the
# board profile users flash (boards/esp32_devkit.py or boards/pico_w.py); underneath,
# sim_machine.py stands in for the port's `machine`, `network` and `socket` with the
# port's rules, and this module is the event engine: timer ticks and pin edges happen
# in (virtual) time whatever the main loop is doing. Soft callbacks go through the
# port's scheduler queue (depth 8; full = dropped, counted as `sched_dropped`) and run
# when the port would run them: at the main loop's next bytecode (board.poll), every
# 100 ms (esp32) / 1 ms (rp2) inside a blocking socket call, never during DNS. Hard
# callbacks (rp2 only) run on time. Sensors: an MPU-6050 on I2C (sim_i2c.py) with its
# FIFO paced by its own sample clock, ADC and pulse inputs from sim_signals.py.
#
# Environment (all optional):
#   EDGELINE_SIM_BOARD      board profile: esp32_devkit (default) or pico_w
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
#   EDGELINE_SIM_WIFI_JOIN_MS  time a Wi-Fi join takes after connect() (default 0)
#   EDGELINE_SIM_BLOCK_AT_S "12:1500,30:800" the main loop blocks in C code without
#                           servicing callbacks (flash erase, GC) at t s for ms
#   EDGELINE_SIM_REPLAY     text file, one row of 6 int16 (ax ay az gx gy gz) per line
#   EDGELINE_SIM_IMU_WHOAMI WHO_AM_I of the simulated IMU (default 0x68)
#   EDGELINE_SIM_I2C_FAIL   "5-6" simulated seconds in which every I2C transfer fails
#   EDGELINE_SIM_SEED       signal seed (default 1)
#   EDGELINE_SIM_STATS      write a JSON stats file at the end
#   EDGELINE_SIM_VERBOSE    1: print link changes and pin writes
#   EDGELINE_SIM_HANG_AT_S  the main loop hangs at this simulated time (watchdog test)
# Exit codes: 0 run limit reached, 3 deep sleep (restart = wake), 4 machine.reset,
#             137 watchdog expired (process killed).

import os
import sys
import time

from sensorfw import unload
from sensorfw.boards import sim_machine, sim_signals
from sensorfw.boards.sim_machine import SCHEDULER_DEPTH, SOCKET_POLL_US, Scheduler
from sensorfw.boards.sim_parts import SimWDT, SimWLAN
from sensorfw.boards.sim_stop import read_limits, stop_due

EXIT_DEEPSLEEP = 3
EXIT_RESET = 4
_MASK30 = 0x3FFFFFFF
_PERIOD30 = 0x40000000
_HALF30 = 0x20000000

EXIT_WDT = 137


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


# The port's machine/network/socket must be in place before the board layer imports them.
PROFILES = {"esp32_devkit": "esp32", "pico_w": "rp2"}
BOARD_NAME = _env("EDGELINE_SIM_BOARD", "esp32_devkit")
if BOARD_NAME not in PROFILES:
    raise ValueError("EDGELINE_SIM_BOARD must be esp32_devkit or pico_w, got %r" % BOARD_NAME)
sim_machine.install(PROFILES[BOARD_NAME])

from sensorfw.port.board import Board  # noqa: E402 - after the port's modules are installed


class SimBoard(Board):
    # the run's limits (sim_stop.read_limits)
    duration_us = 0
    max_samples = 0
    stop_file = None
    drain_s = 0.0
    stats_path = None
    stop_check_us = 0

    def __init__(self, profile):
        sim_machine.bind(self)
        flash_dir = _env("EDGELINE_SIM_DIR", ".")
        try:
            os.stat(flash_dir)
        except OSError:
            os.mkdir(flash_dir)
        clock = SimClock(_env("EDGELINE_SIM_SPEED", "1"))
        self.sclock = clock
        from sensorfw.boards import sim_extras

        self.wlan = SimWLAN(
            self,
            int(_env("EDGELINE_SIM_WIFI_JOIN_MS", "0")),
            sim_extras.parse_windows(_env("EDGELINE_SIM_LINK_DOWN")),
        )
        self.faults = sim_extras.parse_faults(_env("EDGELINE_SIM_FAULTS"))
        self.blocks = sim_extras.parse_blocks(_env("EDGELINE_SIM_BLOCK_AT_S"))
        self.i2c_fail = sim_extras.parse_windows(_env("EDGELINE_SIM_I2C_FAIL"))
        sim_extras.install_ssl(PROFILES[profile.NAME], self)  # the port's ssl, made on first use
        del sim_extras
        unload("sensorfw.boards.sim_extras")  # only needed at start-up and at the end
        Board.__init__(self, profile, flash_dir)  # the real board layer, over sim_machine
        self.clock = clock  # type: ignore[assignment]  # time.ticks_* in simulated time
        self.needs_wifi = False  # config.json may leave Wi-Fi out: the sim joins "sim"
        self.config_path = _env("EDGELINE_CONFIG", self.flash_dir + "/config.json")
        read_limits(self, _env)
        self.seed = int(_env("EDGELINE_SIM_SEED", "1"))
        self.replay_path = _env("EDGELINE_SIM_REPLAY")
        self.who_am_i = int(_env("EDGELINE_SIM_IMU_WHOAMI", "0x68"), 0)
        self.verbose = _env("EDGELINE_SIM_VERBOSE") == "1"
        self.hang_us = int(float(_env("EDGELINE_SIM_HANG_AT_S", "-1")) * 1000000)
        self.sched = Scheduler(SCHEDULER_DEPTH)
        self.schedule = self.sched.schedule
        self.poll_us = SOCKET_POLL_US[PROFILES[profile.NAME]]
        self.timers = []
        self.inputs = []
        self.outputs = []
        self.imus = []
        self.wdt = None
        self.sockopt_warnings = 0
        self.nodelay = False
        self.rtc_start = self.rtc_datetime = sim_machine.RTC_START[PROFILES[profile.NAME]]
        self.late_max_us = 0  # longest a soft callback waited in the queue
        self._last_service = 0
        self._was_down = False

    # --- configuration: the sim joins a network named "sim" when config.json has none
    def configure_net(self, wifi_cfg):
        if not wifi_cfg.get("ssid"):
            wifi_cfg = {"ssid": "sim", "password": None}
        self.net.configure(wifi_cfg)

    def net_down(self):
        return not self.wlan.isconnected()

    # --- what sim_machine's classes ask of the board ------------------------------------
    def emu_wlan(self):
        return self.wlan

    def emu_wifi_active(self):
        return self.wlan.active()

    def emu_i2c(self, i2c_id, scl, sda, freq):
        from sensorfw.boards.sim_i2c import SimI2C, SimMPU6050

        replay = None
        if self.replay_path:
            from sensorfw.boards.sim_extras import Replay

            replay = Replay(self.replay_path)
        dev = SimMPU6050(0x68, self.sclock, self.seed + i2c_id, replay, self.who_am_i, self.i2c_fail)
        self.imus.append(dev)
        return SimI2C({0x68: dev})

    def emu_adc_signal(self, pin):
        return sim_signals.Analog(rate_hz=50.0, seed=self.seed + pin, period_s=30.0)

    def emu_wdt(self, timeout_ms):
        self.wdt = SimWDT(self, timeout_ms)
        return self.wdt

    def emu_rtc_read(self):
        try:
            with open(self._path("rtc.bin"), "rb") as f:
                return f.read()
        except OSError:
            return b""

    def emu_rtc_write(self, data):
        with open(self._path("rtc.bin"), "wb") as f:
            f.write(data)

    def emu_reset_cause(self, m):
        try:
            os.remove(self._path("wake.flag"))
            woke = True
        except OSError:
            woke = False
        if woke:
            return getattr(m, "DEEPSLEEP_RESET", m.WDT_RESET)
        return m.PWRON_RESET

    def emu_reset(self):
        try:
            os.remove(self._path("rtc.bin"))
        except OSError:
            pass
        self.report_sleep()
        sys.exit(EXIT_RESET)

    def emu_deepsleep(self, ms):
        with open(self._path("wake.flag"), "w") as f:
            f.write("%d\n" % ms)
        self.report_sleep()
        sys.exit(EXIT_DEEPSLEEP)

    def emu_wake_reset(self):
        # rp2 machine.deepsleep: the lightsleep ended, the watchdog reboots the chip
        with open(self._path("wake.flag"), "w") as f:
            f.write("0\n")
        self.report_sleep()
        sys.exit(EXIT_DEEPSLEEP)

    def emu_lightsleep(self, ms):
        if self.lightsleeps == 0:
            self.sleep_t0 = self.sclock.now_us()
        self.lightsleeps += 1
        if self.wlan.active():
            # rp2: lightsleep returns at once while the Wi-Fi chip has work pending
            self.lightsleep_early += 1
            return
        w = self.wdt
        if w is not None:
            left = w.timeout - (self.sclock.now_us() - w.fed_us) // 1000
            if ms > left:
                # the watchdog keeps counting in lightsleep: it resets the board first
                self.sclock.sleep_ms(max(left, 0))
                print("[sim] watchdog reset during lightsleep(%d) (timeout %d ms)" % (ms, w.timeout))
                self.report_sleep()
                sys.exit(EXIT_WDT)
        self.sclock.sleep_ms(ms)
        self.slept_ms += ms

    lightsleeps = 0
    lightsleep_early = 0
    slept_ms = 0
    sleep_t0 = 0  # simulated time of the first lightsleep

    def report_sleep(self):
        if self.stats_path:
            import json

            imu = [d.stats() for d in self.imus]
            with open(self.stats_path + ".sleep", "w") as f:
                f.write(
                    json.dumps(
                        {
                            "lightsleeps": self.lightsleeps,
                            "lightsleep_early": self.lightsleep_early,
                            "slept_ms": self.slept_ms,
                            # from the first lightsleep to now: asleep, and awake between slices
                            "sleep_span_ms": (self.sclock.now_us() - self.sleep_t0) // 1000 if self.lightsleeps else 0,
                            "wifi_active": self.wlan.active(),
                            "imu": imu,
                        }
                    )
                )

    def emu_pin_write(self, pin):
        pin.history.append((self.sclock.ticks_ms(), pin.level))
        if len(pin.history) > 32:
            pin.history.pop(0)
        if self.verbose:
            print("[sim] pin %s -> %d" % (pin.id, pin.level))

    def emu_watch_pin(self, pin):
        if pin not in self.inputs:
            self.inputs.append(pin)

    def emu_arm_timer(self, t):
        t.next = self.sclock.now_us() + t.period_us
        if t not in self.timers:
            self.timers.append(t)

    def emu_disarm_timer(self, t):
        if t in self.timers:
            self.timers.remove(t)

    def emu_block_begin(self, services=True):
        self._block_services = services
        return self.sclock.now_us()

    def emu_block_end(self, t0):
        now = self.sclock.now_us()
        if now > t0:
            self._deliver(now, self.poll_us if self._block_services else 0, t0)
            self._service(now)

    _block_services = True

    # --- hardware factories: the real Board's, plus the simulated signal on inputs -------
    def make_pin_in(self, pin, pull, spec):
        p = Board.make_pin_in(self, pin, pull, spec)
        p.gen = sim_signals.Pulses(rate_hz=spec.get("sim_hz", 5.0), seed=self.seed + pin)
        p.next_edge = self.sclock.now_us() + p.gen.next_interval_us()
        self.emu_watch_pin(p)
        return p

    def make_pin_out(self, pin):
        p = Board.make_pin_out(self, pin)
        self.outputs.append(p)
        return p

    def _path(self, name):
        return self.flash_dir + "/" + name

    # --- the event engine -----------------------------------------------------------------
    def _next_event(self):
        best = None
        t_best = -1
        for t in self.timers:
            if t.callback is not None and (t_best < 0 or t.next < t_best):
                best = t
                t_best = t.next
        for p in self.inputs:
            if p.gen is not None and p.next_edge >= 0 and (t_best < 0 or p.next_edge < t_best):
                best = p
                t_best = p.next_edge
        return best, t_best

    def _deliver(self, t_end, poll_us, t_start=0):
        """Raise every timer tick and pin edge due up to t_end. poll_us > 0: the
        scheduler is serviced every poll_us from t_start (inside a blocking call)."""
        svc = t_start + poll_us
        while True:
            ev, t = self._next_event()
            if ev is None or t > t_end:
                return
            while poll_us and svc <= t:
                self._service(svc)
                svc += poll_us
            if ev in self.timers:
                ev.next += ev.period_us
                if ev.mode == 0:
                    self.emu_disarm_timer(ev)
                self._raise(ev.callback, ev, ev.hard, t)
            else:
                ev.next_edge += ev.gen.next_interval_us() // 2  # two edges per pulse
                ev.level = 1 - ev.level
                trig = ev.trigger
                if ev.handler is not None and ((ev.level and trig & 1) or (not ev.level and trig & 2)):
                    self._raise(ev.handler, ev, ev.hard, t)

    def _raise(self, fn, arg, hard, t):
        if hard:
            self.sclock.frozen = t  # a hard IRQ runs on time
            fn(arg)
            self.sclock.frozen = -1
        else:
            if self.sched.n == 0:
                self._first_queued = t
            self.sched.irq(fn, arg)

    _first_queued = 0

    def _service(self, t):
        """The VM runs the pending soft callbacks at virtual time t."""
        if self.sched.n:
            late = t - self._first_queued
            self.late_max_us = max(self.late_max_us, late)
            self.sclock.frozen = t
            self.sched.run()
            self.sclock.frozen = -1
        self._last_service = t

    # --- main-loop hooks --------------------------------------------------------------------
    def poll(self):
        clock = self.sclock
        now = clock.now_us()
        if 0 <= self.hang_us <= now:
            print("[sim] main loop hangs (EDGELINE_SIM_HANG_AT_S)")
            while True:  # a stuck driver or network call: only the watchdog ends this
                time.sleep_ms(100)
        if self.blocks and now >= self.blocks[0][0]:
            # C code that services no callback (flash erase, GC): time passes, ticks queue
            _, ms = self.blocks.pop(0)
            clock.sleep_ms(ms)
            now = clock.now_us()
        if self.faults and now >= self.faults[0][0]:
            _, kind, sev = self.faults.pop(0)
            for d in self.imus:
                d.set_fault(kind, sev)
            print("[sim] fault %s severity %s at t=%.1fs" % (kind, sev, now / 1e6))
        if self.verbose:
            d = self.wlan.down()
            if d != self._was_down:
                print("[sim] link %s at t=%.1fs" % ("down" if d else "up", now / 1e6))
                self._was_down = d
        self._deliver(now, 0)
        self._service(now)

    def idle(self, app):
        clock = self.sclock
        _, nxt = self._next_event()
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
        return stop_due(self, app, self.sclock.now_us())

    def drain(self, app):
        from sensorfw.boards.sim_extras import drain

        drain(self, app)

    def report(self, app):
        from sensorfw.boards.sim_extras import report

        report(self, app)


def make_board():
    if BOARD_NAME == "pico_w":
        from sensorfw.boards import pico_w

        return SimBoard(pico_w)
    from sensorfw.boards import esp32_devkit

    return SimBoard(esp32_devkit)
