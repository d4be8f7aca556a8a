# Simulation board for CircuitPython on the MicroPython unix port.
#
# The firmware runs with the real CircuitPython board layer (cpport/board.py,
# cpport/mqtt.py over the pinned MiniMQTT) and the profile users deploy
# (boards/cp_pico_w.py, boards/cp_esp32s3.py); firmware/cpsim stands in for
# CircuitPython's modules (wifi, socketpool, countio, keypad, analogio, busio, alarm,
# microcontroller, storage, supervisor, os.getenv over settings.toml). This class adds
# only what a bounded test run needs: when to stop, the drain, the report.
#
# Environment (all optional; the board's own settings come from settings.toml):
#   EDGELINE_SIM_BOARD      cp_pico_w (default) or cp_esp32s3 (also picks the profile)
#   EDGELINE_SIM_DIR        the directory standing in for CIRCUITPY (default: .)
#   EDGELINE_SIM_DURATION_S stop after this many seconds
#   EDGELINE_SIM_SAMPLES    stop after this many sample rows
#   EDGELINE_SIM_STOP_FILE  stop once this file exists
#   EDGELINE_SIM_DRAIN_S    at the stop, keep the link up to this many seconds until the
#                           queue is empty
#   EDGELINE_SIM_LINK_DOWN  "10-20,40-45" seconds without network
#   EDGELINE_SIM_I2C_FAIL   "5-6" seconds in which every I2C transfer fails
#   EDGELINE_SIM_HELD_PINS  GPIOs held to ground (boot.py's USB-write pin)
#   EDGELINE_SIM_SEED       signal seed (default 1)
#   EDGELINE_SIM_STATS      write a JSON stats file at the end
#   EDGELINE_SIM_HANG_AT_S  the main loop hangs at this time (watchdog test)
# Exit codes: 0 run limit reached, 3 deep sleep (restart = wake), 4 reset, 137 watchdog.

import time

import _cpsim
import wifi

from sensorfw.boards.sim_stop import read_limits, stop_due
from sensorfw.cpport.board import Board, pin_of


class SimBoard(Board):
    def __init__(self, profile):
        Board.__init__(self, profile, _cpsim.drive())
        self.needs_wifi = False  # settings.toml may leave Wi-Fi out: the sim joins "sim"
        read_limits(self, _cpsim.env)
        self.hang_us = int(float(_cpsim.env("EDGELINE_SIM_HANG_AT_S", "-1")) * 1000000)
        self.imus = []

    def configure_net(self, wifi_cfg):
        if not wifi_cfg.get("ssid"):
            wifi_cfg = {"ssid": "sim", "password": None, "connect_timeout_ms": wifi_cfg["connect_timeout_ms"]}
        Board.configure_net(self, wifi_cfg)

    def make_pin_in(self, pin, pull, spec):
        pin_of(pin).sim_hz = spec.get("sim_hz", 5.0)  # the simulated signal on that pin
        return Board.make_pin_in(self, pin, pull, spec)

    def make_i2c(self, i2c_id, scl, sda, freq):
        m = Board.make_i2c(self, i2c_id, scl, sda, freq)
        self.imus.append(m.i2c.imu)
        return m

    def poll(self):
        if 0 <= self.hang_us <= _cpsim.now_us():
            print("[cpsim] main loop hangs (EDGELINE_SIM_HANG_AT_S)")
            while True:  # a stuck driver or network call: only the watchdog ends this
                time.sleep_ms(100)
        Board.poll(self)

    def should_stop(self, app):
        return stop_due(self, app, _cpsim.now_us())

    def drain(self, app):
        from sensorfw.boards.sim_extras import drain

        drain(self, app)

    def report(self, app):
        from sensorfw.boards.sim_extras import report

        report(self, app)

    def report_fields(self, st):
        """What the firmware's own stats cannot see (sim_extras.report adds them)."""
        import digitalio

        st["board"] = self.profile.NAME
        st["runtime"] = "circuitpython"
        st["outputs"] = [[o.pin.n, 1 if o._value else 0, o.history] for o in digitalio.OUTPUTS]
        st["imu"] = [d.stats() for d in self.imus]
        st["timer_coalesced"] = sum([t.coalesced for t in self.timers])
        st["edge_overflows"] = sum([getattr(p, "overflows", 0) for p in self.inputs])
        st["wifi_joins"] = wifi.radio.joins
        st["sim_time_s"] = _cpsim.now_us() / 1e6

    def idle(self, app):
        time.sleep_ms(1)
