# Board profile: ESP32 DevKit (ESP32-WROOM-32), MicroPython esp32 port. Data only.

NAME = "esp32_devkit"
PORT = "esp32"  # MicroPython port (docs/firmware.md, "Port facts")
HARD_TIMER_IRQ = False  # machine.Timer callbacks are always scheduled (soft) on esp32
HARD_PIN_IRQ = False  # esp32 Pin.irq takes handler, trigger, wake only: no hard= (machine_pin.c)
TIMER_ID = 0  # hardware timer group 0, timer 0
DEEPSLEEP_IS_LIGHTSLEEP = False  # real deep sleep; RTC memory kept
HAS_RTC_MEMORY = True  # machine.RTC().memory() survives deep sleep
ADC_ATTEN_11DB = True  # full 0..3.3 V input range on ADC1 pins
ADC_PINS = (32, 33, 34, 35, 36, 39)  # ADC1 only: ADC2 is unusable while Wi-Fi is on
I2C_DEFAULT = {"id": 0, "scl": 22, "sda": 21}
LED_PIN = 2
WDT_MAX_MS = 0  # no limit worth clamping to
TLS_HANDSHAKE_MS = 1500  # ECDHE-ECDSA P-256 arithmetic of a TLS handshake, upper estimate (docs/firmware.md "TLS")

# Pins (checked by core/config.py + core/pins.py; sources there). ESP32-WROOM-32 pads only:
# GPIO 20, 24, 28-31 do not exist, 37/38 are not brought out by the module.
GPIO_PINS = (0, 1, 2, 3, 4, 5, 12, 13, 14, 15, 16, 17, 18, 19, 21, 22, 23, 25, 26, 27, 32, 33, 34, 35, 36, 39)
RESERVED_PINS = (6, 7, 8, 9, 10, 11)
RESERVED_WHY = "wired to the module's SPI flash"
INPUT_ONLY_PINS = (34, 35, 36, 39)  # no output driver, no internal pull-up/down
ADC2_PINS = (0, 2, 4, 12, 13, 14, 15, 25, 26, 27)  # ADC2: taken by the Wi-Fi driver
NAMED_PINS = ()  # outputs may only be GPIO numbers
I2C_IDS = (0, 1)
I2C_SCL = None  # None: any output-capable GPIO (GPIO matrix)
I2C_SDA = None
# Bytes the config's preallocated buffers (core/config.py buffer_bytes) may take. About
# 110 KB of heap are free with Wi-Fi up; the firmware's own modules and objects take
# ~55 KB at the boot peak (docs/firmware.md, "The 64 KB heap": ~126 KB at boot on the
# 64-bit unix port, roughly half on a 32-bit board); 25 % headroom (27.5 KB) stays free
# for gc, sockets and fragmentation, leaving ~27 KB: 24 KB. The defaults take ~20 KB
# with an MPU-6050 and an analog input; two MPU-6050s need fewer queue.ram_frames.
HEAP_BUDGET = 24 * 1024
