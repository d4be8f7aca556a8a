# Interrupt handlers and the DATA path allocate nothing (micropython.heap_lock()).
import micropython
from sensorfw.boards import sim as simboard
from sensorfw.core.batcher import Batcher
from sensorfw.core.data_encoder import RingDataEncoder
from sensorfw.core.offline_queue import OfflineQueue
from sensorfw.core.ring import EventRing, SampleRing
from sensorfw.core.sampler import Sampler
from sensorfw.drivers.analog import AnalogChannel
from sensorfw.drivers.mpu6050 import MPU6050
from sensorfw.drivers.pulse import PulseInput

from shared_protocol.decode import decode
from shared_protocol.encode import DataEncoder


class Sink:
    def __init__(self, queue):
        self.boot = 7
        self.seq = 0
        self.queue = queue

    def next_seq(self):
        s = self.seq
        self.seq = s + 1
        return s

    def put_frame(self, ftype, frame, n):
        self.queue.push(frame, n, True)


def _tmpdir(name):
    import os

    d = "fwtest_" + name
    try:
        os.mkdir(d)
    except OSError:
        pass
    return d


def _rig(rows=64, batch=16):
    board = simboard.SimBoard()
    i2c = board.make_i2c(0, -1, -1, 400000)
    imu = MPU6050(i2c)
    imu.init()
    adc = AnalogChannel(board.make_adc(3), "a")
    pin = board.make_pin_in(5, None, {"sim_hz": 5.0})
    pulse = PulseInput(pin, "p", board.clock, "event")
    readers = [imu, adc, pulse]
    ring = SampleRing(rows, 8)
    events = EventRing(16)
    pulse.attach(events, 7)
    sampler = Sampler(ring, readers, board.clock, 100, False, None)
    enc = RingDataEncoder(8, batch)
    q = OfflineQueue(_tmpdir("alloc"), 4, 16, len(enc.buf), 4096, 2)
    sink = Sink(q)
    batcher = Batcher(ring, events, enc, batch, sampler, sink)
    return board, sampler, ring, events, batcher, q, pulse, sink


def _locked(fn):
    micropython.heap_lock()
    try:
        return fn()
    finally:
        micropython.heap_unlock()


def test_timer_handler_allocates_nothing():
    board, sampler, ring, _events, _batcher, _q, _pulse, _sink = _rig()
    for s in board.latches:
        s.latch()
    sampler.on_tick(None)  # warm up

    def many():
        i = 0
        while i < 40:
            sampler.on_tick(None)
            i += 1

    _locked(many)
    assert ring.count() == 41
    # values really come from the simulated MPU-6050 registers (az ~ +1 g = 16384 LSB)
    az = ring.vals[2]
    assert 12000 < az < 21000, az


def test_pin_handler_allocates_nothing():
    _board, _sampler, _ring, events, _batcher, _q, pulse, _sink = _rig()
    pulse.on_edge(None)

    def many():
        i = 0
        while i < 10:
            pulse.on_edge(None)
            i += 1

    _locked(many)
    assert events.count() == 11
    assert pulse.count == 11


def test_overruns_counted_not_fatal():
    _board, sampler, ring, events, _batcher, _q, pulse, _sink = _rig(rows=8, batch=4)

    def flood():
        i = 0
        while i < 20:
            sampler.on_tick(None)
            i += 1
        i = 0
        while i < 30:
            pulse.on_edge(None)
            i += 1

    _locked(flood)
    assert ring.count() == 7  # one slot stays free
    assert ring.overruns == 13
    assert events.overruns == 30 - 15
    assert sampler.overruns() == 13


def test_data_path_allocates_nothing():
    _board, sampler, _ring, _events, batcher, q, _pulse, _sink = _rig(rows=64, batch=16)
    # warm up: first frame of each start row creates the cached views
    n = 0
    while n < 64 * 3:
        sampler.on_tick(None)
        batcher.drain()
        q.ack(7, 0, 1 << 30)
        n += 1
    made = batcher.frames

    def run():
        i = 0
        while i < 64:
            sampler.on_tick(None)
            batcher.drain()
            i += 1

    _locked(run)
    assert batcher.frames == made + 4
    # the frames in the queue decode with the right shape
    got = q.next_frame()
    f = decode(bytes(got))
    assert f.fields["nsamples"] == 16 and f.fields["nchannels"] == 8
    assert f.boot == 7


def test_deferred_capture_on_hard_irq_ports():
    # RP2040: timer callbacks are hard IRQs; I2C reads are deferred with schedule
    board, sampler, ring, _events, _batcher, _q, _pulse, _sink = _rig()
    s2 = Sampler(ring, sampler.readers, board.clock, 100, True, micropython.schedule)
    assert s2.deferred

    def tick():
        s2.on_tick(None)
        i = 0
        while i < 100:  # scheduled callbacks run at the VM's pending checks
            i += 1

    tick()
    _locked(tick)
    assert ring.count() == 2


def test_ring_encoder_matches_protocol_encoder():
    # one C-level copy instead of a per-value loop, same bytes as shared_protocol's
    from array import array

    ref = DataEncoder(6, 32, 1, 77)
    fast = RingDataEncoder(6, 32, 1, 77)
    assert fast.fast
    vals = array("h", [((i * 7919) % 65536) - 32768 for i in range(6 * 64)])
    mv = memoryview(vals)
    for ns in (1, 5, 31, 32):
        for off in (0, 6 * 7, 6 * 32):
            n1 = ref.encode(3, 99 + ns, 123456, 10000, mv[off:], ns)
            n2 = fast.encode(3, 99 + ns, 123456, 10000, mv[off:], ns)
            assert n1 == n2 and bytes(ref.frame) == bytes(fast.frame), (ns, off)
    view = mv[6 * 7 :]

    def again():
        fast.encode(4, 1, 2, 10000, view, 31)

    _locked(again)
    # delta coding goes through the parent and still round-trips
    n = fast.encode(1, 2, 3, 10000, mv, 4, 2)
    f = decode(bytes(fast.frame[:n]))
    assert f.fields["raw"] == list(vals[:24])


def _imu_rig(rows):
    board = simboard.SimBoard()
    imu = MPU6050(board.make_i2c(0, -1, -1, 400000))
    imu.init()
    ring = SampleRing(rows, 6)
    return board, imu, ring, Sampler(ring, [imu], board.clock, 100, False, None)


def test_native_handler_matches_bytecode_handler():
    # sampler_fast.py (viper emitter, lone MPU-6050 read directly) against the
    # bytecode Sampler.on_tick it replaces: same rows, gaps, counters and jitter,
    # across an overrun and the wrap of the clock's ticks; allocation-free.
    assert hasattr(Sampler, "py_on_tick"), "viper handler not installed on the unix port"
    mask = 0x3FFFFFFF  # the sim clock's ticks_us period is 2**30, as on a board
    rigs = [_imu_rig(8), _imu_rig(8)]
    handlers = [rigs[0][3].on_tick, rigs[1][3].py_on_tick]
    assert rigs[0][3]._burst is not None
    start = mask + 1 - 25000  # 2.5 periods before the wrap
    offsets = (0, 10150, 19900, 30000, 40700, 50000, 250000, 260000, 270003, 280000, 290000, 300000)

    def run(k):
        board, _imu, ring, sampler = rigs[k]
        clock = board.clock
        clock.frozen = start
        sampler.restart()
        i = 0
        while i < len(offsets):
            clock.frozen = start + offsets[i] + 10000
            for s in board.latches:
                s.latch()
            if i == 9:
                ring.tail = ring.head  # the main loop drained the ring
            handlers[k](None)
            i += 1

    run(0)
    run(1)
    a, b = rigs[0], rigs[1]
    assert list(a[2].vals) == list(b[2].vals)
    assert bytes(a[2].gap) == bytes(b[2].gap)
    assert a[2].head == b[2].head and a[2].overruns == b[2].overruns > 0, (a[2].head, b[2].head, a[2].overruns)
    assert a[3].samples == b[3].samples and a[3].slips == b[3].slips > 0, (a[3].samples, b[3].samples, a[3].slips)
    assert a[3].jitter_max == b[3].jitter_max > 0, (a[3].jitter_max, b[3].jitter_max)
    assert a[3]._due == b[3]._due
    assert 12000 < a[2].vals[2] < 21000  # az ~ +1 g from the simulated registers
    # the deferred read (hard-IRQ ports) stores the same row with the given stamp
    for k in (0, 1):
        rigs[k][2].tail = rigs[k][2].head
        (rigs[k][3].capture if k == 0 else rigs[k][3].py_capture)(123456)
    assert list(a[2].vals) == list(b[2].vals) and list(a[2].ticks) == list(b[2].ticks)
    assert a[2].ticks[(a[2].head - 1) % 8] == 123456 and a[3].samples == b[3].samples
    ring = a[2]
    ring.tail = ring.head
    tick = a[3].on_tick

    def many():
        i = 0
        while i < 12:  # fills the ring (7 rows) and overruns
            tick(None)
            i += 1

    _locked(many)
    assert ring.count() == 7


def test_native_handler_counts_i2c_errors():
    _board, imu, ring, sampler = _imu_rig(8)
    imu.addr = 0x69  # nothing answers there: ENODEV
    sampler._burst = imu.burst()
    _locked(lambda: sampler.on_tick(None))
    assert imu.errors == 1 and ring.count() == 1
