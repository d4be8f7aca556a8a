# Runs on the MicroPython unix port with the CircuitPython simulation (firmware/cpsim
# first on MICROPYPATH, as tests/circuitpython/cpdevice.py runs code.py); started by
# bench_circuitpython.py. Cost per captured reading of the CircuitPython capture path,
# measured as upy_firmware_cost.py measures the MicroPython one (upy_cost_common.py:
# the same sizes, sink, bare loop, rounds and summary), beside it in the same bench run.
#
# usage: micropython upy_cp_capture_cost.py <samples> [rounds]
#
# CircuitPython runs no Python in interrupts: the sample timer is polled from the main
# loop (cpport/board.py Board.poll -> PolledTimer -> the Sampler's callback), and the
# hardware goes through the CircuitPython board layer (I2CMem over busio.I2C, ADC over
# analogio.AnalogIn), all of it Python that counts as firmware. What is C code on a
# board is timed alone and subtracted, as for MicroPython: busio.I2C and the simulated
# MPU-6050 under it (clock pinned and moved by hand, signal generator off after the
# first sample), analogio.AnalogIn.value (signal generator off). CircuitPython's clock
# functions are C on a board: supervisor.ticks_ms and time.monotonic_ns are the port's
# C time functions here, not the simulation's Python stand-ins; busio.I2C's transfer
# passes the buffers straight to the simulated bus (the simulation's version makes four
# memoryview slices per call, garbage that C code on a board does not make and that
# skews the timing of whatever runs beside it). CircuitPython has no
# native code emitter, so the MPU-6050 driver unpacks the FIFO in bytecode (its viper
# routine does not compile there). Variants, each SAMPLES samples x 6 channels:
#   cp_fifo      MPU-6050 at 100 Hz: Board.poll fires the 20 Hz drain timer every 5
#                samples -> Sampler.on_drain -> ring -> DATA frames of 32 -> offline
#                queue, ACK per frame (as upy_firmware_cost.py's `firmware`)
#   cp_analog    one ADC channel at 100 Hz, timer-paced: Board.poll fires the sample
#                timer each period -> Sampler.on_tick -> ring -> DATA frames of 32 ->
#                queue, ACK per frame; SAMPLES x 6 readings (as its `analog`)
#   cp_fifo_viper  cp_fifo with the driver's viper unpacking, which the unix port has
#                and CircuitPython lacks: what the bytecode unpacking costs
#   *_sim        their busio / analogio calls alone, with the same loop around them
#   idle_poll    Board.poll with nothing due (the main loop polls about every ms)
#   bare         the bare loop storing the values cp_fifo captured
import gc
import sys
import time

import busio
import supervisor
from sensorfw.boards import cp_pico_w
from sensorfw.core.batcher import Batcher
from sensorfw.core.data_encoder import RingDataEncoder
from sensorfw.core.offline_queue import OfflineQueue
from sensorfw.core.ring import SampleRing
from sensorfw.core.sampler import Sampler
from sensorfw.cpport.board import Board
from sensorfw.drivers.analog import AnalogChannel
from sensorfw.drivers.mpu6050 import MPU6050
from upy_cost_common import BATCH, PER_DRAIN, RATE, WIDTH, Hold, HoldADC, P, Rig, Sink, bare_loop, bursts, summarise

SAMPLES = int(sys.argv[1])
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[2].isdigit() else 5
MASK = (1 << 29) - 1  # cpport Clock: ticks modulo 2**29, as supervisor.ticks_ms()

# CircuitPython's clock functions, C on a board: the port's own here
supervisor.ticks_ms = time.ticks_ms
time.monotonic_ns = time.time_ns
ms = time.ticks_ms
ns = time.time_ns


class Pinned:
    """The simulated chip's clock, pinned and moved by hand (its samples, not the
    firmware's clock)."""

    def __init__(self):
        self.frozen = 1000000

    def now_us(self):
        return self.frozen


CLOCK = Pinned()
busio.CLOCK = CLOCK  # busio.I2C builds its SimMPU6050 on this clock


def _transfer(self, address, out_buffer, in_buffer, *, out_start=0, out_end=None, in_start=0, in_end=None):
    # busio.I2C.writeto_then_readfrom for whole buffers (what I2CMem passes), allocating
    # nothing, as CircuitPython's C code
    self._check()
    if out_start or in_start or out_end is not None or in_end is not None:
        raise ValueError("the bench passes whole buffers")
    self._bus.readfrom_mem_into(address, out_buffer[0], in_buffer)


busio.I2C.writeto_then_readfrom = _transfer


def _settle(ms_):  # the driver's wait after DEVICE_RESET, in the chip's time
    CLOCK.frozen += ms_ * 1000


_HELD = []  # the busio / analogio objects of the last rig: their pins are claimed


def _rig():
    while _HELD:
        _HELD.pop().deinit()  # CircuitPython: a pin belongs to one object at a time
    g = Rig()
    g.board = Board(cp_pico_w, ".")
    return g


def _queue(g, name, width):
    enc = RingDataEncoder(width, BATCH)
    g.q = OfflineQueue(name, 8, 64, len(enc.buf), 4096, 4)
    g.sink = Sink(g.q)
    g.batcher = Batcher(g.ring, None, enc, BATCH, g.sampler, g.sink)


def build_fifo(viper=False):
    g = _rig()
    d = cp_pico_w.I2C_DEFAULT
    g.i2c = g.board.make_i2c(d["id"], -1, -1, 400000)  # I2CMem over busio.I2C
    g.bus = g.i2c.i2c  # busio.I2C: C on a board
    _HELD.append(g.bus)
    g.imu = MPU6050(g.i2c, sleep_ms=_settle)
    if not viper:
        g.imu._unpack_fast = None  # no viper on CircuitPython: the driver's bytecode unpacking
    g.imu.init(RATE)
    g.ring = SampleRing(256, WIDTH)
    g.sampler = Sampler(g.ring, [g.imu], g.board.clock, RATE)  # stamps from cpport's Clock
    _queue(g, "benchq", WIDTH)
    CLOCK.frozen += P  # one sample from the chip's signal generator, then Hold
    g.sampler.on_drain(None)
    g.ring.tail = g.ring.head
    g.bus.imu.gen = Hold()
    g.timer = g.board.make_timer()
    g.board.start_timer(g.timer, g.sampler.timer_hz, g.sampler.irq_ref)
    gc.collect()  # no collection of the set-up's garbage inside the timed loop
    return g


def cp_fifo(samples, per, viper=False):
    g = build_fifo(viper)
    ring, batcher, q, sink, t = g.ring, g.batcher, g.q, g.sink, g.timer
    poll = g.board.poll
    step = per * P
    got = 0
    t0 = time.ticks_us()
    while got < samples:
        CLOCK.frozen += step  # the sensor samples into its FIFO meanwhile
        t.due = ms()  # the drain tick is due: this poll fires it
        poll()
        got += per
        if batcher.drain():  # the main loop, after the poll
            q.ack(1, 0, sink.seq)
    batcher.drain(True)
    dt = time.ticks_diff(time.ticks_us(), t0)
    s = g.sampler
    assert s.samples - 1 == got and s.missed == 0 and ring.overruns == 0 and t.coalesced == 0
    return dt, batcher.frames, ring.vals


def cp_fifo_sim(samples, per):
    # busio.I2C's transfers of a drain alone (INT_STATUS, FIFO_COUNT, the FIFO bursts,
    # INT_STATUS), with the same loop and timer arithmetic around them
    g = build_fifo()
    wr = g.bus.writeto_then_readfrom
    t = g.timer
    st, cnt, fifo = bytearray(b"\x3a"), bytearray(b"\x72"), bytearray(b"\x74")
    one = bytearray(1)
    two = bytearray(2)
    bs = bursts(per)
    step = per * P
    got = 0
    t0 = time.ticks_us()
    while got < samples:
        CLOCK.frozen += step
        t.due = ms()
        wr(0x68, st, one)
        wr(0x68, cnt, two)
        for b in bs:
            wr(0x68, fifo, b)
        wr(0x68, st, one)
        got += per
    return time.ticks_diff(time.ticks_us(), t0)


def build_analog():
    g = _rig()
    g.adc = g.board.make_adc(cp_pico_w.ADC_PINS[0])  # cpport ADC over analogio.AnalogIn
    g.ain = g.adc.ain
    _HELD.append(g.ain)
    g.ain._sig = HoldADC()  # the signal generator (hardware on a board) off
    g.ring = SampleRing(256, 1)
    g.sampler = Sampler(g.ring, [AnalogChannel(g.adc, "a")], g.board.clock, RATE)
    _queue(g, "benchqa", 1)
    g.timer = g.board.make_timer()
    g.board.start_timer(g.timer, g.sampler.timer_hz, g.sampler.irq_ref)
    gc.collect()
    return g


def cp_analog(readings):
    g = build_analog()
    s, batcher, q, sink, t = g.sampler, g.batcher, g.q, g.sink, g.timer
    poll = g.board.poll
    r = 0
    t0 = time.ticks_us()
    while r < readings:
        t.due = ms()  # the sample tick is due: this poll fires it ...
        s._due = (ns() // 1000) & MASK  # ... on time for its slot (time runs, nothing waits)
        poll()
        r += 1
        if batcher.drain():
            q.ack(1, 0, sink.seq)
    batcher.drain(True)
    dt = time.ticks_diff(time.ticks_us(), t0)
    assert s.samples == readings and s.missed == 0 and s.stale == 0 and g.ring.overruns == 0
    assert t.coalesced == 0
    return dt


def cp_analog_sim(readings):
    g = build_analog()
    s, t, ain = g.sampler, g.timer, g.ain
    r = 0
    t0 = time.ticks_us()
    while r < readings:
        t.due = ms()
        s._due = (ns() // 1000) & MASK
        ain.value  # noqa: B018 - the property read is what is timed
        r += 1
    return time.ticks_diff(time.ticks_us(), t0)


def idle_poll(n):
    # the main loop's poll when no tick is due (no pulse inputs configured)
    g = build_fifo()
    t = g.timer
    poll = g.board.poll
    i = 0
    t0 = time.ticks_us()
    while i < n:
        t.due = (ms() + 1000000) & MASK  # due far ahead: nothing fires
        poll()
        i += 1
    dt = time.ticks_diff(time.ticks_us(), t0)
    assert t.coalesced == 0 and g.sampler.samples == 1
    return dt


def idle_poll_sim(n):
    # the same loop without the poll
    g = build_fifo()
    t = g.timer
    i = 0
    t0 = time.ticks_us()
    while i < n:
        t.due = (ms() + 1000000) & MASK
        i += 1
    return time.ticks_diff(time.ticks_us(), t0)


# Every variant once per round, many short rounds; each figure the fastest round,
# ratios to the fastest bare loop (upy_cost_common.summarise).
KEYS = (
    "bare_us",
    "cp_fifo_us",
    "cp_fifo_sim_us",
    "cp_fifo_viper_us",
    "cp_analog_us",
    "cp_analog_sim_us",
    "idle_poll_us",
    "idle_poll_sim_us",
)
runs = {k: [] for k in KEYS}
frames = 0
POLLS = SAMPLES
for _ in range(ROUNDS):
    fw, frames, vals = cp_fifo(SAMPLES, PER_DRAIN)
    runs["cp_fifo_us"].append(fw)
    runs["bare_us"].append(bare_loop(SAMPLES, vals))
    runs["cp_fifo_sim_us"].append(cp_fifo_sim(SAMPLES, PER_DRAIN))
    runs["cp_fifo_viper_us"].append(cp_fifo(SAMPLES, PER_DRAIN, True)[0])
    runs["cp_analog_us"].append(cp_analog(SAMPLES * WIDTH))
    runs["cp_analog_sim_us"].append(cp_analog_sim(SAMPLES * WIDTH))
    runs["idle_poll_us"].append(idle_poll(POLLS))
    runs["idle_poll_sim_us"].append(idle_poll_sim(POLLS))

runs["cp_fifo_viper_sim_us"] = runs["cp_fifo_sim_us"]  # the same bus transfers
best = summarise(runs, ("cp_fifo", "cp_fifo_viper", "cp_analog", "idle_poll"))
if "-v" in sys.argv:
    print(runs)
best["samples"] = SAMPLES
best["readings"] = SAMPLES * WIDTH
best["per_drain"] = PER_DRAIN
best["frames"] = frames
best["rounds"] = ROUNDS
best["polls"] = POLLS
best["board"] = cp_pico_w.NAME
print("RESULT", best)
