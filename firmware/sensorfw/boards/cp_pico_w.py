# Board profile: Raspberry Pi Pico W under CircuitPython (raspberrypi port). Data only.
# The pins are the chip's: the same facts as under MicroPython (boards/pico_w.py).

from sensorfw.boards.pico_w import (  # noqa: F401 - the profile's data
    ADC_PINS,
    GPIO_PINS,
    I2C_DEFAULT,
    I2C_IDS,
    I2C_SCL,
    I2C_SDA,
    INPUT_ONLY_PINS,
    NAMED_PINS,
    RESERVED_PINS,
    RESERVED_WHY,
)

NAME = "cp_pico_w"
PORT = "circuitpython-raspberrypi"
ADC2_PINS = ()
LED_PIN = "LED"  # board.LED: the CYW43439's LED
# microcontroller.watchdog: the RP2040 counter's limit (CircuitPython refuses more)
WDT_MAX_MS = 8388
# Heap: CircuitPython keeps more for itself than MicroPython, and code.py's modules are
# compiled from source on the board (MicroPython's .mpy files do not load): of the
# ~190 KB MicroPython leaves with Wi-Fi up, count on ~120 KB. The firmware and MiniMQTT
# take ~70 KB at the boot peak on a 32-bit board (docs/benchmarks.md, CircuitPython), and
# 25 % headroom stays free for gc and sockets: 32 KB for the preallocated buffers.
HEAP_BUDGET = 32 * 1024
