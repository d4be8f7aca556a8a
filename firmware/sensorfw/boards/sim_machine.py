# Port-faithful stand-ins for `machine`, `network` and `socket` on the unix port (`ssl`:
# boards/sim_ssl.py, installed by the simulation board).
#
# The simulation board installs these as sys.modules["machine"] etc. before the real
# board code (port/board.py, port/mqtt.py) is imported, so CI runs the same code a
# board runs, with what the esp32 or rp2 port accepts and nothing more: the constants
# that port defines, the keyword arguments each call takes (others raise TypeError,
# as the C argument parser does), soft callbacks through a scheduler queue of the
# port's depth (dropped when full, unseen by Python), hard callbacks only where the
# port has them, watchdog and sleep limits, ADC pin rules and setsockopt behaviour.
# Every fact here is listed with its MicroPython source file in docs/firmware.md
# ("Port facts"); the timing of delivery lives in sim.py (the event engine).

import sys

# reset causes, per port (ports/esp32/modmachine.c; ports/rp2/modmachine.c)
RESET_CAUSES = {
    "esp32": {"PWRON_RESET": 1, "HARD_RESET": 2, "WDT_RESET": 3, "DEEPSLEEP_RESET": 4, "SOFT_RESET": 5},
    "rp2": {"PWRON_RESET": 1, "WDT_RESET": 3},
}
SCHEDULER_DEPTH = 8  # MICROPY_SCHEDULER_DEPTH on both ports
SOCKET_POLL_US = {"esp32": 100000, "rp2": 1000}  # callbacks serviced inside blocking socket calls
WDT_MAX_MS = {"esp32": 0, "rp2": 8388}  # rp2: 24-bit counter at 2 ticks per us (machine_wdt.c)
LIGHTSLEEP_MAX_MS = 4294967  # rp2: the sleep time in us must fit 32 bits (modmachine.c)
ESP32_ADC1 = (32, 33, 34, 35, 36, 37, 38, 39)
ESP32_ADC2 = (0, 2, 4, 12, 13, 14, 15, 25, 26, 27)
ESP32_FLASH_PINS = (6, 7, 8, 9, 10, 11)
ESP32_INPUT_ONLY = (34, 35, 36, 37, 38, 39)
RP2_ADC = (26, 27, 28, 29)
RP2_WIFI_PINS = (23, 24, 25, 29)  # wired to the CYW43439 on the Pico W


class Scheduler:
    """micropython.schedule's queue: a fixed ring of the port's depth.

    schedule() is the Python API (raises RuntimeError when full, as on the ports);
    irq() is what the C code of a soft Timer/Pin callback does (mp_sched_schedule
    returns false and the callback is lost: counted here, invisible to the firmware).
    """

    def __init__(self, depth=SCHEDULER_DEPTH):
        self.depth = depth
        self.fns = [None] * depth
        self.args = [None] * depth
        self.head = 0
        self.n = 0
        self.dropped = 0  # soft callbacks lost to a full queue (the truth the firmware cannot see)
        self.peak = 0
        self.calls = 0  # callbacks offered to the queue

    def _put(self, fn, arg):
        self.calls += 1
        if self.n >= self.depth:
            return False
        i = (self.head + self.n) % self.depth
        self.fns[i] = fn
        self.args[i] = arg
        self.n += 1
        self.peak = max(self.peak, self.n)
        return True

    def schedule(self, fn, arg):
        if not self._put(fn, arg):
            raise RuntimeError("schedule queue full")

    def irq(self, fn, arg):
        if not self._put(fn, arg):
            self.dropped += 1

    def run(self):
        """mp_handle_pending: run what is queued now (callbacks may queue more)."""
        k = self.n
        while k and self.n:
            i = self.head
            fn = self.fns[i]
            arg = self.args[i]
            self.fns[i] = None
            self.args[i] = None
            self.head = (i + 1) % self.depth
            self.n -= 1
            k -= 1
            fn(arg)


_board = None  # the SimBoard (bind): the emulated hardware calls back into it


def bind(board):
    global _board
    _board = board


def make_machine(port):
    """A module-like object with the port's `machine` API."""
    if port not in RESET_CAUSES:
        raise ValueError("unknown MicroPython port %r" % port)
    m = _Machine(port)
    for k, v in RESET_CAUSES[port].items():
        setattr(m, k, v)
    m.Pin = _Esp32Pin if port == "esp32" else _Rp2Pin
    m.Timer = _Esp32Timer if port == "esp32" else _Rp2Timer
    m.ADC = _Esp32ADC if port == "esp32" else _Rp2ADC
    m.RTC = _Esp32RTC if port == "esp32" else _Rp2RTC
    return m


class _Machine:
    def __init__(self, port):
        self.port = port
        self.__name__ = "machine"

    def I2C(self, id, *, scl=None, sda=None, freq=400000, timeout=50000):
        return _board.emu_i2c(id, scl, sda, freq)

    def WDT(self, id=0, timeout=5000):
        limit = WDT_MAX_MS[self.port]
        if limit and timeout > limit:
            raise ValueError("timeout exceeds %d" % limit)  # rp2 machine_wdt.c
        return _board.emu_wdt(timeout)

    def reset_cause(self):
        return _board.emu_reset_cause(self)

    def reset(self):
        _board.emu_reset()

    def deepsleep(self, time_ms=0):
        if self.port == "rp2":
            # rp2: lightsleep, then a watchdog reboot (modmachine.c)
            self.lightsleep(time_ms)
            _board.emu_wake_reset()
        _board.emu_deepsleep(time_ms)

    def lightsleep(self, time_ms=0):
        if self.port == "rp2" and time_ms > LIGHTSLEEP_MAX_MS:
            raise ValueError("sleep too long")
        _board.emu_lightsleep(time_ms)

    def freq(self):
        return 240000000 if self.port == "esp32" else 125000000

    def unique_id(self):
        return b"\xe1\x1e\x00\x00\x00\x01"


# --- Pin ---------------------------------------------------------------------------------


class _Pin:
    IN = 1
    OUT = 3
    PULL_UP = 1
    PULL_DOWN = 2
    IRQ_RISING = 1
    IRQ_FALLING = 2

    def __init__(self, pin_id, mode=-1, pull=-1, *, value=None):
        self.id = self._check(pin_id, mode)
        self.mode = mode
        self.pull = pull
        self.level = 1 if pull == 1 else 0
        self.handler = None
        self.trigger = 0
        self.hard = False
        self.gen = None  # sim_signals.Pulses driving an input
        self.next_edge = -1
        self.history = []
        if value is not None:
            self.value(value)

    def _check(self, pin_id, mode):
        return pin_id

    def value(self, v=None):
        if v is None:
            return self.level
        self.level = 1 if v else 0
        if self.mode == self.OUT:
            _board.emu_pin_write(self)
        return None

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def _irq(self, handler, trigger, hard):
        self.handler = handler
        self.trigger = trigger
        self.hard = hard
        _board.emu_watch_pin(self)


class _Esp32Pin(_Pin):
    def _check(self, pin_id, mode):
        if not isinstance(pin_id, int) or pin_id < 0 or pin_id > 39 or pin_id in (20, 24, 28, 29, 30, 31):
            raise ValueError("invalid pin")
        if pin_id in ESP32_FLASH_PINS:
            raise ValueError("invalid pin")  # the SPI flash: the board hangs on real hardware
        if mode == self.OUT and pin_id in ESP32_INPUT_ONLY:
            raise ValueError("pin can only be input")
        return pin_id

    # ports/esp32/machine_pin.c: handler, trigger, wake (no hard=: always scheduled)
    def irq(self, handler=None, trigger=3, wake=None):
        self._irq(handler, trigger, False)


class _Rp2Pin(_Pin):
    def _check(self, pin_id, mode):
        if pin_id == "LED":
            return pin_id  # the CYW43439's GPIO (Pico W)
        if not isinstance(pin_id, int) or pin_id < 0 or pin_id > 29:
            raise ValueError("invalid pin")
        if pin_id in RP2_WIFI_PINS and pin_id != 29:
            # driving these breaks the Wi-Fi chip's SPI link on a Pico W (strict sim)
            raise ValueError("GP%d belongs to the Pico W's Wi-Fi chip" % pin_id)
        return pin_id

    # ports/rp2/machine_pin.c: handler, trigger, hard
    def irq(self, handler=None, trigger=12, hard=False):
        self._irq(handler, trigger, hard)


# --- Timer -------------------------------------------------------------------------------


class _Timer:
    ONE_SHOT = 0
    PERIODIC = 1

    def __init__(self, timer_id=-1):
        self.id = self._check(timer_id)
        self.period_us = 0
        self.callback = None
        self.hard = False
        self.mode = 1
        self.next = -1

    def _arm(self, mode, callback, period, tick_hz, freq, hard):  # noqa: PLR0917
        if freq is not None:
            if freq <= 0:
                raise ValueError("freq must be > 0")
            self.period_us = int(1000000 / freq + 0.5)
        else:
            if period < 0:
                raise ValueError("period must be >= 0")
            self.period_us = int(period * 1000000 // tick_hz)
        self.mode = mode
        self.callback = callback
        self.hard = hard
        _board.emu_arm_timer(self)

    def deinit(self):
        self.callback = None
        _board.emu_disarm_timer(self)


class _Esp32Timer(_Timer):
    def _check(self, timer_id):
        if timer_id not in (0, 1, 2, 3):
            raise ValueError("invalid Timer number")  # hardware timers only
        return timer_id

    # ports/esp32/machine_timer.c: mode, callback, period, tick_hz, freq (always soft)
    def init(self, *, mode=1, callback=None, period=-1, tick_hz=1000, freq=None):
        self._arm(mode, callback, period, tick_hz, freq, False)


class _Rp2Timer(_Timer):
    def _check(self, timer_id):
        if timer_id != -1:
            raise ValueError("only virtual timers are supported")
        return timer_id

    # ports/rp2/machine_timer.c: mode, callback, period, tick_hz, freq, hard (from 1.26)
    def init(self, *, mode=1, callback=None, period=-1, tick_hz=1000, freq=None, hard=False):
        self._arm(mode, callback, period, tick_hz, freq, hard)


# --- ADC ---------------------------------------------------------------------------------


class _ADC:
    def __init__(self, pin):
        n = pin.id if isinstance(pin, _Pin) else pin
        self.pin = self._check(n)
        self.gen = _board.emu_adc_signal(self.pin)

    def _value(self):
        return self.gen.read_u16()

    def read_u16(self):
        return self._value()


class _Esp32ADC(_ADC):
    ATTN_0DB = 0
    ATTN_2_5DB = 1
    ATTN_6DB = 2
    ATTN_11DB = 3

    def __init__(self, pin, *, atten=None):
        super().__init__(pin)
        self._atten = 0 if atten is None else atten

    def _check(self, n):
        if n not in ESP32_ADC1 and n not in ESP32_ADC2:
            raise ValueError("invalid pin")
        return n

    def atten(self, a):
        self._atten = a

    def _value(self):
        if self.pin in ESP32_ADC2 and _board.emu_wifi_active():
            raise OSError(116)  # ESP_ERR_TIMEOUT: ADC2 is taken by the Wi-Fi driver
        return self.gen.read_u16()

    def read_uv(self):
        # calibrated: 11 dB spans ~0..3.3 V here (the sim's signal is linear)
        return self._value() * 3300000 // 65535


class _Rp2ADC(_ADC):
    def _check(self, n):
        if n in (0, 1, 2, 3, 4):
            n += 26
        if n not in RP2_ADC:
            raise ValueError("Pin doesn't have ADC capabilities")
        return n


# --- RTC ---------------------------------------------------------------------------------


def _rtc_datetime(self, t=None):
    # machine.RTC().datetime(): the clock mbedTLS checks certificate dates against. It does
    # not run here (the unix port's mbedTLS uses the host's clock); it starts where the
    # port's starts after power-on and keeps what is set.
    if t is None:
        return _board.rtc_datetime
    if len(t) != 8:
        raise ValueError("requested length 8 but object has length %d" % len(t))
    _board.rtc_datetime = tuple(t)
    return None


class _Esp32RTC:
    datetime = _rtc_datetime

    def memory(self, data=None):
        if data is None:
            return _board.emu_rtc_read()
        if len(data) > 2048:
            raise ValueError("buffer too long")
        _board.emu_rtc_write(data)
        return None


class _Rp2RTC:
    """rp2 machine.RTC: datetime only (no retained memory)."""

    datetime = _rtc_datetime


# the RTC after power-on: esp32 counts from 2000-01-01, rp2 is set to 2021-01-01 at every
# boot (ports/rp2/main.c); (year, month, day, weekday, hours, minutes, seconds, subseconds)
RTC_START = {"esp32": (2000, 1, 1, 5, 0, 0, 0, 0), "rp2": (2021, 1, 1, 4, 0, 0, 0, 0)}


# --- network -------------------------------------------------------------------------------


class _Network:
    STA_IF = 0
    AP_IF = 1

    __name__ = "network"

    def WLAN(self, interface=0):
        return _board.emu_wlan()


# --- socket --------------------------------------------------------------------------------


def make_socket_module(port):  # noqa: C901 (one closure per socket call the ports have)
    """The unix port's socket with the port's TCP_NODELAY rules and the sim's link state:
    connect fails while the simulated link is down, and time spent blocked in a socket
    call delivers the timer ticks the way the port would (sim.py)."""
    import io
    import select
    import socket as real

    class PortSocket(io.IOBase):
        # A wrapper, not a subclass: select.poll on a subclass of the unix port's
        # socket reports it always readable (and umqtt then loses packets); an
        # io.IOBase with ioctl() is a stream poll() understands.
        def __init__(self, *args):
            self._s = real.socket(*args)
            self._p = select.poll()
            self._p.register(self._s, select.POLLIN | select.POLLOUT)

        def ioctl(self, req, arg):
            if req == 3:  # MP_STREAM_POLL
                r = 0
                for _, ev in self._p.poll(0):
                    r |= ev
                return r & arg
            return -1

        def setsockopt(self, level, opt, value):
            if port == "rp2":
                # extmod/modlwip.c: the level is ignored; known options only
                if opt not in (0x04, 0x20, 0x40, 0x400, 0x401):
                    print("Warning: lwip.setsockopt() not implemented")
                    _board.sockopt_warnings += 1
                    return
                if opt == 0x40:
                    _board.nodelay = bool(value)
                return
            if level == 6 and opt == 1:
                _board.nodelay = bool(value)
            self._s.setsockopt(level, opt, value)

        def settimeout(self, t):
            self._s.settimeout(t)

        def setblocking(self, flag):
            self._s.setblocking(flag)

        def close(self):
            self._s.close()

        def _blocking(self, err, fn, *args):
            # a blocking call in C: callbacks serviced as the port does meanwhile, and the
            # simulated link-down windows failing it with the port's errno
            t0 = _board.emu_block_begin()
            try:
                if _board.net_down():
                    raise OSError(err)
                return fn(*args)
            finally:
                _board.emu_block_end(t0)

        def connect(self, addr):
            return self._blocking(113, self._s.connect, addr)  # EHOSTUNREACH

        def read(self, n=-1):
            # ECONNRESET: the link is lost
            return self._blocking(104, self._s.read, n) if n >= 0 else self._blocking(104, self._s.read)

        def readinto(self, buf, n=-1):
            return (
                self._blocking(104, self._s.readinto, buf) if n < 0 else self._blocking(104, self._s.readinto, buf, n)
            )

        def write(self, buf, n=-1):
            return self._blocking(104, self._s.write, buf if n < 0 else memoryview(buf)[:n])

    class _SocketModule:
        __name__ = "socket"
        socket = PortSocket
        AF_INET = real.AF_INET
        SOCK_STREAM = real.SOCK_STREAM
        IPPROTO_TCP = 6
        TCP_NODELAY = 0x40 if port == "rp2" else 1

        @staticmethod
        def getaddrinfo(host, p, *args):
            t0 = _board.emu_block_begin(False)  # DNS: no callbacks serviced meanwhile
            try:
                return real.getaddrinfo(host, p, *args)
            finally:
                _board.emu_block_end(t0)

    return _SocketModule()


def install(port):
    """Put the port's machine/network/socket where `import` finds them (before the
    board layer is imported); bind() then connects them to the SimBoard."""
    m = sys.modules.get("machine")
    if isinstance(m, _Machine) and m.port == port:
        return m  # already in place (the board layer may hold a reference to it)
    m = make_machine(port)
    sys.modules["machine"] = m
    sys.modules["network"] = _Network()
    sys.modules["socket"] = make_socket_module(port)
    return m
