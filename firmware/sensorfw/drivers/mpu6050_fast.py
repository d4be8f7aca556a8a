# Native-code (viper) unpacking of MPU-6050 reads: ~10x faster than the bytecode loops
# and allocation-free. Imported by mpu6050.py where the port has the viper emitter
# (MicroPython on ESP32, RP2040, unix); elsewhere (CircuitPython, CPython) the import
# fails and the plain loops are used. Four arguments at most: the limit of the viper
# emitter on some architectures.
import micropython


@micropython.viper
def unpack_fifo(src: ptr8, dst: ptr16, off: int, spec: int):  # noqa: F821 - viper pointer types
    # src: k FIFO samples of 12 bytes (ACCEL X,Y,Z, GYRO X,Y,Z, big-endian int16);
    # spec = stride << 6 | k (k <= 32). Sample i goes to dst[off + i*stride + 0..5].
    k = spec & 63
    stride = spec >> 6
    j = 0
    end = k * 12
    while j < end:
        c = 0
        while c < 6:
            dst[off + c] = (src[j] << 8) | src[j + 1]
            c += 1
            j += 2
        off += stride
