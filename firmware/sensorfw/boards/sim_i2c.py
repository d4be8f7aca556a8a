# Simulated I2C bus with an MPU-6050 answering on its registers (loaded on first use).

import struct
from array import array

import micropython


class SimMPU6050:
    """Register file of an MPU-6050 fed by sim_signals.Vibration or a replay file."""

    def __init__(self, addr, gen, replay=None):
        self.addr = addr
        self.gen = gen
        self.replay = replay
        self.regs = bytearray(128)
        mv = memoryview(self.regs)
        self.views = [mv[r:] for r in range(128)]  # register r onwards, for burst reads
        self.regs[0x75] = 0x68  # WHO_AM_I
        self.regs[0x6B] = 0x40  # PWR_MGMT_1: SLEEP after power-up
        self.tmp = array("h", [0] * 6)
        self.reads = 0

    def latch(self):
        r = self.regs
        if r[0x6B] & 0x40:
            return  # asleep: data registers hold their reset value
        afs = (r[0x1C] >> 3) & 3
        gfs = (r[0x1B] >> 3) & 3
        if self.replay is not None:
            self.replay.next_row(self.tmp)
        else:
            self.gen.fill_raw(self.tmp, 1, 16384 >> afs, (131, 65.5, 32.8, 16.4)[gfs])
        t = self.tmp
        j = 0x3B
        i = 0
        while i < 6:
            v = t[i] & 0xFFFF
            r[j] = v >> 8
            r[j + 1] = v & 0xFF
            j += 2
            if j == 0x41:
                r[0x41] = 0x0B  # TEMP_OUT ~ 25 C
                r[0x42] = 0x40
                j = 0x43
            i += 1


class SimI2C:
    def __init__(self, devices):
        self.devices = devices  # addr -> SimMPU6050
        self._fmts = {1: "1s", 14: "14s"}  # single register, MPU-6050 burst

    def _dev(self, addr):
        d = self.devices.get(addr)
        if d is None:
            raise OSError(19)  # ENODEV: nothing answers (real ports raise ETIMEDOUT/ENODEV)
        return d

    @micropython.native  # unix port only: the sim board stands in for C code
    def readfrom_mem_into(self, addr, reg, buf):
        # stands in for C code on a board: kept to one dict lookup and one C-level copy
        d = self.devices.get(addr)
        if d is None:
            raise OSError(19)  # ENODEV: nothing answers (real ports raise ETIMEDOUT/ENODEV)
        n = len(buf)
        if reg + n > 128:
            raise OSError(5)  # EIO: past the register file
        fmt = self._fmts.get(n)
        if fmt is None:
            fmt = "%ds" % n
            self._fmts[n] = fmt
        struct.pack_into(fmt, buf, 0, d.views[reg])  # allocation-free

    def writeto_mem(self, addr, reg, buf):
        d = self._dev(addr)
        i = 0
        while i < len(buf):
            d.regs[(reg + i) & 127] = buf[i]
            i += 1
