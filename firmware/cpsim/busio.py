# CircuitPython's `busio.I2C` over the simulated MPU-6050 (sensorfw/boards/sim_i2c.py):
# the transfers a driver must lock the bus for, with CircuitPython's argument names.
from _cpsim import CLOCK, I2C_FAIL, SEED


class I2C:
    def __init__(self, scl, sda, *, frequency=100000, timeout=255):
        from sensorfw.boards.sim_i2c import SimI2C, SimMPU6050, parse_fail_windows

        scl.claim(self)
        sda.claim(self)
        self._pins = (scl, sda)
        self.frequency = frequency
        self.imu = SimMPU6050(0x68, CLOCK, SEED, None, 0x68, parse_fail_windows(I2C_FAIL))
        self._bus = SimI2C({0x68: self.imu})
        self._locked = False
        self._reg = -1

    def try_lock(self):
        if self._locked:
            return False
        self._locked = True
        return True

    def unlock(self):
        self._locked = False

    def _check(self):
        if not self._locked:
            raise RuntimeError("Function requires lock")

    def scan(self):
        self._check()
        return [0x68]

    def writeto(self, address, buffer, *, start=0, end=None):
        self._check()
        self._bus.writeto(address, memoryview(buffer)[start:end])  # register, then data

    def readfrom_into(self, address, buffer, *, start=0, end=None):
        raise OSError(5)  # the MPU-6050 is read through a register address first

    def writeto_then_readfrom(
        self, address, out_buffer, in_buffer, *, out_start=0, out_end=None, in_start=0, in_end=None
    ):
        self._check()
        reg = memoryview(out_buffer)[out_start:out_end][0]
        self._bus.readfrom_mem_into(address, reg, memoryview(in_buffer)[in_start:in_end])

    def deinit(self):
        for p in self._pins:
            p.release()
