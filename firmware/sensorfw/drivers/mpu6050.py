# InvenSense MPU-6050 6-axis IMU over I2C (register facts: MPU-6000/6050 Register
# Map and Descriptions, rev 4.2).
#
# One 14-byte burst read from ACCEL_XOUT_H (0x3B) returns accel X/Y/Z, temperature,
# gyro X/Y/Z as big-endian int16; the six motion values go to the ring, the
# temperature is skipped. I2C may not run in a hard interrupt: needs_soft = True
# makes the Sampler defer the read with micropython.schedule on hard-IRQ ports.

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


try:
    from sensorfw.drivers.mpu6050_fast import unpack_motion
except (ImportError, AttributeError, SyntaxError):  # no viper emitter on this runtime
    unpack_motion = None

ADDRESS = 0x68  # AD0 low; 0x69 with AD0 high
_SMPLRT_DIV = const(0x19)
_CONFIG = const(0x1A)
_GYRO_CONFIG = const(0x1B)
_ACCEL_CONFIG = const(0x1C)
_ACCEL_XOUT_H = const(0x3B)
_PWR_MGMT_1 = const(0x6B)
_WHO_AM_I = const(0x75)
WHO_AM_I_VALUE = 0x68

# full-scale range -> (FS_SEL bits, LSB per unit)
ACCEL_RANGES = {2: (0, 16384), 4: (1, 8192), 8: (2, 4096), 16: (3, 2048)}
GYRO_RANGES = {250: (0, 131.0), 500: (1, 65.5), 1000: (2, 32.8), 2000: (3, 16.4)}
NAMES = ("ax", "ay", "az", "gx", "gy", "gz")


class MPU6050Error(OSError):
    pass


class MPU6050:
    width = 6
    needs_soft = True

    def __init__(self, i2c, addr=ADDRESS, name="imu", accel_range_g=2, gyro_range_dps=250, dlpf=3, smplrt_div=0):  # noqa: PLR0917
        if accel_range_g not in ACCEL_RANGES:
            raise ValueError("accel_range_g must be one of 2, 4, 8, 16, got %r" % (accel_range_g,))
        if gyro_range_dps not in GYRO_RANGES:
            raise ValueError("gyro_range_dps must be one of 250, 500, 1000, 2000, got %r" % (gyro_range_dps,))
        if not (0 <= dlpf <= 6):
            raise ValueError("dlpf must be 0..6, got %r" % (dlpf,))
        self.i2c = i2c
        self.addr = addr
        self.name = name
        self.accel_range_g = accel_range_g
        self.gyro_range_dps = gyro_range_dps
        self.dlpf = dlpf
        self.smplrt_div = smplrt_div
        self.buf = bytearray(14)
        self._one = bytearray(1)
        self._read_into = i2c.readfrom_mem_into  # bound once
        self._fast = unpack_motion
        self.errors = 0

    def _write(self, reg, value):
        self._one[0] = value
        self.i2c.writeto_mem(self.addr, reg, self._one)

    def _read1(self, reg):
        self.i2c.readfrom_mem_into(self.addr, reg, self._one)
        return self._one[0]

    def init(self):
        """Check WHO_AM_I, wake the chip and set ranges and filter. Raises MPU6050Error."""
        try:
            who = self._read1(_WHO_AM_I)
        except OSError as e:
            raise MPU6050Error(
                "MPU-6050 not answering at I2C address 0x%02x (%s): check wiring and AD0" % (self.addr, e)
            )
        if who != WHO_AM_I_VALUE:
            raise MPU6050Error("WHO_AM_I at 0x%02x reads 0x%02x, expected 0x68: not an MPU-6050" % (self.addr, who))
        self._write(_PWR_MGMT_1, 0x01)  # wake (SLEEP=0), clock = PLL with X gyro reference
        self._write(_SMPLRT_DIV, self.smplrt_div)
        self._write(_CONFIG, self.dlpf)  # DLPF_CFG
        self._write(_GYRO_CONFIG, GYRO_RANGES[self.gyro_range_dps][0] << 3)
        self._write(_ACCEL_CONFIG, ACCEL_RANGES[self.accel_range_g][0] << 3)

    def read(self, vals, off):
        """Burst-read 14 bytes and store ax, ay, az, gx, gy, gz. Allocates nothing
        (an I2C error is counted and the previous row's values repeat)."""
        b = self.buf
        try:
            self._read_into(self.addr, _ACCEL_XOUT_H, b)
        except OSError:
            self.errors += 1
        if self._fast is not None:
            self._fast(b, vals, off)
            return off
        i = 0
        j = 0
        while i < 6:
            v = (b[j] << 8) | b[j + 1]
            if v > 32767:
                v -= 65536
            vals[off + i] = v
            i += 1
            j += 2
            if j == 6:
                j = 8  # skip TEMP_OUT_H/L
        return off

    def burst(self):
        """(read_into, addr, reg, buf, skip): the burst read as data, for the Sampler's
        viper handler to do itself: read_into(addr, reg, buf), then buf holds
        big-endian int16 words of which word `skip` (TEMP_OUT) is not a channel."""
        return (self._read_into, self.addr, _ACCEL_XOUT_H, self.buf, 3)

    def channels(self, rate_hz, sample_type):
        a = 1.0 / ACCEL_RANGES[self.accel_range_g][1]
        g = 1.0 / GYRO_RANGES[self.gyro_range_dps][1]
        out = []
        for i in range(6):
            out.append(
                (self.name + "_" + NAMES[i], "g" if i < 3 else "deg/s", a if i < 3 else g, 0.0, sample_type, rate_hz)
            )
        return out
