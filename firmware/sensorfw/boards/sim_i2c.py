# Simulated I2C bus with an MPU-6050 on it (sim board on the unix port, and tests).
#
# The chip is emulated from its register map (MPU-6000/6050 Register Map rev 4.2) as far
# as the firmware can observe it, so that a driver that is wrong for the real chip fails
# here too: samples appear from virtual time at the rate SMPLRT_DIV/CONFIG set, only
# while awake, into a 1024-byte FIFO that overwrites its oldest bytes when full and
# flags FIFO_OFLOW_INT; FIFO_RESET acts only while FIFO_EN is 0; FIFO_COUNT_L is only
# refreshed by reading FIFO_COUNT_H; INT_STATUS clears on read; DEVICE_RESET restores
# reset values and the chip takes no access for 100 ms after it (the datasheet only
# says "wait"; here an early access fails with ENODEV, like a NACK, so it is noticed).
#
# Samples are made lazily, on each register access, for the virtual time elapsed
# (clock.now_us()); nothing runs between accesses. Steady-state accesses allocate
# nothing (the sim runs the whole firmware in a 64-128 KB heap in some tests).

from array import array

from sensorfw.boards import sim_signals

try:
    import micropython

    _native = micropython.native  # the sim stands in for C code: keep it cheap
except (ImportError, AttributeError):  # CPython (tests)

    def _native(f):
        return f


_SMPLRT_DIV = 0x19
_CONFIG = 0x1A
_GYRO_CONFIG = 0x1B
_ACCEL_CONFIG = 0x1C
_FIFO_EN = 0x23
_INT_ENABLE = 0x38
_INT_STATUS = 0x3A
_ACCEL_XOUT_H = 0x3B
_TEMP_OUT_H = 0x41
_GYRO_XOUT_H = 0x43
_SIGNAL_PATH_RESET = 0x68
_USER_CTRL = 0x6A
_PWR_MGMT_1 = 0x6B
_FIFO_COUNT_H = 0x72
_FIFO_R_W = 0x74
_WHO_AM_I = 0x75

_OFLOW = 0x10  # INT_STATUS / INT_ENABLE bit 4
_FIFO_SIZE = 1024
_FIFO_MASK = 1023
_RESET_BUSY_US = 100000
_TEMP_25C = (25 * 340 - 12420) & 0xFFFF  # TEMP_OUT = (T - 36.53 C) * 340
_GYRO_LSB = (131, 65.5, 32.8, 16.4)  # per deg/s, FS_SEL 0..3
_ETIMEDOUT = 116  # errno on ESP32 (lwIP numbering), what a stuck bus gives there
_ENODEV = 19  # no ACK
_EIO = 5
# read-only registers: writes are ignored, as on the chip
_READ_ONLY = (_INT_STATUS, _FIFO_COUNT_H, _FIFO_COUNT_H + 1, _WHO_AM_I)


def parse_who_am_i(text):
    """EDGELINE_SIM_IMU_WHOAMI ("0x70", "112"; empty or None = 0x68) -> int."""
    return int(text, 0) if text else 0x68


def parse_fail_windows(text):
    """EDGELINE_SIM_I2C_FAIL "a-b,c-d" (virtual seconds; empty or None = none) -> [(a, b)]."""
    return [(float(p.split("-")[0]), float(p.split("-")[1])) for p in text.split(",")] if text else []


def vibration_for(rate_hz, seed):
    """The signal generator the sim uses at rate_hz (tests rebuild the sequence with it).

    Shaft at 24.7 Hz where that is below Nyquist; slower rates get a shaft at rate/4
    (the generator keeps every harmonic it models below its own Nyquist)."""
    shaft = 24.7 if rate_hz > 49.4 else rate_hz / 4
    return sim_signals.Vibration(rate_hz=rate_hz, seed=seed, shaft_hz=shaft)


class SimMPU6050:
    """An MPU-6050 register file and FIFO driven by virtual time (clock.now_us()).

    Signal: sim_signals.Vibration at the configured rate (made again when the rate
    changes, from `seed`), or replay.next_row(out6) per sample. fail_windows: (start_s,
    end_s) of virtual time in which every transaction raises OSError(116) (ETIMEDOUT)."""

    def __init__(self, addr, clock, seed, replay=None, who_am_i=0x68, fail_windows=()):  # noqa: PLR0917
        self.addr = addr
        self.clock = clock
        self.seed = seed
        self.replay = replay
        self.who = who_am_i
        self._fail = [(int(a * 1000000), int(b * 1000000)) for a, b in fail_windows]
        self.regs = bytearray(128)
        self.fifo = bytearray(_FIFO_SIZE)
        self._fhead = 0  # oldest byte
        self._fcount = 0
        self._flast = 0  # an empty FIFO reads back the last byte read
        self._layout = b""  # data register addresses written to the FIFO per sample
        self.tmp = array("h", [0] * 6)
        self.gen = None
        self._gen_period = 0
        self._fault = None
        self._a_lsb = 16384
        self._g_lsb = 131
        self._period = 125  # us, from SMPLRT_DIV and CONFIG
        self._next_us = 0
        self._busy_until = -1
        self._asleep_since = -1  # virtual us, -1 while awake
        # statistics
        self.samples = 0  # samples made (awake)
        self.fifo_overflows = 0  # samples that overwrote unread FIFO bytes
        self.bytes_lost = 0  # FIFO bytes overwritten unread
        self.asleep_us = 0
        self.transactions = 0
        self._reset(clock.now_us())  # power-on state: reset values, asleep

    # --- state ------------------------------------------------------------------------
    def _reset(self, now):
        r = self.regs
        i = 0
        while i < 128:
            r[i] = 0
            i += 1
        r[_PWR_MGMT_1] = 0x40  # SLEEP
        r[_WHO_AM_I] = self.who
        self._fhead = 0
        self._fcount = 0
        self._layout = b""
        self._a_lsb = 16384
        self._g_lsb = 131
        if self._asleep_since < 0:
            self._asleep_since = now
        self._retime(now)

    def _retime(self, now):
        # Gyro output rate 8 kHz with the DLPF off (DLPF_CFG 0 or 7), else 1 kHz.
        cfg = self.regs[_CONFIG] & 7
        per = (125 if cfg in (0, 7) else 1000) * (1 + self.regs[_SMPLRT_DIV])
        if per != self._period:
            self._period = per
            self._next_us = now + per

    def set_fault(self, kind, severity=1.0, defect_hz=None):
        """Fault injection (sim_signals.FAULTS), kept across generator changes."""
        self._fault = (kind, severity, defect_hz)
        if self.gen is not None:
            self.gen.set_fault(kind, severity, defect_hz)

    def _new_gen(self):
        self.gen = vibration_for(1000000 / self._period, self.seed)
        self._gen_period = self._period
        if self._fault is not None:
            kind, sev, dhz = self._fault
            self.gen.set_fault(kind, sev, dhz)

    # --- sampling ---------------------------------------------------------------------
    def _advance(self, now):
        if self._asleep_since >= 0:
            return
        nxt = self._next_us
        if now < nxt:
            return
        per = self._period
        while nxt <= now:
            self._sample()
            nxt += per
        self._next_us = nxt

    def latch(self):
        """Bring the chip up to the clock's present time (kept for the board's sensor list)."""
        self._advance(self.clock.now_us())

    def _sample(self):
        t = self.tmp
        if self.replay is not None:
            self.replay.next_row(t)
        else:
            if self._gen_period != self._period:
                self._new_gen()  # allocates: only after a rate change
            self.gen.fill_raw(t, 1, self._a_lsb, self._g_lsb)
        r = self.regs
        j = _ACCEL_XOUT_H
        i = 0
        while i < 6:
            v = t[i] & 0xFFFF
            r[j] = v >> 8
            r[j + 1] = v & 0xFF
            j += 2
            if j == _TEMP_OUT_H:
                r[j] = _TEMP_25C >> 8
                r[j + 1] = _TEMP_25C & 0xFF
                j = _GYRO_XOUT_H
            i += 1
        self.samples += 1
        if r[_USER_CTRL] & 0x40 and self._layout:
            self._push()

    @_native
    def _push(self):
        # One sample's enabled registers into the FIFO; when full the oldest byte goes.
        r = self.regs
        f = self.fifo
        lay = self._layout
        m = len(lay)
        cnt = self._fcount
        head = self._fhead
        tail = (head + cnt) & _FIFO_MASK
        lost = 0
        i = 0
        while i < m:
            f[tail] = r[lay[i]]
            tail = (tail + 1) & _FIFO_MASK
            if cnt == _FIFO_SIZE:
                head = (head + 1) & _FIFO_MASK
                lost += 1
            else:
                cnt += 1
            i += 1
        self._fcount = cnt
        self._fhead = head
        if lost:
            self.bytes_lost += lost
            self.fifo_overflows += 1
            if r[_INT_ENABLE] & _OFLOW:
                r[_INT_STATUS] |= _OFLOW

    @_native
    def _pop(self, buf):
        # FIFO_R_W burst: every byte read pops one; an empty FIFO repeats the last byte.
        f = self.fifo
        n = len(buf)
        cnt = self._fcount
        head = self._fhead
        last = self._flast
        i = 0
        while i < n:
            if cnt > 0:
                last = f[head]
                head = (head + 1) & _FIFO_MASK
                cnt -= 1
            buf[i] = last
            i += 1
        self._fcount = cnt
        self._fhead = head
        self._flast = last

    def _set_layout(self, v):
        # FIFO_EN bits -> registers in the order the chip writes them: by register
        # number, ACCEL (0x3B..0x40), TEMP (0x41..0x42), GYRO X, Y, Z (0x43..0x48).
        lay = []
        for bit, start, n in ((0x08, 0x3B, 6), (0x80, 0x41, 2), (0x40, 0x43, 2), (0x20, 0x45, 2), (0x10, 0x47, 2)):
            if v & bit:
                lay.extend(range(start, start + n))
        self._layout = bytes(sorted(lay))

    # --- bus transactions -------------------------------------------------------------
    def _access(self):
        now = self.clock.now_us()
        for w in self._fail:
            if w[0] <= now < w[1]:
                raise OSError(_ETIMEDOUT)
        if now < self._busy_until:
            raise OSError(_ENODEV)  # resetting: no ACK
        self.transactions += 1
        self._advance(now)
        return now

    def read_into(self, reg, buf):
        self._access()
        if reg == _FIFO_R_W:
            self._pop(buf)
            return
        n = len(buf)
        if reg + n > 128:
            raise OSError(_EIO)  # past the register file
        r = self.regs
        if reg <= _FIFO_COUNT_H < reg + n:
            # reading FIFO_COUNT_H loads both count registers
            r[_FIFO_COUNT_H] = self._fcount >> 8
            r[_FIFO_COUNT_H + 1] = self._fcount & 0xFF
        i = 0
        while i < n:  # n is 1, 2 or 14 here; allocation-free on both runtimes
            buf[i] = r[reg + i]
            i += 1
        if reg <= _INT_STATUS < reg + n:
            r[_INT_STATUS] = 0  # cleared on read

    def write(self, reg, buf):
        now = self._access()
        i = 0
        while i < len(buf):
            self._set((reg + i) & 127, buf[i], now)
            i += 1

    def _set(self, reg, v, now):
        r = self.regs
        if reg == _PWR_MGMT_1:
            if v & 0x80:  # DEVICE_RESET
                self._reset(now)
                self._busy_until = now + _RESET_BUSY_US
                return
            r[reg] = v
            if v & 0x40:
                if self._asleep_since < 0:
                    self._asleep_since = now
            elif self._asleep_since >= 0:
                self.asleep_us += now - self._asleep_since
                self._asleep_since = -1
                self._next_us = now + self._period  # the sample clock starts again
        elif reg == _USER_CTRL:
            if v & 0x04 and not v & 0x40:  # FIFO_RESET acts only with FIFO_EN 0
                self._fhead = 0
                self._fcount = 0
            r[reg] = v & 0xF8  # the reset bits clear themselves
        elif reg in (_SMPLRT_DIV, _CONFIG):
            r[reg] = v
            self._retime(now)
        elif reg == _FIFO_EN:
            r[reg] = v
            self._set_layout(v)
        elif reg == _GYRO_CONFIG:
            r[reg] = v
            self._g_lsb = _GYRO_LSB[(v >> 3) & 3]
        elif reg == _ACCEL_CONFIG:
            r[reg] = v
            self._a_lsb = 16384 >> ((v >> 3) & 3)
        elif reg in (_SIGNAL_PATH_RESET, _FIFO_R_W):
            pass  # self-clearing; writing into the FIFO is not emulated
        elif reg in _READ_ONLY or _ACCEL_XOUT_H <= reg <= 0x60:
            pass  # read-only: data registers, status, count, WHO_AM_I
        else:
            r[reg] = v

    def stats(self):
        """Counters for the sim report and tests."""
        now = self.clock.now_us()
        self._advance(now)
        asleep = self._asleep_since >= 0
        t = self.asleep_us + (now - self._asleep_since if asleep else 0)
        return {
            "samples": self.samples,
            "fifo_overflows": self.fifo_overflows,
            "bytes_lost": self.bytes_lost,
            "fifo_bytes": self._fcount,
            "asleep": asleep,
            "asleep_s": t / 1000000,
            "transactions": self.transactions,
        }


class SimI2C:
    """machine.I2C's memory-access methods over simulated devices (addr -> device)."""

    def __init__(self, devices):
        self.devices = devices

    def _dev(self, addr):
        d = self.devices.get(addr)
        if d is None:
            raise OSError(_ENODEV)  # nothing answers (ESP32: ENODEV; others ETIMEDOUT/EIO)
        return d

    def readfrom_mem_into(self, addr, memaddr, buf, addrsize=8):
        self._dev(addr).read_into(memaddr, buf)

    def writeto_mem(self, addr, memaddr, buf, addrsize=8):
        self._dev(addr).write(memaddr, buf)

    def readfrom_mem(self, addr, memaddr, nbytes, addrsize=8):
        b = bytearray(nbytes)
        self._dev(addr).read_into(memaddr, b)
        return bytes(b)

    def writeto(self, addr, buf, stop=True):
        # first byte: register address, the rest: data (how register writes look on the bus)
        self._dev(addr).write(buf[0], memoryview(buf)[1:])
        return len(buf)

    def scan(self):
        return sorted(self.devices)
