# Board profile: Raspberry Pi Pico W (RP2040 + CYW43439), MicroPython rp2 port. Data only.

NAME = "pico_w"
PORT = "rp2"  # MicroPython port (docs/firmware.md, "Port facts")
HARD_TIMER_IRQ = False  # soft: always before 1.26, the default from 1.26 (machine_timer.c)
HARD_PIN_IRQ = True  # rp2 Pin.irq accepts hard=True (machine_pin.c)
TIMER_ID = -1  # virtual timer
DEEPSLEEP_IS_LIGHTSLEEP = True  # machine.deepsleep = lightsleep + reboot (ports/rp2/modmachine.c)
HAS_RTC_MEMORY = False  # no retained RAM across deep sleep: boot state goes to flash
ADC_ATTEN_11DB = False
ADC_PINS = (26, 27, 28)
I2C_DEFAULT = {"id": 0, "scl": 5, "sda": 4}
LED_PIN = "LED"
WDT_MAX_MS = 8388  # RP2040 watchdog counter limit: core/config.py refuses longer timeouts
TLS_HANDSHAKE_MS = 3000  # ECDHE-ECDSA P-256 arithmetic on a Cortex-M0+ without crypto hardware, upper estimate (docs/firmware.md "TLS")
# mbedTLS takes a TLS session's record buffers from the MicroPython heap on rp2 (tracked
# allocations, extmod/mbedtls/mbedtls_config_common.h): 16384 + 333 in, 4096 + 333 out,
# kept free for it from start-up (port/mqtt.py); + 1 KB for the TLS socket object and the
# allocations' headers, which may land in the same run
TLS_HEAP_RESERVE = 16717 + 4429 + 1024

# Pins (checked by core/config.py + core/pins.py; sources there). GP23, GP24, GP25 and
# GP29 belong to the CYW43439 Wi-Fi chip (GP29 also senses VSYS/3); its LED is Pin("LED").
GPIO_PINS = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 26, 27, 28)
RESERVED_PINS = (23, 24, 25, 29)
RESERVED_WHY = "used by the CYW43439 Wi-Fi chip"
INPUT_ONLY_PINS = ()
ADC2_PINS = ()
NAMED_PINS = ("LED",)  # outputs only: the Wi-Fi chip's LED (machine.Pin("LED"))
I2C_IDS = (0, 1)
# by bus id: SCL on odd, SDA on even pins, bus = bit 1 of the pin number (rp2 machine_i2c.c)
I2C_SCL = ((1, 5, 9, 13, 17, 21), (3, 7, 11, 15, 19, 27))
I2C_SDA = ((0, 4, 8, 12, 16, 20, 28), (2, 6, 10, 14, 18, 22, 26))
# Bytes the config's preallocated buffers (core/config.py buffer_bytes) may take. About
# 190 KB of heap are free with Wi-Fi up; the firmware's own modules and objects take
# ~55 KB at the boot peak (as on the ESP32, esp32_devkit.py); 25 % headroom (47.5 KB)
# stays free for gc, sockets and fragmentation, leaving ~87 KB. 48 KB keeps the rest as
# margin for the estimate and for boot-time fragmentation (each large buffer needs one
# contiguous block); it holds e.g. two MPU-6050s with the default queue (~25 KB).
HEAP_BUDGET = 48 * 1024
