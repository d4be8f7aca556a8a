# InvenSense MPU-6050 6-axis IMU over I2C, read through its FIFO (register facts:
# MPU-6000/6050 Register Map and Descriptions rev 4.2, Product Specification rev 3.4).
#
# Why the FIFO: on ESP32 timer callbacks are soft (scheduled, dropped silently when the
# queue of 8 is full, serviced only every ~100 ms inside blocking socket calls), so a
# timer that reads one sample per tick loses and skews samples. Here the sensor's own
# sample clock (gyro MEMS oscillator via the PLL, CLKSEL=1) writes one 12-byte sample
# (ACCEL X,Y,Z then GYRO X,Y,Z, big-endian int16) into its 1024-byte FIFO at the rate
# SMPLRT_DIV sets, and the firmware drains it whenever it has time (a 10-20 Hz soft
# timer, the main loop). 1024 bytes hold 85 samples: 0.85 s at 100 Hz.
#
# A FIFO overflow overwrites the oldest *bytes*; 1024 is not a multiple of 12, so after
# an overflow the FIFO no longer starts on a sample boundary and the only safe move is
# a FIFO reset (a gap). A failed FIFO read may already have popped bytes: same thing.
# Every such event is reported to the caller (-1 / -2) and counted, never papered over.
#
# Import-light and allocation-free after init: runs on MicroPython boards, the unix
# port (against boards/sim_i2c.SimMPU6050) and imports under CPython. The rate rules
# are in mpu6050_rates.py (the config validator uses them too).

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


try:
    from sensorfw.drivers.mpu6050_fast import unpack_fifo
except (ImportError, AttributeError, SyntaxError, NameError):  # no viper here (CPython: stub decorators, no ptr8)
    unpack_fifo = None

ADDRESS = 0x68  # AD0 low; 0x69 with AD0 high
_SMPLRT_DIV = const(0x19)
_CONFIG = const(0x1A)
_GYRO_CONFIG = const(0x1B)
_ACCEL_CONFIG = const(0x1C)
_FIFO_EN = const(0x23)
_INT_ENABLE = const(0x38)
_INT_STATUS = const(0x3A)
_ACCEL_XOUT_H = const(0x3B)
_SIGNAL_PATH_RESET = const(0x68)
_USER_CTRL = const(0x6A)
_PWR_MGMT_1 = const(0x6B)
_FIFO_COUNT_H = const(0x72)
_FIFO_R_W = const(0x74)
_WHO_AM_I = const(0x75)

_DEVICE_RESET = const(0x80)  # PWR_MGMT_1 bit 7, clears itself
_SLEEP = const(0x40)  # PWR_MGMT_1 bit 6
_CLK_PLL_XGYRO = const(0x01)  # CLKSEL = 1: more stable than the internal 8 MHz oscillator
_PATHS_RESET = const(0x07)  # GYRO_RESET | ACCEL_RESET | TEMP_RESET
_FIFO_ACCEL_GYRO = const(0x78)  # XG | YG | ZG | ACCEL (TEMP 0x80 left out)
_UC_FIFO_EN = const(0x40)
_UC_FIFO_RESET = const(0x04)  # acts only while FIFO_EN is 0 (register map 4.29)
_FIFO_OFLOW = const(0x10)  # INT_STATUS / INT_ENABLE bit 4
_RESET_SETTLE_MS = const(100)

FIFO_BYTES = 1024
SAMPLE_BYTES = 12
_FIFO_MAX_OK = const(1020)  # 85 whole samples; 1021..1024 only after an overflow
_CHUNK = const(32)  # samples per FIFO burst read at most (384-byte buffer)

# WHO_AM_I values accepted: MPU-6050/6000, and compatible parts / clones that keep this
# register map for what the driver uses (0x70 MPU-6500; 0x72 and 0x98 seen on clones).
WHO_AM_I_VALUES = (0x68, 0x70, 0x72, 0x98)

# full-scale range -> (FS_SEL bits, LSB per unit)
ACCEL_RANGES = {2: (0, 16384), 4: (1, 8192), 8: (2, 4096), 16: (3, 2048)}
GYRO_RANGES = {250: (0, 131.0), 500: (1, 65.5), 1000: (2, 32.8), 2000: (3, 16.4)}
NAMES = ("ax", "ay", "az", "gx", "gy", "gz")


class MPU6050Error(OSError):
    pass


def _rates():
    # the rate rules live in a module of their own, loaded when a rate is set and then
    # dropped: the config validator uses them at boot without loading this driver
    from sensorfw import unload
    from sensorfw.drivers import mpu6050_rates

    unload("sensorfw.drivers.mpu6050_rates")
    return mpu6050_rates


def _default_sleep_ms():
    import time

    f = getattr(time, "sleep_ms", None)
    if f is not None:
        return f
    return lambda ms: time.sleep(ms / 1000)  # CPython


class MPU6050:
    width = 6
    needs_soft = True

    def __init__(  # noqa: PLR0917
        self, i2c, addr=ADDRESS, name="imu", accel_range_g=2, gyro_range_dps=250, dlpf=None, sleep_ms=None
    ):
        if accel_range_g not in ACCEL_RANGES:
            raise ValueError("accel_range_g must be one of 2, 4, 8, 16, got %r" % (accel_range_g,))
        if gyro_range_dps not in GYRO_RANGES:
            raise ValueError("gyro_range_dps must be one of 250, 500, 1000, 2000, got %r" % (gyro_range_dps,))
        if dlpf is not None and not (isinstance(dlpf, int) and 0 <= dlpf <= 6):
            raise ValueError("dlpf must be None (automatic from the rate) or 0..6, got %r" % (dlpf,))
        self.i2c = i2c
        self.addr = addr
        self.name = name
        self.accel_range_g = accel_range_g
        self.gyro_range_dps = gyro_range_dps
        self.dlpf = dlpf  # None: chosen from the rate by set_rate
        self._sleep_ms = sleep_ms if sleep_ms is not None else _default_sleep_ms()
        self.who_am_i = None
        self.rate_hz = None  # exact sensor rate once set_rate has run
        self.smplrt_div = None
        self.dlpf_cfg = None
        self.errors = 0  # I2C failures (each one a gap for the caller)
        self.overflows = 0  # FIFO overflows detected (each one a FIFO reset, a gap)
        self._resync = False  # a failed FIFO read may have popped part of a sample
        self._read_into = i2c.readfrom_mem_into  # bound once: calls allocate nothing
        self._one = bytearray(1)
        self._two = bytearray(2)
        # FIFO burst buffer and its views for 1, 2, 4 .. 32 samples: slicing a
        # memoryview allocates, so every read size is a view made here.
        self._fbuf = bytearray(SAMPLE_BYTES * _CHUNK)
        mv = memoryview(self._fbuf)
        views = []
        k = 1
        while k <= _CHUNK:
            views.append(mv[: SAMPLE_BYTES * k])
            k <<= 1
        self._views = tuple(views)
        self._unpack_fast = unpack_fifo

    # --- registers -------------------------------------------------------------------
    def _write(self, reg, value):
        self._one[0] = value
        self.i2c.writeto_mem(self.addr, reg, self._one)

    def _read1(self, reg):
        self._read_into(self.addr, reg, self._one)
        return self._one[0]

    def _fifo_reset(self):
        # FIFO_RESET acts only while FIFO_EN is 0: one write with FIFO_EN=0 and
        # FIFO_RESET=1, then re-enable.
        self._write(_USER_CTRL, _UC_FIFO_RESET)
        self._write(_USER_CTRL, _UC_FIFO_EN)

    # --- set-up ----------------------------------------------------------------------
    def init(self, rate_hz):
        """Identify, reset and configure the chip; sampling into the FIFO starts at rate_hz.

        Raises ValueError for a rate the chip cannot make, MPU6050Error (an OSError)
        when nothing answers, the WHO_AM_I is unknown or the bus fails during set-up."""
        r = _rates()
        if r.plan(rate_hz, self.dlpf) is None:
            raise ValueError(r.rate_error(rate_hz, self.dlpf))
        try:
            who = self._read1(_WHO_AM_I)
        except OSError as e:
            raise MPU6050Error(
                "MPU-6050 not answering at I2C address 0x%02x (%s): check wiring, pull-ups and AD0" % (self.addr, e)
            )
        if who not in WHO_AM_I_VALUES:
            raise MPU6050Error(
                "WHO_AM_I at I2C address 0x%02x reads 0x%02x: not an MPU-6050 or a known compatible part"
                " (0x68, 0x70, 0x72, 0x98)" % (self.addr, who)
            )
        self.who_am_i = who
        try:
            self._write(_PWR_MGMT_1, _DEVICE_RESET)  # all registers to reset values, asleep
            self._sleep_ms(_RESET_SETTLE_MS)  # the chip takes no access for 100 ms
            self._write(_SIGNAL_PATH_RESET, _PATHS_RESET)  # analog and digital paths too
            self._write(_PWR_MGMT_1, _CLK_PLL_XGYRO)  # wake (SLEEP=0), PLL on the X gyro
            self.set_rate(rate_hz)
            self._write(_GYRO_CONFIG, GYRO_RANGES[self.gyro_range_dps][0] << 3)
            self._write(_ACCEL_CONFIG, ACCEL_RANGES[self.accel_range_g][0] << 3)
            # The register map does not say whether FIFO_OFLOW_INT is set with its
            # interrupt disabled: enable it (the INT pin pulses on overflow, harmless).
            self._write(_INT_ENABLE, _FIFO_OFLOW)
            self._write(_FIFO_EN, _FIFO_ACCEL_GYRO)
            self._fifo_reset()
            self._read1(_INT_STATUS)  # clears a stale overflow flag
        except OSError as e:
            raise MPU6050Error("MPU-6050 at I2C address 0x%02x failed during set-up (%s)" % (self.addr, e))
        self._resync = False

    def rate_ok(self, rate_hz):
        """True if the chip can sample at rate_hz with this driver's dlpf setting."""
        return _rates().plan(rate_hz, self.dlpf) is not None

    def set_rate(self, rate_hz):
        """Program SMPLRT_DIV and the DLPF for rate_hz and empty the FIFO (a gap for the
        caller). ValueError for an unachievable rate; OSError from the bus propagates."""
        r = _rates()
        p = r.plan(rate_hz, self.dlpf)
        if p is None:
            raise ValueError(r.rate_error(rate_hz, self.dlpf))
        div, cfg, exact = p
        self._write(_CONFIG, cfg)
        self._write(_SMPLRT_DIV, div)
        self._fifo_reset()
        self.smplrt_div = div
        self.dlpf_cfg = cfg
        self.rate_hz = exact

    def sleep(self):
        """SLEEP bit (about 5 uA instead of 3.9 mA) before the board's deep sleep; init()
        wakes the chip. Returns False (counted in errors) if the bus failed."""
        try:
            self._write(_PWR_MGMT_1, _SLEEP | _CLK_PLL_XGYRO)
        except OSError:
            self.errors += 1
            return False
        return True

    # --- FIFO: allocation-free -------------------------------------------------------
    def fifo_count(self):
        """Whole samples waiting in the FIFO, or
        -1: the FIFO overflowed (or a failed read left it misaligned); it has been
            reset, samples are lost: the caller marks a gap. Overflows are counted.
        -2: I2C error (counted in errors): nothing known, the caller marks a gap."""
        try:
            if self._resync:
                self._fifo_reset()
                self._resync = False
                return -1
            self._read_into(self.addr, _INT_STATUS, self._one)  # reading clears the flags
            if not self._one[0] & _FIFO_OFLOW:
                b = self._two
                self._read_into(self.addr, _FIFO_COUNT_H, b)  # H first: latches H and L
                n = (b[0] << 8) | b[1]
                if n <= _FIFO_MAX_OK:
                    return n // SAMPLE_BYTES  # a sample being written stays for next time
                # 1021..1024: overflowed after the status read; > 1024: a corrupt read
            self._fifo_reset()
        except OSError:
            self.errors += 1
            return -2
        self.overflows += 1
        return -1

    def fifo_read(self, vals, off, stride, n):
        """Pop n samples (n <= the last fifo_count()) into array('h') vals: sample i's
        ax, ay, az, gx, gy, gz at vals[off + i*stride + 0..5]. Returns n, or
        -1: the FIFO overflowed before or during the read: the values written are not
            aligned samples and must be dropped; FIFO reset, overflow counted;
        -2: I2C error (counted); the values written must be dropped and the next
            fifo_count() resets the FIFO (-1) because bytes may have been popped."""
        if n <= 0:
            return 0
        if off < 0 or off + (n - 1) * stride + 6 > len(vals):
            raise ValueError("fifo_read: %d samples at offset %d, stride %d do not fit" % (n, off, stride))
        read_into = self._read_into
        addr = self.addr
        views = self._views
        buf = self._fbuf
        fast = self._unpack_fast
        left = n
        try:
            while left > 0:
                # the largest power-of-two chunk <= left: one preallocated view each
                k = _CHUNK
                i = 5
                while k > left:
                    k >>= 1
                    i -= 1
                read_into(addr, _FIFO_R_W, views[i])  # a burst keeps popping the FIFO
                if fast is not None:
                    fast(buf, vals, off, (stride << 6) | k)
                else:
                    _unpack(buf, vals, off, stride, k)
                off += k * stride
                left -= k
            # An overflow between fifo_count() and here shifted the FIFO by a few bytes:
            # what was read is misaligned. INT_STATUS tells.
            read_into(addr, _INT_STATUS, self._one)
            if not self._one[0] & _FIFO_OFLOW:
                return n
            self._fifo_reset()
        except OSError:
            self.errors += 1
            self._resync = True
            return -2
        self.overflows += 1
        return -1

    def channels(self, rate_hz, sample_type):
        a = 1.0 / ACCEL_RANGES[self.accel_range_g][1]
        g = 1.0 / GYRO_RANGES[self.gyro_range_dps][1]
        out = []
        for i in range(6):
            out.append(
                (self.name + "_" + NAMES[i], "g" if i < 3 else "deg/s", a if i < 3 else g, 0.0, sample_type, rate_hz)
            )
        return out


def _unpack(b, vals, off, stride, k):
    # k FIFO samples (6 big-endian int16 each) from b into vals; where viper is missing.
    j = 0
    end = k * SAMPLE_BYTES
    while j < end:
        c = 0
        while c < 6:
            v = (b[j] << 8) | b[j + 1]
            if v > 32767:
                v -= 65536
            vals[off + c] = v
            c += 1
            j += 2
        off += stride
