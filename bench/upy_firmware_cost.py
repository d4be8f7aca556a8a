# Runs on the MicroPython unix port (bench_firmware.py starts it): cost per captured
# reading of the firmware path against baselines measured in the same process.
#
# usage: micropython upy_firmware_cost.py <samples> [rounds] [analog]
#
# The simulated MPU-6050 (boards/sim_i2c.py) makes its samples from the board's virtual
# clock, which the bench pins and moves by hand (clock.frozen): no sleeps, the same work
# every round. Its signal generator (~8 us of Python per sample, hardware on a board) is
# switched off after the first sample, which the chip then repeats: the register file,
# FIFO and bus it still simulates are timed alone and shown. Variants, each SAMPLES
# samples x 6 channels:
#   firmware   Sampler.on_drain every PER_DRAIN samples (drain tick at 20 Hz, 100 Hz
#              sensor) -> ring -> DATA frames of 32 -> offline queue, ACK per frame
#   firmware1  the same, drained after every sample (no amortisation)
#   naive      a per-sample handler: read the 14 data registers, store six values
#   bare       a loop storing the values the firmware captured into an array
#   *_sim      the bus transactions of firmware / firmware1 / naive alone, with the
#              simulated chip making its samples: hardware and C code on a board
# With `analog` (bench_circuitpython.py, beside the CircuitPython path), also
#   analog     one ADC channel, timer-paced: Sampler.on_tick per sample (each tick on
#              time for its slot) -> ring -> DATA frames of 32 -> queue, ACK per frame;
#              SAMPLES x 6 readings, as the others
#   analog_sim its ADC reads alone (machine.ADC.read_u16: C on a board)
import gc
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
from upy_cost_common import BATCH, PER_DRAIN, RATE, WIDTH, Hold, HoldADC, P, Rig, Sink, bare_loop, bursts, summarise

SAMPLES = int(sys.argv[1])
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[2].isdigit() else 5
ANALOG = "analog" in sys.argv

BOARD = simboard.make_board()
CLOCK = BOARD.clock  # the simulated chip's clock (pinned); the Sampler gets `time`
CLOCK.frozen = 1000000


def _settle(ms):  # the driver's wait after DEVICE_RESET, in virtual time
    CLOCK.frozen += ms * 1000


def build():
    g = Rig()
    g.i2c = BOARD.make_i2c(0, -1, -1, 400000)
    g.imu = MPU6050(g.i2c, sleep_ms=_settle)
    g.imu.init(RATE)
    g.ring = SampleRing(256, WIDTH)
    g.sampler = Sampler(g.ring, [g.imu], time, RATE)  # stamps from `time`, as on a board
    enc = RingDataEncoder(WIDTH, BATCH)
    g.q = OfflineQueue("benchq", 8, 64, len(enc.buf), 4096, 4)
    g.sink = Sink(g.q)
    g.batcher = Batcher(g.ring, None, enc, BATCH, g.sampler, g.sink)
    CLOCK.frozen += P  # one sample from the chip's signal generator, then Hold
    g.sampler.on_drain(None)
    g.ring.tail = g.ring.head
    g.i2c.devices[0x68].gen = Hold()
    gc.collect()  # no collection of the set-up's garbage inside the timed loop
    return g


def firmware_path(samples, per):
    g = build()
    ring, batcher, q, sink = g.ring, g.batcher, g.q, g.sink
    drain = g.sampler.irq_ref
    step = per * P
    got = 0
    t0 = time.ticks_us()
    while got < samples:
        CLOCK.frozen += step  # the sensor samples into its FIFO meanwhile
        drain(None)
        got += per
        if batcher.drain():  # the main loop, between drain ticks
            q.ack(1, 0, sink.seq)  # the gateway's ACK trims the queue
    batcher.drain(True)
    dt = time.ticks_diff(time.ticks_us(), t0)
    assert g.sampler.samples - 1 == got and g.sampler.missed == 0 and ring.overruns == 0
    return dt, batcher.frames, ring.vals


def firmware_sim(samples, per):
    # the drain's bus transactions alone: INT_STATUS, FIFO_COUNT, the FIFO reads
    # (4 + 1 samples for 5), INT_STATUS
    g = build()
    rd = g.i2c.readfrom_mem_into
    one = bytearray(1)
    two = bytearray(2)
    bs = bursts(per)
    step = per * P
    got = 0
    t0 = time.ticks_us()
    while got < samples:
        CLOCK.frozen += step
        rd(0x68, 0x3A, one)
        rd(0x68, 0x72, two)
        for b in bs:
            rd(0x68, 0x74, b)
        rd(0x68, 0x3A, one)
        got += per
    return time.ticks_diff(time.ticks_us(), t0)


def _naive_rig():
    g = build()
    g.i2c.writeto_mem(0x68, 0x6A, b"\x00")  # FIFO off: this handler reads the registers
    return g


def naive(samples):
    # a per-sample timer handler: read the sensor, store its six values in an array
    g = _naive_rig()
    buf = bytearray(14)  # ACCEL_XOUT_H..GYRO_ZOUT_L
    rd = g.i2c.readfrom_mem_into
    out = array("h", bytes(2 * samples * WIDTH))
    gc.collect()

    def handler(j):
        rd(0x68, 0x3B, buf)
        i = 0
        k = 0
        while i < 6:
            v = (buf[k] << 8) | buf[k + 1]
            out[j + i] = v - 65536 if v > 32767 else v
            i += 1
            k += 2
            if k == 6:
                k = 8

    t0 = time.ticks_us()
    r = 0
    while r < samples:
        CLOCK.frozen += P
        handler(r * WIDTH)
        r += 1
    return time.ticks_diff(time.ticks_us(), t0)


def naive_sim(samples):
    g = _naive_rig()
    buf = bytearray(14)  # ACCEL_XOUT_H..GYRO_ZOUT_L
    rd = g.i2c.readfrom_mem_into
    t0 = time.ticks_us()
    r = 0
    while r < samples:
        CLOCK.frozen += P
        rd(0x68, 0x3B, buf)
        r += 1
    return time.ticks_diff(time.ticks_us(), t0)


def _analog_rig():
    g = Rig()
    pin = BOARD.profile.ADC_PINS[0]
    g.adc = BOARD.make_adc(pin)
    if hasattr(g.adc, "gen"):
        g.adc.gen = HoldADC()  # the signal generator (hardware on a board) off
    g.ring = SampleRing(256, 1)
    g.sampler = Sampler(g.ring, [AnalogChannel(g.adc, "a")], time, RATE)
    enc = RingDataEncoder(1, BATCH)
    g.q = OfflineQueue("benchqa", 8, 64, len(enc.buf), 4096, 4)
    g.sink = Sink(g.q)
    g.batcher = Batcher(g.ring, None, enc, BATCH, g.sampler, g.sink)
    gc.collect()
    return g


def analog_path(readings):
    # the timer's soft callback (dispatched by C code on a board) each period: on_tick
    g = _analog_rig()
    s, batcher, q, sink = g.sampler, g.batcher, g.q, g.sink
    tick = s.irq_ref
    us = time.ticks_us
    r = 0
    t0 = time.ticks_us()
    while r < readings:
        s._due = us()  # the tick comes on time for its slot (time runs, nothing waits)
        tick(None)
        r += 1
        if batcher.drain():  # the main loop, between ticks
            q.ack(1, 0, sink.seq)
    batcher.drain(True)
    dt = time.ticks_diff(time.ticks_us(), t0)
    assert s.samples == readings and s.missed == 0 and s.stale == 0 and g.ring.overruns == 0
    return dt


def analog_sim(readings):
    g = _analog_rig()
    s = g.sampler
    read = g.adc.read_u16
    us = time.ticks_us
    r = 0
    t0 = time.ticks_us()
    while r < readings:
        s._due = us()
        read()
        r += 1
    return time.ticks_diff(time.ticks_us(), t0)


# Every variant once per round, many short rounds: the machine is shared and noisy, so
# each figure is the fastest round, and ratios are to the fastest bare loop.
KEYS = ("bare_us", "naive_us", "naive_sim_us", "firmware_us", "firmware_sim_us", "firmware1_us", "firmware1_sim_us")
if ANALOG:
    from sensorfw.drivers.analog import AnalogChannel

    KEYS += ("analog_us", "analog_sim_us")
runs = {k: [] for k in KEYS}
frames = 0
for _ in range(ROUNDS):
    fw, frames, vals = firmware_path(SAMPLES, PER_DRAIN)
    runs["firmware_us"].append(fw)
    runs["bare_us"].append(bare_loop(SAMPLES, vals))
    runs["firmware_sim_us"].append(firmware_sim(SAMPLES, PER_DRAIN))
    runs["firmware1_us"].append(firmware_path(SAMPLES, 1)[0])
    runs["firmware1_sim_us"].append(firmware_sim(SAMPLES, 1))
    runs["naive_us"].append(naive(SAMPLES))
    runs["naive_sim_us"].append(naive_sim(SAMPLES))
    if ANALOG:
        runs["analog_us"].append(analog_path(SAMPLES * WIDTH))
        runs["analog_sim_us"].append(analog_sim(SAMPLES * WIDTH))


# the code of each path without the simulated hardware under it
best = summarise(runs, ("firmware", "firmware1", "naive") + (("analog",) if ANALOG else ()))
if "-v" in sys.argv:
    print(runs)
best["samples"] = SAMPLES
best["readings"] = SAMPLES * WIDTH
best["per_drain"] = PER_DRAIN
best["frames"] = frames
best["rounds"] = ROUNDS
best["board"] = BOARD.profile.NAME
print("RESULT", best)
