# Runs on the MicroPython unix port (bench_firmware.py starts it): cost per captured
# reading of the firmware path vs a bare loop storing the same values, same process.
import sys
import time
from array import array

from sensorfw.boards import sim as simboard
from sensorfw.core.batcher import Batcher
from sensorfw.core.data_encoder import RingDataEncoder
from sensorfw.core.offline_queue import OfflineQueue
from sensorfw.core.ring import SampleRing
from sensorfw.core.sampler import Sampler
from sensorfw.drivers.mpu6050 import MPU6050

ROWS = int(sys.argv[1])
WIDTH = 6
BATCH = 32


class Sink:
    boot = 1

    def __init__(self, q):
        self.q = q
        self.seq = 0

    def next_seq(self):
        s = self.seq
        self.seq = s + 1
        return s

    def put_frame(self, ftype, frame, n):
        self.q.push(frame, n, True)


class Rig:
    def __init__(self, i2c, imu, ring, sampler, batcher, q, sink):  # noqa: PLR0917
        self.i2c = i2c
        self.imu = imu
        self.ring = ring
        self.sampler = sampler
        self.batcher = batcher
        self.q = q
        self.sink = sink


def build():
    board = simboard.SimBoard()
    i2c = board.make_i2c(0, -1, -1, 400000)
    imu = MPU6050(i2c)
    imu.init()
    for s in board.latches:
        s.latch()  # one set of register values: the simulated hardware is not timed
    ring = SampleRing(256, WIDTH)
    sampler = Sampler(ring, [imu], time, 100, False, None)  # clock = the time module, as on a board
    enc = RingDataEncoder(WIDTH, BATCH)
    q = OfflineQueue("benchq", 8, 64, len(enc.buf), 4096, 4)
    sink = Sink(q)
    batcher = Batcher(ring, None, enc, BATCH, sampler, sink)
    return Rig(i2c, imu, ring, sampler, batcher, q, sink)


def firmware_path(rows):
    g = build()
    ring, sampler, batcher, q, sink = g.ring, g.sampler, g.batcher, g.q, g.sink
    tick = sampler.on_tick
    drain = batcher.drain
    t0 = time.ticks_us()
    r = 0
    while r < rows:
        tick(None)
        if r & 7 == 7 and drain():  # the main loop drains every few ticks
            q.ack(1, 0, sink.seq)  # the gateway's ACK trims the queue
        r += 1
    drain(True)
    dt = time.ticks_diff(time.ticks_us(), t0)
    return dt, batcher.frames, ring.vals


def bare_capture(rows):
    # what a naive handler does: read the sensor, store its six values in an array
    g = build()
    buf = g.imu.buf
    rd = g.i2c.readfrom_mem_into
    out = array("h", bytes(2 * rows * WIDTH))

    def handler(j):
        rd(0x68, 0x3B, buf)
        i = 0
        k = 0
        while i < 6:
            out[j + i] = (buf[k] << 8) | buf[k + 1]
            i += 1
            k += 2
            if k == 6:
                k = 8

    t0 = time.ticks_us()
    r = 0
    while r < rows:
        handler(r * WIDTH)
        r += 1
    return time.ticks_diff(time.ticks_us(), t0)


def i2c_alone(rows):
    g = build()
    buf = g.imu.buf
    rd = g.i2c.readfrom_mem_into
    t0 = time.ticks_us()
    r = 0
    while r < rows:
        rd(0x68, 0x3B, buf)
        r += 1
    return time.ticks_diff(time.ticks_us(), t0)


def bare_loop(rows, src):
    n = rows * WIDTH
    out = array("h", bytes(2 * n))
    m = len(src)
    t0 = time.ticks_us()
    j = 0
    k = 0
    while j < n:
        out[j] = src[k]  # the values the firmware captured, stored one by one
        j += 1
        k += 1
        if k == m:
            k = 0
    return time.ticks_diff(time.ticks_us(), t0)


# Every variant once per round, rounds repeated: the machine is shared and noisy, so
# figures are the minimum over rounds and ratios the median of per-round ratios.
runs = {"firmware_us": [], "bare_us": [], "i2c_us": [], "naive_us": []}
frames = 0
for _ in range(int(sys.argv[2]) if len(sys.argv) > 2 else 5):
    fw, frames, vals = firmware_path(ROWS)
    runs["firmware_us"].append(fw)
    runs["bare_us"].append(bare_loop(ROWS, vals))
    runs["i2c_us"].append(i2c_alone(ROWS))
    runs["naive_us"].append(bare_capture(ROWS))


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


best = {k: min(v) for k, v in runs.items()}
bare = runs["bare_us"]
for k, v in runs.items():
    best[k.replace("_us", "_ratio")] = median([v[i] / bare[i] for i in range(len(v))])
best["nofw_i2c_ratio"] = median([(runs["firmware_us"][i] - runs["i2c_us"][i]) / bare[i] for i in range(len(bare))])
best["rows"] = ROWS
best["readings"] = ROWS * WIDTH
best["frames"] = frames
print("RESULT", best)
