# Board for CircuitPython (Pico W, ESP32-S3): the firmware's hardware layer there.
#
# CircuitPython runs no user code in interrupts: what MicroPython does in timer and pin
# callbacks happens here in the main loop (poll), from what CircuitPython's background C
# code captured meanwhile. The sample timer is polled: a late poll delivers one tick and
# the sampler counts the missed slots (core/sampler.py), as for a coalesced soft timer.
# Pulses: countio.Counter counts edges in the background (nothing lost while the loop
# is busy); keypad.Keys queues debounced edges with their time, for EVENT records and
# debounced counting. ADC: analogio; I2C: busio with the MPU-6050 FIFO pacing samples.
# Pins are numbered as on MicroPython (GPIO numbers; the profile's NAMED_PINS by name), so
# config.json, settings.toml and core/pins.py's checks are the same.

import gc
import time

import alarm
import analogio
import board
import busio
import countio
import digitalio
import keypad
import microcontroller
import supervisor
import wifi

_MASK = (1 << 29) - 1  # supervisor.ticks_ms() wraps at 2**29
_HALF = 1 << 28
_PERIOD = 1 << 29


class Clock:
    """time.ticks_* for the core, over supervisor.ticks_ms() (modulo 2**29). `at` >= 0 pins
    ticks_ms to an edge's own time while its handler runs (keypad event timestamps)."""

    def __init__(self):
        self.at = -1

    def ticks_ms(self):
        if self.at >= 0:
            return self.at
        return supervisor.ticks_ms()

    def ticks_us(self):
        return (time.monotonic_ns() // 1000) & _MASK

    def ticks_diff(self, a, b):
        d = (a - b) & _MASK
        return d - _PERIOD if d >= _HALF else d

    def ticks_add(self, a, b):
        return (a + b) & _MASK

    def sleep_ms(self, ms):
        time.sleep(ms / 1000)


def pin_of(n):
    """A GPIO number (as in config.json) or a board pin name -> the microcontroller.Pin."""
    if isinstance(n, str):
        return getattr(board, n)
    # microcontroller.pin is CircuitPython's module of the chip's pins: the stub has no such attribute
    p = getattr(microcontroller.pin, "GPIO%d" % n, None)  # type: ignore[attr-defined]
    if p is None:
        raise ValueError("this board has no GPIO%d" % n)
    return p


class WiFi:
    """wifi.radio. CircuitPython's connect() blocks until joined or timed out: the join is
    bounded by wifi.connect_timeout_ms and retried by core/link.py with backoff."""

    def __init__(self):
        self.radio = wifi.radio
        self.ssid = None
        self._password = None
        self.timeout_s = 15.0

    def configure(self, wifi_cfg):
        self.ssid = wifi_cfg["ssid"]
        self._password = wifi_cfg["password"]
        self.timeout_s = wifi_cfg.get("connect_timeout_ms", 15000) / 1000
        self.radio.enabled = True
        self.connect()

    def off(self):
        self.radio.enabled = False

    def isconnected(self):
        return self.radio.connected

    def connect(self):
        if self.ssid and not self.radio.connected:
            try:
                self.radio.connect(self.ssid, self._password or "", timeout=self.timeout_s)
            except OSError:  # CircuitPython's ConnectionError is one
                pass  # core/link.py tries again with backoff

    def rssi(self):
        info = self.radio.ap_info
        return info.rssi if info is not None else 0


class PolledTimer:
    """machine.Timer's role, run from the main loop: at most one callback per poll."""

    def __init__(self):
        self.period_ms = 0
        self.due = 0
        self.callback = None
        self.coalesced = 0  # periods that passed without their own callback


class ADC:
    def __init__(self, pin):
        self.ain = analogio.AnalogIn(pin_of(pin))

    def read_u16(self):
        return self.ain.value


class Output:
    def __init__(self, pin):
        self.io = digitalio.DigitalInOut(pin_of(pin))
        self.io.direction = digitalio.Direction.OUTPUT

    def value(self, v=None):
        if v is None:
            return 1 if self.io.value else 0
        self.io.value = bool(v)
        return None


class I2CMem:
    """machine.I2C's register access (what drivers/mpu6050.py uses) over busio.I2C, which
    the firmware owns alone: locked once."""

    def __init__(self, i2c):
        while not i2c.try_lock():
            pass
        self.i2c = i2c
        self._reg = bytearray(1)

    def readfrom_mem_into(self, addr, reg, buf):
        self._reg[0] = reg
        self.i2c.writeto_then_readfrom(addr, self._reg, buf)

    def readfrom_mem(self, addr, reg, n):
        buf = bytearray(n)
        self.readfrom_mem_into(addr, reg, buf)
        return bytes(buf)

    def writeto_mem(self, addr, reg, data):
        out = bytearray(1 + len(data))
        out[0] = reg
        out[1:] = data
        self.i2c.writeto(addr, out)


class CountPin:
    """A pulse input counted by countio in the background (count mode, no debounce)."""

    def __init__(self, pin, pull, edge):
        e = countio.Edge
        edges = {"rising": e.RISE, "falling": e.FALL, "both": e.RISE_AND_FALL}
        pulls = {"up": digitalio.Pull.UP, "down": digitalio.Pull.DOWN}
        self.counter = countio.Counter(pin_of(pin), edge=edges[edge], pull=pulls.get(pull))
        self.seen = 0
        self.handler = None

    def value(self):
        return 0  # countio owns the pin; count mode reports counts, not the level

    def deliver(self, clock):
        n = self.counter.count
        d = n - self.seen
        self.seen = n
        h = self.handler
        while d > 0 and h is not None:
            h(self)
            d -= 1


class KeyPin:
    """A pulse input scanned by keypad in the background: debounced edges queued with
    their time (event mode, or a debounced count)."""

    def __init__(self, pin, pull, edge, debounce_ms, events):
        # "rising" reports a press with value_when_pressed=True; "falling" with False
        self.edge = edge
        self.keys = keypad.Keys(
            (pin_of(pin),),
            value_when_pressed=edge != "falling",
            pull=pull is not None,
            interval=max(debounce_ms, 1) / 1000,
            max_events=events,
        )
        self.level = 0
        self.handler = None
        self.overflows = 0
        self._ev = keypad.Event()

    def value(self):
        return self.level

    def deliver(self, clock):
        q = self.keys.events
        if q.overflowed:
            q.overflowed = False
            self.overflows += 1
        ev = self._ev
        h = self.handler
        while q.get_into(ev):
            high = ev.pressed if self.edge != "falling" else ev.released
            self.level = 1 if high else 0
            if h is not None and (self.edge == "both" or ev.pressed):
                clock.at = ev.timestamp  # the edge's own time, not this poll's
                h(self)
                clock.at = -1


class Board:
    OTA_ARCH = "circuitpython"  # firmware bundles for CircuitPython carry sources (core/ota.py)
    needs_wifi = True
    hard_timer_irq = False
    hard_pin_irq = False

    def __init__(self, profile, flash_dir=""):
        self.profile = profile
        self.flash_dir = flash_dir or ""
        self.config_path = self.flash_dir + "/settings.toml"  # what os.getenv reads
        self.clock = Clock()
        self.net = WiFi()
        self.wdt_ms = 0
        self.timers = []
        self.inputs = []
        self._pool = None

    def schedule(self, fn, arg):
        fn(arg)  # no interrupts: everything already runs in the main loop
        return True

    def configure_net(self, wifi_cfg):
        self.net.configure(wifi_cfg)

    # timers: polled from the main loop
    def make_timer(self):
        t = PolledTimer()
        self.timers.append(t)
        return t

    def start_timer(self, timer, rate_hz, callback):
        timer.period_ms = max(1, int(1000 / rate_hz + 0.5))
        timer.due = self.clock.ticks_add(self.clock.ticks_ms(), timer.period_ms)
        timer.callback = callback

    def stop_timer(self, timer):
        timer.callback = None

    # hardware factories
    def make_adc(self, pin):
        return ADC(pin)

    def make_i2c(self, i2c_id, scl, sda, freq):
        d = self.profile.I2C_DEFAULT
        scl = d["scl"] if scl < 0 else scl
        sda = d["sda"] if sda < 0 else sda
        return I2CMem(busio.I2C(pin_of(scl), pin_of(sda), frequency=freq))

    def make_pin_in(self, pin, pull, spec):
        if spec.get("mode", "count") == "count" and not spec.get("debounce_ms"):
            p = CountPin(pin, pull, spec.get("edge", "rising"))  # type: CountPin | KeyPin
        else:
            p = KeyPin(pin, pull, spec.get("edge", "both"), spec.get("debounce_ms", 0), 64)
        self.inputs.append(p)
        return p

    def attach_irq(self, pin, handler, edge):
        pin.handler = handler

    def make_pin_out(self, pin):
        return Output(pin)

    def make_wdt(self, timeout_ms):
        from watchdog import WatchDogMode

        w = microcontroller.watchdog
        if w is None:  # None on chips without one; the RP2040 and ESP32-S3 have one
            raise OSError("this board has no watchdog: set watchdog_ms to 0")
        w.timeout = timeout_ms / 1000
        w.mode = WatchDogMode.RESET
        w.feed()
        self.wdt_ms = timeout_ms
        return w

    def transport(self, client_id, host, port, user, password, keepalive_s, timeout_ms, tls=None):  # noqa: PLR0917
        import socketpool

        from sensorfw.cpport.mqtt import MQTTTransport

        if self._pool is None:
            self._pool = socketpool.SocketPool(wifi.radio)
        reserve = getattr(self.profile, "TLS_HEAP_RESERVE", 0)
        return MQTTTransport(self._pool, client_id, host, port, user, password, keepalive_s, timeout_ms, tls, reserve)

    # sleep memory, deep sleep, reset
    def rtc_memory_read(self):
        mem = alarm.sleep_memory
        n = mem[0] | mem[1] << 8  # length-prefixed: sleep_memory has a fixed size
        if n == 0 or n > len(mem) - 2:
            return b""
        return bytes(mem[2 : 2 + n])

    def rtc_memory_write(self, data):
        mem = alarm.sleep_memory
        n = len(data)
        if n > len(mem) - 2:
            return False
        mem[2 : 2 + n] = data
        mem[0] = n & 0xFF
        mem[1] = n >> 8
        return True

    def woke_from_deepsleep(self):
        return alarm.wake_alarm is not None

    def deepsleep(self, ms, wdt=None):
        """Sleep ms, then start again from code.py (state kept by core/state.py)."""
        self.net.off()
        if wdt is not None:
            try:
                wdt.deinit()  # the watchdog must not reset the board while it sleeps
            except (AttributeError, ValueError):
                pass
        wake = alarm.time.TimeAlarm(monotonic_time=time.monotonic() + ms / 1000)
        alarm.exit_and_deep_sleep_until_alarms(wake)

    def reset(self):
        microcontroller.reset()

    # main-loop hooks
    def poll(self):
        clock = self.clock
        for p in self.inputs:
            p.deliver(clock)
        now = clock.ticks_ms()
        for t in self.timers:
            if t.callback is not None and clock.ticks_diff(now, t.due) >= 0:
                late = clock.ticks_diff(now, t.due) // t.period_ms
                t.coalesced += late
                t.due = clock.ticks_add(t.due, (late + 1) * t.period_ms)
                t.callback(t)

    def idle(self, app):
        # until the next tick is due, at most 1 ms: background capture keeps running
        time.sleep(0.001)

    def should_stop(self, app):
        return False

    def drain(self, app):
        pass

    def report(self, app):
        pass

    def mem_free(self):
        return gc.mem_free()  # type: ignore[attr-defined]  # CircuitPython's gc has it; the stubs leave gc to CPython's typeshed
