# The MPU-6050 FIFO path allocates nothing once running (micropython.heap_lock()), with
# the viper unpacker and with the bytecode fallback, through drains of every size and
# an overflow recovery; the simulated chip behind it allocates nothing either.
from array import array

import micropython
from sensorfw.boards.sim_i2c import SimI2C, SimMPU6050, vibration_for
from sensorfw.drivers import mpu6050
from sensorfw.drivers.mpu6050 import MPU6050
from test_mpu6050_fifo import Clock


def _drains(clock, imu, vals, log, counts):
    # a plain function: calling a closure over more than a few variables allocates
    stride = 8
    i = 0
    while i < 120:
        clock.t += 10000 * (1 + (i * 7) % 37)  # 10..370 ms: reads of 1..37 samples
        if i == 60:
            clock.t += 1000000  # overflow once
        n = imu.fifo_count()
        if n < 0:
            counts[1] += 1
        elif n > 0:
            assert imu.fifo_read(vals, 0, stride, n) == n
            j = 0
            while j < n:
                c = 0
                while c < 6:
                    log[counts[0] * 6 + c] = vals[j * stride + c]
                    c += 1
                counts[0] += 1
                j += 1
        i += 1


def _run(unpack):
    clock = Clock()
    dev = SimMPU6050(0x68, clock, 8)
    imu = MPU6050(SimI2C({0x68: dev}), sleep_ms=clock.sleep_ms)
    imu._unpack_fast = unpack
    imu.init(100)
    stride = 8
    vals = array("h", [0] * (100 * stride))
    log = array("h", [0] * (6 * 3000))  # every row read, for the check after the lock
    counts = array("i", [0, 0])  # rows logged, overflow results
    clock.t += 50000
    imu.fifo_count()  # warm up: the generator is made on the first sample
    imu.fifo_read(vals, 0, stride, 0)

    micropython.heap_lock()
    try:
        _drains(clock, imu, vals, log, counts)
    finally:
        micropython.heap_unlock()
    assert counts[1] == 1 and imu.overflows == 1 and imu.errors == 0, (counts[1], imu.overflows, imu.errors)
    assert counts[0] > 1000
    # the rows are the sim's sequence: those before the overflow from the start, those
    # after it from where the FIFO was reset
    ref = vibration_for(100.0, 8)
    row = array("h", [0] * 6)
    k = 0
    first_after = -1
    while k < counts[0]:
        ref.fill_raw(row, 1, 16384, 131)
        got = tuple(log[k * 6 : k * 6 + 6])
        if got != tuple(row) and first_after < 0:
            first_after = k  # rows lost in the overflow: resynchronise the reference
            skipped = 0
            while got != tuple(row) and skipped < 200:
                ref.fill_raw(row, 1, 16384, 131)
                skipped += 1
        assert got == tuple(row), k
        k += 1
    assert first_after > 0


def test_fifo_path_allocates_nothing_viper():
    assert mpu6050.unpack_fifo is not None  # the unix port has the viper emitter
    _run(mpu6050.unpack_fifo)


def test_fifo_path_allocates_nothing_bytecode():
    _run(None)
