# Offline-queue flash wear during a link outage: the real OfflineQueue, fed the frames
# the firmware produces, on a littlefs whose block device counts erases per block.
#
# Runs on both runtimes:
# - MicroPython unix port: `micropython bench/queue_wear.py PROG BLOCKS SECONDS LAYOUT`
#   mounts MicroPython's own littlefs (vfs.VfsLfs2, configured by extmod/vfs_lfsx.c as
#   on the ESP32 / Pico W ports) on a RAM block device and prints one RESULT line;
#   tests/upy/test_fw_queue_wear.py imports it.
# - CPython: bench/bench_flash_wear.py imports the frame stream and the queue classes
#   and runs them on littlefs-python.
#
# MeasuredQueue only counts bytes; LegacyLayout reproduces the write pattern before the
# littlefs alignment (every block `block_bytes` long, so a segment's second and later
# appends straddle two littlefs blocks). The baseline lives here only, not in firmware.

import sys

from sensorfw.core.offline_queue import OfflineQueue

from shared_protocol.encode import DataEncoder, encode_health

BOOT = 1


class MeasuredQueue(OfflineQueue):
    """The firmware's queue, counting the bytes it appends to segment files and the
    record bytes (7-byte header + frame) it spilled to flash."""

    appended = 0
    record_bytes = 0

    def _spill(self, src, off, n, boot, seq, state):  # noqa: PLR0917
        self.record_bytes += n + 7
        OfflineQueue._spill(self, src, off, n, boot, seq, state)

    def _write_block(self):
        if self.block_used:
            self.appended += self.cap
        OfflineQueue._write_block(self)


class LegacyLayout(MeasuredQueue):
    """Baseline: the queue's write pattern before the littlefs alignment."""

    def block_cap(self, k):
        return self.block_bytes


def frame_sizes(channels=6, batch=32):
    """(max_frame of the queue, DATA frame bytes, HEALTH frame bytes)."""
    from sensorfw.core.batcher import EVENT_BUF_SIZE

    data = len(DataEncoder(channels, batch).buf)
    return max(data, EVENT_BUF_SIZE), data, 48


def new_queue(directory, legacy=False, flash_frames=256, segment_blocks=4):
    """A queue as app.py builds it with the default config (config.py [queue] defaults:
    8 RAM frames, 256 flash frames, 4096-byte blocks, 4 blocks a segment)."""
    cls = LegacyLayout if legacy else MeasuredQueue
    return cls(directory, 8, flash_frames, frame_sizes()[0], 4096, segment_blocks)


class FrameStream:
    """DATA frames every batch/rate_hz seconds and a HEALTH frame every health_s, in
    time order, with one sequence shared by both (as app.py numbers them)."""

    def __init__(self, rate_hz=50, channels=6, batch=32, health_s=30):
        from array import array

        self.enc = DataEncoder(channels, batch)
        self.samples = array("h", [0] * (channels * batch))
        self.batch = batch
        self.period_ms = batch * 1000 // rate_hz if batch * 1000 % rate_hz == 0 else batch * 1000 / rate_hz
        self.period_us = int(1000000 // rate_hz)
        self.health_ms = health_s * 1000
        self.health = bytearray(48)
        self.seq = 0
        self.t_ms = 0
        self.next_data = 0
        self.next_health = 0

    def frames(self, seconds):
        """Yield (memoryview, n) for `seconds` of capture."""
        end = self.t_ms + seconds * 1000
        s = self.samples
        while True:
            if self.next_health <= self.next_data:
                t = self.next_health
                if t >= end:
                    break
                ticks = int(t) & 0x3FFFFFFF  # ticks_ms wraps
                n = encode_health(self.health, BOOT, self.seq, ticks, 0, int(t) // 1000, 60000, -60, 0, 0, 0, 0, 0, 0)
                self.next_health += self.health_ms
                self.seq += 1
                yield memoryview(self.health), n
            else:
                t = self.next_data
                if t >= end:
                    break
                i = 0
                while i < len(s):
                    s[i] = (self.seq * 7 + i * 13) & 0x3FFF
                    i += 1
                n = self.enc.encode(BOOT, self.seq, int(t) & 0x3FFFFFFF, self.period_us, s, self.batch)
                self.next_data += self.period_ms
                self.seq += 1
                yield self.enc.frame, n
        self.t_ms = end


def outage(q, stream, seconds):
    """The link is down for `seconds`: every frame goes into the queue (not live)."""
    for mv, n in stream.frames(seconds):
        q.push(mv, n, False)


def reconnect(q, stream):
    """The link is back: every queued frame goes out and the gateway ACKs them all."""
    while q.next_frame() is not None:
        q.sent()
    if stream.seq:
        q.ack(BOOT, 0, stream.seq - 1)


# ---------------------------------------------------------------------- MicroPython only


class CountingFlash:
    """RAM block device for vfs.VfsLfs2 (extended block protocol) that counts erases
    per block. Power cut: `cut_at` = the number of erase/prog operations that complete;
    the flash as it is then is copied into `snapshot` (with the next operation half
    done when `torn` is set) and `at_cut()` is called; the run itself goes on."""

    def __init__(self, block_size, block_count, cut_at=-1):
        from array import array

        self.bs = block_size
        self.n = block_count
        self.data = bytearray(b"\xff" * (block_size * block_count))
        self.erases = array("I", [0] * block_count)
        self.ops = 0
        self.cut_at = cut_at
        self.torn = False
        self.at_cut = None
        self.snapshot = None

    def _op(self, a, data):
        if self.ops == self.cut_at:
            snap = bytearray(self.data)
            if self.torn:
                h = len(data) // 2
                snap[a : a + h] = data[:h]
            self.snapshot = snap
            if self.at_cut is not None:
                self.at_cut()
        self.ops += 1

    def readblocks(self, block, buf, off=0):
        a = block * self.bs + off
        buf[:] = self.data[a : a + len(buf)]

    def writeblocks(self, block, buf, off=None):
        if off is None:  # simple protocol: whole blocks, erase first
            i = 0
            while i < len(buf) // self.bs:
                self.ioctl(6, block + i)
                i += 1
            off = 0
        a = block * self.bs + off
        self._op(a, buf)
        self.data[a : a + len(buf)] = buf

    def ioctl(self, op, arg):
        if op == 4:  # MP_BLOCKDEV_IOCTL_BLOCK_COUNT
            return self.n
        if op == 5:  # MP_BLOCKDEV_IOCTL_BLOCK_SIZE
            return self.bs
        if op == 6:  # MP_BLOCKDEV_IOCTL_BLOCK_ERASE
            a = arg * self.bs
            ff = b"\xff" * self.bs
            self._op(a, ff)
            self.erases[arg] += 1
            self.data[a : a + self.bs] = ff
            return 0
        return 0


def mount(dev, progsize, path="/lfs", mkfs=True):
    """vfs.VfsLfs2 on `dev` with the port's progsize (32: ESP32, ports/esp32/modules/
    _boot.py mounts with the defaults; 256: Pico W, ports/rp2/modules/_boot.py);
    readsize and lookahead keep the defaults of extmod/vfs_lfs.c (32, 32)."""
    import vfs

    if mkfs:
        vfs.VfsLfs2.mkfs(dev, progsize=progsize)
    vfs.mount(vfs.VfsLfs2(dev, progsize=progsize), path)
    return path


def umount(path="/lfs"):
    import vfs

    vfs.umount(path)


def measure(progsize, blocks, seconds, legacy=False, segment_blocks=4):
    """One outage of `seconds` then the reconnect, on MicroPython's littlefs."""
    import os

    dev = CountingFlash(4096, blocks)
    path = mount(dev, progsize)
    try:
        os.mkdir(path + "/queue")
        q = new_queue(path + "/queue", legacy, segment_blocks=segment_blocks)
        stream = FrameStream()
        base = sum(dev.erases)
        outage(q, stream, seconds)
        during = sum(dev.erases) - base
        reconnect(q, stream)
        total = sum(dev.erases) - base
    finally:
        umount(path)
    return {
        "erases_outage": during,
        "erases_total": total,
        "appended": q.appended,
        "record_bytes": q.record_bytes,
        "block_writes": q.block_writes,
        "hottest": max(dev.erases),
        "frames": stream.seq,
    }


def _main():
    prog, blocks, seconds, layout = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    print("RESULT", measure(prog, blocks, seconds, layout == "legacy"))


if __name__ == "__main__":
    _main()
