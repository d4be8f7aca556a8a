# MicroPython script (unix port): run the firmware's A/B loader (as firmware/main.py does) with the
# flash root on littlefs v2, as on an ESP32 or a Pico W, instead of the host's filesystem.
# The block device is a host file, so the flash survives a kill -9 like a board's flash; the
# files in EDGELINE_LFS_SEED (config.json, ota.key) are copied in when the flash lacks them.
#   EDGELINE_LFS_IMAGE=<file of blocks x 4096 bytes> EDGELINE_LFS_SEED=<dir>
#   EDGELINE_SIM_DIR=/flash micropython tests/firmware/ota_lfs_main.py

import os

BLOCK = 4096  # the ESP32 and rp2 ports' littlefs block
MOUNT = "/flash"


class FileBlocks:
    """A block device (MicroPython's extended interface) over a host file."""

    def __init__(self, path):
        self.f = open(path, "r+b")  # noqa: SIM115 (open while the flash is mounted)
        self.f.seek(0, 2)
        self.count = self.f.tell() // BLOCK

    def readblocks(self, n, buf, off=0):
        self.f.seek(n * BLOCK + off)
        self.f.readinto(buf)

    def writeblocks(self, n, buf, off=0):
        self.f.seek(n * BLOCK + off)
        self.f.write(buf)

    def ioctl(self, op, arg):
        if op == 4:
            return self.count
        if op == 5:
            return BLOCK
        return 0


def mount():
    dev = FileBlocks(os.getenv("EDGELINE_LFS_IMAGE"))
    try:
        os.mount(os.VfsLfs2(dev), MOUNT)
    except OSError:  # a blank image: format it, as a fresh board does
        os.VfsLfs2.mkfs(dev)
        os.mount(os.VfsLfs2(dev), MOUNT)
    seed = os.getenv("EDGELINE_LFS_SEED")
    for name in os.listdir(seed):
        try:
            os.stat(MOUNT + "/" + name)
        except OSError:
            with open(seed + "/" + name, "rb") as src:
                data = src.read()
            with open(MOUNT + "/" + name, "wb") as dst:
                dst.write(data)
    os.chdir(MOUNT)


mount()
from otaslots import run  # noqa: E402 (firmware/otaslots.py, after the flash is in place)

run("sensorfw.entry")
