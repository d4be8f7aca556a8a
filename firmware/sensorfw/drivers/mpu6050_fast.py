# Native-code (viper) unpacking of the MPU-6050 burst read: ~10x faster than the
# bytecode loop and allocation-free. Imported by mpu6050.py where the port has the
# viper emitter (MicroPython on ESP32, RP2040, unix); elsewhere (CircuitPython,
# CPython) the import fails and the plain loop is used.
import micropython


@micropython.viper
def unpack_motion(src: ptr8, dst: ptr16, off: int):  # noqa: F821 - viper pointer types
    # src: ACCEL_X..GYRO_Z registers, big-endian int16 pairs; bytes 6-7 (TEMP) skipped.
    # Storing into ptr16 keeps the low 16 bits: array('h') reads them back signed.
    i = 0
    j = 0
    while i < 6:
        dst[off + i] = (src[j] << 8) | src[j + 1]
        i += 1
        j += 2
        if j == 6:
            j = 8
