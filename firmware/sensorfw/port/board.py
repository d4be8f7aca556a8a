# Board for real MicroPython ports (esp32, rp2): the firmware's hardware layer.
#
# Everything that touches `machine`, `network` and `micropython` lives here; the
# board-specific facts come from a profile module in boards/ (data only).

import gc
import time

import machine
import micropython
import network


class WiFi:
    """network.WLAN station: connect() starts joining and returns at once."""

    def __init__(self):
        self.wlan = network.WLAN(network.STA_IF)
        self.ssid = None
        self._password = None

    def configure(self, wifi_cfg):
        self.ssid = wifi_cfg["ssid"]
        self._password = wifi_cfg["password"]
        self.wlan.active(True)
        self.connect()

    def off(self):
        """Leave the network and power the radio down (before a sleep)."""
        try:
            self.wlan.disconnect()
        except OSError:
            pass
        self.wlan.active(False)

    def isconnected(self):
        return self.wlan.isconnected()

    def connect(self):
        if self.ssid and not self.wlan.isconnected():
            try:
                self.wlan.connect(self.ssid, self._password)
            except OSError:
                pass  # already connecting; the link state machine retries with backoff

    def rssi(self):
        try:
            return int(self.wlan.status("rssi"))
        except (OSError, ValueError, TypeError):
            return 0


LIGHTSLEEP_SLICE_MS = 4000  # rp2: below the watchdog maximum (8388 ms) and lightsleep's limit


class CalibratedADC:
    """esp32: read_u16() is the raw, uncalibrated reading, and at 11 dB attenuation the
    input is linear only from ~150 to ~2450 mV; read_uv() applies the chip's eFuse
    calibration. Scaled to the 0..65535 range that read_u16 uses (3.3 V full scale)
    with small-int arithmetic (no allocation on a 32-bit port)."""

    def __init__(self, adc):
        self._read_uv = adc.read_uv

    def read_u16(self):
        v = (self._read_uv() >> 4) * 1311 // 4125  # uV * 65535 / 3300000
        return 65535 if v > 65535 else v


class Board:
    needs_wifi = True

    def __init__(self, profile, flash_dir="", config_path="config.json"):
        self.profile = profile
        self.flash_dir = flash_dir or "."
        self.config_path = config_path
        self.clock = time
        self.hard_timer_irq = profile.HARD_TIMER_IRQ
        self.hard_pin_irq = profile.HARD_PIN_IRQ
        self.schedule = micropython.schedule
        self.net = WiFi()
        self.wdt_ms = 0

    def configure_net(self, wifi_cfg):
        self.net.configure(wifi_cfg)

    # hardware factories
    def make_timer(self):
        return machine.Timer(self.profile.TIMER_ID)

    def start_timer(self, timer, rate_hz, callback):
        if rate_hz >= 1 and int(rate_hz) == rate_hz:
            timer.init(mode=machine.Timer.PERIODIC, freq=int(rate_hz), callback=callback)
        else:
            timer.init(mode=machine.Timer.PERIODIC, period=int(1000 / rate_hz), callback=callback)

    def stop_timer(self, timer):
        timer.deinit()

    def make_adc(self, pin):
        adc = machine.ADC(machine.Pin(pin))
        if self.profile.ADC_ATTEN_11DB:
            adc.atten(machine.ADC.ATTN_11DB)
            return CalibratedADC(adc)
        return adc

    def make_i2c(self, i2c_id, scl, sda, freq):
        d = self.profile.I2C_DEFAULT
        scl = d["scl"] if scl < 0 else scl
        sda = d["sda"] if sda < 0 else sda
        return machine.I2C(i2c_id, scl=machine.Pin(scl), sda=machine.Pin(sda), freq=freq)

    def make_pin_in(self, pin, pull, spec):
        if pull == "up":
            return machine.Pin(pin, machine.Pin.IN, machine.Pin.PULL_UP)
        if pull == "down":
            return machine.Pin(pin, machine.Pin.IN, machine.Pin.PULL_DOWN)
        return machine.Pin(pin, machine.Pin.IN)

    def attach_irq(self, pin, handler, edge):
        if edge == "rising":
            trig = machine.Pin.IRQ_RISING
        elif edge == "falling":
            trig = machine.Pin.IRQ_FALLING
        else:
            trig = machine.Pin.IRQ_RISING | machine.Pin.IRQ_FALLING
        if self.hard_pin_irq:
            pin.irq(handler=handler, trigger=trig, hard=True)
        else:
            pin.irq(handler=handler, trigger=trig)  # esp32: no hard= (always scheduled)

    def make_pin_out(self, pin):
        return machine.Pin(pin, machine.Pin.OUT)

    def make_wdt(self, timeout_ms):
        # the config validator keeps timeout_ms within the profile's WDT_MAX_MS
        self.wdt_ms = timeout_ms
        return machine.WDT(timeout=timeout_ms)

    def transport(self, client_id, host, port, user, password, keepalive_s, timeout_ms, tls=None):  # noqa: PLR0917
        from sensorfw.port.mqtt import MQTTTransport

        if tls is not None:
            from sensorfw.port.tls import clock_floor

            clock_floor(machine.RTC(), tls["cert"])  # before any handshake: port/tls.py
        reserve = getattr(self.profile, "TLS_HEAP_RESERVE", 0)
        return MQTTTransport(client_id, host, port, user, password, keepalive_s, timeout_ms, tls, reserve)

    # RTC memory, deep sleep, reset
    def rtc_memory_read(self):
        if not self.profile.HAS_RTC_MEMORY:
            return None
        return machine.RTC().memory()

    def rtc_memory_write(self, data):
        if not self.profile.HAS_RTC_MEMORY:
            return False
        machine.RTC().memory(data)
        return True

    def woke_from_deepsleep(self):
        """True/False where the port reports it; None where it cannot tell (rp2 has no
        DEEPSLEEP_RESET: the sleep record on flash decides, core/state.py)."""
        cause = getattr(machine, "DEEPSLEEP_RESET", None)
        if cause is None:
            return None
        return machine.reset_cause() == cause

    def deepsleep(self, ms, wdt=None):
        """Sleep ms, then start again from main.py (state kept by core/state.py)."""
        self.net.off()
        if not self.profile.DEEPSLEEP_IS_LIGHTSLEEP:
            machine.deepsleep(ms)
            return
        # rp2: machine.deepsleep is one lightsleep and a reboot, and the watchdog keeps
        # counting in lightsleep (it would reset the board after at most 8.4 s); sleep
        # in slices that the watchdog allows, feeding it between them, then reboot.
        clock = self.clock
        step = LIGHTSLEEP_SLICE_MS
        if wdt is not None and self.wdt_ms:
            step = min(step, self.wdt_ms // 2)
        t0 = clock.ticks_ms()
        while True:
            left = ms - clock.ticks_diff(clock.ticks_ms(), t0)
            if left <= 0:
                break
            machine.lightsleep(min(left, step))
            if wdt is not None:
                wdt.feed()
        machine.reset()

    def reset(self):
        machine.reset()

    # main-loop hooks
    def poll(self):
        pass  # timers and pins interrupt on their own

    def idle(self, app):
        time.sleep_ms(1)

    def should_stop(self, app):
        return False

    def drain(self, app):
        pass

    def report(self, app):
        pass

    def mem_free(self):
        return gc.mem_free()
