# Board profile: ESP32-S3-DevKitC-1 (N8R8) under CircuitPython (espressif port). Data only.
# Facts from the ESP32-S3 datasheet (GPIO and ADC tables) and the DevKitC-1 pinout.

NAME = "cp_esp32s3"
PORT = "circuitpython-espressif"
# GPIO 22-25 do not exist; 26-32 are the module's flash, 33-37 its octal PSRAM (N8R8);
# 19/20 are USB D-/D+ (CircuitPython's USB drive and REPL).
GPIO_PINS = tuple(range(0, 19)) + (21,) + tuple(range(38, 49))
RESERVED_PINS = tuple(range(19, 21)) + tuple(range(26, 38))
RESERVED_WHY = "USB (19, 20) or the module's flash and PSRAM (26-37)"
INPUT_ONLY_PINS = ()
ADC_PINS = tuple(range(1, 11))  # ADC1
ADC2_PINS = tuple(range(11, 21))  # ADC2: not usable while Wi-Fi is on
NAMED_PINS = ()
I2C_IDS = (0, 1)
I2C_SCL = None  # any output-capable GPIO (GPIO matrix)
I2C_SDA = None
I2C_DEFAULT = {"id": 0, "scl": 9, "sda": 8}
LED_PIN = 2
# wifi.radio.connect() blocks until joined or timed out: core/config.py keeps the join
# within the watchdog, and the default join short (a 5 s join still loses samples at 50 Hz:
# the MPU-6050's FIFO spans 1.7 s; docs/circuitpython.md)
WIFI_JOIN_BLOCKS = True
WIFI_CONNECT_TIMEOUT_MS = 5000
WDT_MAX_MS = 0  # no limit worth clamping to
TLS_HANDSHAKE_MS = 1500  # ECDHE-ECDSA P-256 arithmetic of a TLS handshake, upper estimate (docs/firmware.md "TLS")
# 8 MB of PSRAM hold CircuitPython's heap: the firmware's ~210 KB (docs/benchmarks.md,
# circuitpython) fit; the N8 module (no PSRAM, ~150 KB free: an estimate) is too small for
# it from .py sources. This bound on the preallocated buffers keeps configurations modest.
HEAP_BUDGET = 64 * 1024
