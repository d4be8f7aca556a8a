# CircuitPython's `storage`: CIRCUITPY is writable by the USB host, read-only to code,
# until boot.py remounts it (storage.remount("/", readonly=False)), which also makes it
# read-only to the host. boot.py runs at power-on/reset only; the simulated mount state
# lives on the simulated drive (.cpsim-mount), written by remount().
from _cpsim import path


class _Mount:
    @property
    def readonly(self):
        try:
            with open(path(".cpsim-mount")) as f:
                return f.read().strip() != "rw"
        except OSError:
            return True  # the default: the host may write, code may not


def getmount(mount_path):
    if mount_path != "/":
        raise OSError(2)
    return _Mount()


def remount(mount_path, readonly=False, *, disable_concurrent_write_protection=False):
    if mount_path != "/":
        raise OSError(2)
    with open(path(".cpsim-mount"), "w") as f:
        f.write("ro" if readonly else "rw")


_usb = [True]


def disable_usb_drive():
    _usb[0] = False


def enable_usb_drive():
    _usb[0] = True
