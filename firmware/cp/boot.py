# CircuitPython boot.py: who may write CIRCUITPY, the code or the USB host.
#
# CircuitPython lets only one side write the drive. The firmware keeps its offline
# queue and sequence lease there, so by default the code gets write access (the drive
# is then read-only to the computer). To edit files over USB, either hold the USB-write
# pin (EDGELINE_USB_WRITE_PIN in settings.toml, a GPIO number; default: GPIO 0, the BOOT
# button of ESP32-S3 boards; the Pico W has none) to ground while pressing reset, or
# create /usb_write from the REPL and reset: the drive stays writable from the computer
# (delete usb_write from it when done) and the firmware refuses to start meanwhile.
import os

import digitalio
import microcontroller
import storage

DEFAULT_PIN = {"raspberry_pi_pico_w": None}  # no user button on the Pico W: set one


def usb_write_requested():
    try:
        os.stat("usb_write")  # on CIRCUITPY's root, the working directory
        return True
    except OSError:
        pass
    # an int on CircuitPython 8 and 9, a string on later releases
    n = os.getenv("EDGELINE_USB_WRITE_PIN")  # type: int | str | None  # type: ignore[assignment]
    if n is not None:
        n = int(n)
    else:
        import board

        n = DEFAULT_PIN.get(board.board_id, 0)  # ESP32-S3 boards: BOOT is GPIO0
    if n is None:
        return False
    pin = digitalio.DigitalInOut(getattr(microcontroller.pin, "GPIO%d" % n))  # type: ignore[attr-defined]  # not in the stub
    pin.switch_to_input(pull=digitalio.Pull.UP)
    held = not pin.value
    pin.deinit()
    return held


if usb_write_requested():
    print("boot.py: USB write asked for (pin held or usb_write): CIRCUITPY stays writable from the computer")
else:
    storage.remount("/", readonly=False)
    print("boot.py: CIRCUITPY is writable by the firmware (read-only over USB)")
