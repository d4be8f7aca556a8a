# CircuitPython's `board` for the simulated boards: board_id and the silkscreen names
# (Pico W: GP0..GP28, LED; ESP32-S3-DevKitC-1: IO0..IO48), as microcontroller pins.
import microcontroller
from _cpsim import BOARD

_P = microcontroller.pin
if BOARD == "cp_pico_w":
    board_id = "raspberry_pi_pico_w"
    for _n in list(range(23)) + [26, 27, 28]:
        globals()["GP%d" % _n] = getattr(_P, "GPIO%d" % _n)
    LED = microcontroller.Pin(64)  # on the CYW43439, not a GPIO of the RP2040
    SCL = GP5  # noqa: F821 - set above
    SDA = GP4  # noqa: F821
else:
    board_id = "espressif_esp32s3_devkitc_1_n8r8"
    for _n in list(range(22)) + list(range(26, 49)):
        globals()["IO%d" % _n] = getattr(_P, "GPIO%d" % _n)
    SCL = IO9  # noqa: F821
    SDA = IO8  # noqa: F821
