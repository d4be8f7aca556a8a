# MPU-6050 FIFO driver against the simulated chip (boards/sim_i2c.SimMPU6050), on the
# MicroPython unix port and under CPython. Virtual time only: a hand-advanced clock, no
# sleeps; every check is on state (registers, counters, rows), not on timing.
from array import array

from sensorfw.boards.sim_i2c import SimI2C, SimMPU6050, parse_fail_windows, parse_who_am_i, vibration_for
from sensorfw.drivers.mpu6050 import MPU6050, MPU6050Error
from sensorfw.drivers.mpu6050_rates import achievable_rate, auto_dlpf, rate_error

RUNTIMES = ("micropython", "cpython")


class Clock:
    def __init__(self):
        self.t = 0

    def now_us(self):
        return self.t

    def sleep_ms(self, ms):
        self.t += ms * 1000

    def advance_ms(self, ms):
        self.t += ms * 1000


def rig(rate=100, seed=3, who=0x68, fail=(), **kw):
    clock = Clock()
    dev = SimMPU6050(0x68, clock, seed, None, who, fail)
    imu = MPU6050(SimI2C({0x68: dev}), sleep_ms=clock.sleep_ms, **kw)
    if rate:
        imu.init(rate)
    return clock, dev, imu


class Ref:
    """The sim's sample sequence, rebuilt independently of the FIFO."""

    def __init__(self, rate, seed, a_lsb=16384, g_lsb=131):
        self.gen = vibration_for(rate, seed)
        self.a = a_lsb
        self.g = g_lsb
        self.row = array("h", [0] * 6)
        self.n = 0

    def next(self):
        self.gen.fill_raw(self.row, 1, self.a, self.g)
        self.n += 1
        return tuple(self.row)

    def skip(self, k):
        while k > 0:
            self.next()
            k -= 1


def rows(vals, off, stride, n):
    return [tuple(vals[off + i * stride + c] for c in range(6)) for i in range(n)]


def drain(imu, stride=6):
    n = imu.fifo_count()
    assert n >= 0, n
    vals = array("h", [0] * (max(n, 1) * stride))
    got = imu.fifo_read(vals, 0, stride, n)
    assert got == n, (got, n)
    return rows(vals, 0, stride, n)


class Lcg:
    def __init__(self, seed):
        self.s = seed

    def below(self, n):
        self.s = (self.s * 1103515245 + 12345) & 0x7FFFFFFF
        return (self.s >> 8) % n


# --- rates ------------------------------------------------------------------------------


def test_rate_sets_divider_and_filter():
    for rate, div, cfg in ((50, 19, 4), (100, 9, 3), (1000, 0, 1), (200, 4, 2), (10, 99, 6), (500, 1, 1)):
        _clock, dev, imu = rig(rate)
        assert dev.regs[0x19] == div, (rate, dev.regs[0x19])
        assert dev.regs[0x1A] & 7 == cfg, (rate, dev.regs[0x1A])
        assert (imu.smplrt_div, imu.dlpf_cfg) == (div, cfg)
        assert abs(imu.rate_hz - rate) < 1e-6
    # anti-aliasing: the widest filter at or below Nyquist (at 50 Hz, 21 Hz not 44 Hz)
    assert auto_dlpf(50) == 4
    assert auto_dlpf(41.6667) == 5  # 1000/24 Hz: 21 Hz would be above 20.8 Hz
    # explicit dlpf=0: gyro at 8 kHz, so 100 Hz is divider 79; the sim agrees on the rate
    clock, dev, imu = rig(100, dlpf=0)
    assert (dev.regs[0x19], dev.regs[0x1A] & 7) == (79, 0)
    clock.advance_ms(500)
    assert imu.fifo_count() == 50


def test_rate_errors_name_nearest_rates():
    assert rate_error(100) is None
    assert rate_error(333.3) is None  # rounded 1000/3
    assert abs(achievable_rate(333.3) - 1000 / 3) < 1e-3
    assert achievable_rate(60) is None
    msg = rate_error(60)
    assert "58.8235 Hz" in msg and "62.5 Hz" in msg, msg
    assert "1000 Hz" in rate_error(2000)
    assert "3.90625 Hz" in rate_error(1)
    assert "> 0" in rate_error(0)
    assert "> 0" in rate_error("fast")
    _clock, dev, imu = rig(0)
    assert imu.rate_ok(250) and not imu.rate_ok(300)
    before = dev.transactions
    try:
        imu.init(300)
    except ValueError as e:
        assert "250 Hz" in str(e) and "333.333 Hz" in str(e), str(e)
    else:
        raise AssertionError("init(300) accepted")
    assert dev.transactions == before  # rejected before touching the chip
    try:
        MPU6050(SimI2C({}), dlpf=7)
    except ValueError:
        pass
    else:
        raise AssertionError("dlpf=7 accepted")


# --- set-up -----------------------------------------------------------------------------


class Recorder:
    def __init__(self, i2c, clock):
        self.i2c = i2c
        self.clock = clock
        self.log = []

    def readfrom_mem_into(self, addr, reg, buf):
        self.log.append(("r", reg, len(buf), self.clock.now_us()))
        self.i2c.readfrom_mem_into(addr, reg, buf)

    def writeto_mem(self, addr, reg, buf):
        self.log.append(("w", reg, buf[0], self.clock.now_us()))
        self.i2c.writeto_mem(addr, reg, buf)


def test_reset_sequence_order():
    clock = Clock()
    dev = SimMPU6050(0x68, clock, 1)
    rec = Recorder(SimI2C({0x68: dev}), clock)
    imu = MPU6050(rec, sleep_ms=clock.sleep_ms)
    imu.init(100)
    log = rec.log
    assert log[0][:2] == ("r", 0x75), log[0]  # WHO_AM_I before anything is written
    writes = [(e[1], e[2], e[3]) for e in log if e[0] == "w"]
    assert writes[0][:2] == (0x6B, 0x80), writes  # DEVICE_RESET first
    assert writes[1][:2] == (0x68, 0x07), writes  # then the signal paths
    assert writes[1][2] - writes[0][2] >= 100000  # after 100 ms
    assert writes[2][:2] == (0x6B, 0x01), writes  # wake on the X-gyro PLL
    regs = [(w[0], w[1]) for w in writes]
    i_en = regs.index((0x23, 0x78))
    assert regs[i_en + 1 :] == [(0x6A, 0x04), (0x6A, 0x40)], regs  # FIFO reset (FIFO_EN 0), then on
    assert regs.index((0x19, 9)) < i_en and regs.index((0x1A, 3)) < i_en
    # the chip ends configured: awake, FIFO on, accel+gyro in it, empty
    assert dev.regs[0x6B] == 0x01 and dev.regs[0x6A] == 0x40 and dev.regs[0x23] == 0x78
    assert imu.fifo_count() == 0
    # and the sim really enforces the wait: a driver that does not sleep fails
    clock2 = Clock()
    dev2 = SimMPU6050(0x68, clock2, 1)
    hasty = MPU6050(SimI2C({0x68: dev2}), sleep_ms=lambda ms: None)
    try:
        hasty.init(100)
    except MPU6050Error as e:
        assert "set-up" in str(e), str(e)
    else:
        raise AssertionError("the sim accepted an access during reset")


def test_who_am_i_accept_and_reject():
    for who in (0x68, 0x70, 0x72, 0x98):
        _clock, _dev, imu = rig(100, who=who)
        assert imu.who_am_i == who
    try:
        rig(100, who=0x71)
    except MPU6050Error as e:
        assert "0x71" in str(e), str(e)
    else:
        raise AssertionError("WHO_AM_I 0x71 accepted")
    imu = MPU6050(SimI2C({}), addr=0x69, sleep_ms=lambda ms: None)
    try:
        imu.init(100)
    except OSError as e:  # MPU6050Error is an OSError
        assert isinstance(e, MPU6050Error)
        assert "not answering" in str(e) and "0x69" in str(e), str(e)
    else:
        raise AssertionError("init succeeded with nothing on the bus")
    assert parse_who_am_i("0x70") == 0x70 and parse_who_am_i("") == 0x68 and parse_who_am_i(None) == 0x68
    assert parse_fail_windows("1-2.5,10-11") == [(1.0, 2.5), (10.0, 11.0)] and parse_fail_windows("") == []


# --- FIFO -------------------------------------------------------------------------------


def test_fifo_rows_are_the_sequence_without_loss_or_repeat():
    for rate, seed, stride in ((100, 7, 8), (50, 11, 6)):
        clock, dev, imu = rig(rate, seed, accel_range_g=4, gyro_range_dps=500)
        ref = Ref(rate, seed, 8192, 65.5)
        rnd = Lcg(seed)
        vals = array("h", [0] * (90 * stride))
        period_ms = 1000 // rate
        total = 0
        pending = 0
        k = 0
        while k < 200:
            # random waits, short enough that the FIFO never holds more than 85 samples
            clock.advance_ms(1 + rnd.below(max(1, (84 - pending) * period_ms)))
            n = imu.fifo_count()
            assert n >= 0, n
            take = n if rnd.below(3) else rnd.below(n + 1)  # sometimes leave some behind
            for i in range(len(vals)):
                vals[i] = 0x5A5A
            assert imu.fifo_read(vals, stride - 6 if stride > 6 else 0, stride, take) == take
            for row in rows(vals, stride - 6 if stride > 6 else 0, stride, take):
                assert row == ref.next(), (rate, total)
                total += 1
            pending = n - take
            if stride > 6:  # the columns before each sample are not touched
                for i in range(take):
                    assert vals[i * stride] == 0x5A5A
            k += 1
        left = dev.stats()["fifo_bytes"]
        assert left % 12 == 0
        assert total + left // 12 == dev.samples  # every sample made is read or still waiting
        assert imu.errors == 0 and imu.overflows == 0
        assert dev.stats()["fifo_overflows"] == 0


def test_overflow_detected_counted_and_reset():
    clock, dev, imu = rig(100, 5)
    ref = Ref(100, 5)
    clock.advance_ms(1000)  # 100 samples into 85 places
    assert imu.fifo_count() == -1
    assert imu.overflows == 1
    st = dev.stats()
    assert st["fifo_overflows"] > 0 and st["bytes_lost"] > 0
    assert st["fifo_bytes"] == 0  # the driver reset the FIFO
    assert imu.fifo_count() == 0
    ref.skip(dev.samples)  # what comes next is aligned and in sequence again
    clock.advance_ms(100)
    got = drain(imu)
    assert len(got) == 10
    assert got == [ref.next() for _ in range(10)]

    # an overflow between fifo_count() and fifo_read(): the read is not trusted
    clock.advance_ms(500)
    n = imu.fifo_count()
    assert n == 50
    clock.advance_ms(500)
    vals = array("h", [0] * (6 * n))
    assert imu.fifo_read(vals, 0, 6, n) == -1
    assert imu.overflows == 2
    ref.skip(dev.samples - ref.n)
    clock.advance_ms(200)
    assert drain(imu) == [ref.next() for _ in range(20)]

    # without the status flag (interrupt not enabled) the byte count still tells
    dev.regs[0x38] = 0
    clock.advance_ms(1000)
    assert dev.regs[0x3A] & 0x10 == 0
    assert imu.fifo_count() == -1
    assert imu.overflows == 3
    assert imu.errors == 0


class PopThenFail:
    """A bus whose FIFO burst pops some bytes and then fails (an error mid-transfer):
    the FIFO is left misaligned."""

    def __init__(self, i2c):
        self.i2c = i2c
        self.fail_fifo = False

    def readfrom_mem_into(self, addr, reg, buf):
        if reg == 0x74 and self.fail_fifo:
            self.fail_fifo = False
            self.i2c.readfrom_mem_into(addr, reg, bytearray(len(buf) - 5))
            raise OSError(116)
        self.i2c.readfrom_mem_into(addr, reg, buf)

    def writeto_mem(self, addr, reg, buf):
        self.i2c.writeto_mem(addr, reg, buf)


def test_i2c_failure_is_a_counted_gap_not_stale_data():
    clock, dev, imu = rig(100, 9, fail=[(1.0, 1.5)])
    ref = Ref(100, 9)
    clock.t = 900000
    assert drain(imu) == [ref.next() for _ in range(80)]
    clock.t = 990000
    n = imu.fifo_count()
    assert n == 9
    clock.t = 1010000  # inside the window
    vals = array("h", [0x1111] * (6 * n))
    assert imu.fifo_read(vals, 0, 6, n) == -2
    assert imu.errors == 1
    assert imu.fifo_count() == -2
    assert imu.errors == 2
    assert not imu.sleep()
    assert imu.errors == 3
    clock.t = 1600000  # after the window: the FIFO is reset once (a gap), then in sequence
    assert imu.fifo_count() == -1
    assert imu.overflows == 0  # not an overflow
    ref.skip(dev.samples - ref.n)
    clock.advance_ms(300)
    assert drain(imu) == [ref.next() for _ in range(30)]

    # a failed burst that popped bytes: the next count resets instead of reading skewed rows
    clock = Clock()
    dev = SimMPU6050(0x68, clock, 4)
    bus = PopThenFail(SimI2C({0x68: dev}))
    imu = MPU6050(bus, sleep_ms=clock.sleep_ms)
    imu.init(100)
    ref = Ref(100, 4)
    clock.advance_ms(200)
    n = imu.fifo_count()
    bus.fail_fifo = True
    vals = array("h", [0] * (6 * n))
    assert imu.fifo_read(vals, 0, 6, 7) == -2  # 43 bytes popped, then the error
    assert dev.stats()["fifo_bytes"] % 12 != 0  # really misaligned
    assert imu.fifo_count() == -1
    ref.skip(dev.samples)
    clock.advance_ms(100)
    assert drain(imu) == [ref.next() for _ in range(10)]


def test_sleep_stops_sampling_and_init_wakes():
    clock, dev, imu = rig(100, 2)
    clock.advance_ms(200)
    assert len(drain(imu)) == 20
    assert imu.sleep()
    made = dev.samples
    st = dev.stats()
    assert st["asleep"]
    clock.advance_ms(5000)
    assert imu.fifo_count() == 0
    assert dev.samples == made
    st = dev.stats()
    assert st["asleep"] and 5.09 < st["asleep_s"] < 5.11, st  # + the 0.1 s reset at init
    imu.init(100)
    assert not dev.stats()["asleep"]
    clock.advance_ms(300)
    assert imu.fifo_count() == 30


def test_set_rate_empties_fifo_and_changes_rate():
    clock, dev, imu = rig(100, 6)
    clock.advance_ms(300)
    assert imu.fifo_count() == 30
    imu.set_rate(50)
    assert imu.fifo_count() == 0
    assert (dev.regs[0x19], dev.regs[0x1A] & 7) == (19, 4)
    clock.advance_ms(1000)
    ref = Ref(50, 6)  # the sim made a new generator at the new rate
    assert drain(imu) == [ref.next() for _ in range(50)]
    try:
        imu.set_rate(60)
    except ValueError as e:
        assert "62.5 Hz" in str(e)
    else:
        raise AssertionError("set_rate(60) accepted")
