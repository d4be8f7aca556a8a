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
# wifi.radio.connect() blocks until joined or timed out: core/config.py keeps the join
# within the watchdog, and the default join short (a 5 s join still loses samples at 50 Hz:
# the MPU-6050's FIFO spans 1.7 s; docs/circuitpython.md)
WIFI_JOIN_BLOCKS = True
WIFI_CONNECT_TIMEOUT_MS = 5000
WDT_MAX_MS = 8388
TLS_HANDSHAKE_MS = 3000  # ECDHE-ECDSA P-256 arithmetic on a Cortex-M0+ without crypto hardware, upper estimate (docs/firmware.md "TLS")
# mbedTLS allocates on the CircuitPython heap on the raspberrypi port (m_tracked_calloc,
# lib/mbedtls_config): at each connect the record buffers (16384 in, 4096 out, + overhead, as
# on MicroPython: boards/pico_w.py) and the parsed key and certificates (~2 KB), which
# CircuitPython parses again at every connect; kept free for it from start-up
TLS_HEAP_RESERVE = 16717 + 4429 + 1024 + 2048
# Heap: CircuitPython keeps more RAM for itself than MicroPython (of the ~190 KB MicroPython
# leaves with Wi-Fi up, count on ~120 KB: an estimate, not measured on a board) and compiles
# every .py on the board. The bench (docs/benchmarks.md, circuitpython) puts the firmware
# with MiniMQTT at ~210 KB on a 32-bit board from .py sources, ~143 KB with the libraries as
# .mpy: over that. Until the firmware ships as CircuitPython .mpy, run a Pico W on
# MicroPython, or CircuitPython on an ESP32-S3 with PSRAM. The budget below is for the
# preallocated buffers alone (core/config.py buffer_bytes).
HEAP_BUDGET = 32 * 1024
