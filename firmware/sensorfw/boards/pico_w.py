# Board profile: Raspberry Pi Pico W (RP2040 + CYW43439), MicroPython rp2 port. Data only.

NAME = "pico_w"
HARD_TIMER_IRQ = True  # rp2 machine.Timer callbacks run as hard IRQs
HARD_PIN_IRQ = True
TIMER_ID = -1  # virtual timer
HAS_RTC_MEMORY = False  # no retained RAM across deep sleep: boot state goes to flash
ADC_ATTEN_11DB = False
ADC_PINS = (26, 27, 28)
I2C_DEFAULT = {"id": 0, "scl": 5, "sda": 4}
LED_PIN = "LED"
WDT_MAX_MS = 8388  # RP2040 watchdog counter limit: longer timeouts are clamped
