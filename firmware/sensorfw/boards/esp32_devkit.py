# Board profile: ESP32 DevKit (ESP32-WROOM-32), MicroPython esp32 port. Data only.

NAME = "esp32_devkit"
HARD_TIMER_IRQ = False  # machine.Timer callbacks are soft (scheduled) on the esp32 port
HARD_PIN_IRQ = True  # Pin.irq(hard=True) is supported
TIMER_ID = 0  # hardware timer group 0, timer 0
HAS_RTC_MEMORY = True  # machine.RTC().memory() survives deep sleep
ADC_ATTEN_11DB = True  # full 0..3.3 V input range on ADC1 pins
ADC_PINS = (32, 33, 34, 35, 36, 39)  # ADC1 only: ADC2 is unusable while Wi-Fi is on
I2C_DEFAULT = {"id": 0, "scl": 22, "sda": 21}
LED_PIN = 2
WDT_MAX_MS = 0  # no limit worth clamping to
