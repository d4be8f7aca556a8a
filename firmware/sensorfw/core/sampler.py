# Periodic capture into the preallocated SampleRing, built for soft timer callbacks.
#
# On ESP32 every machine.Timer callback is scheduled (soft), and so it is on the Pico W
# unless asked otherwise: callbacks wait in MicroPython's scheduler queue (depth 8),
# run late while the main loop is inside C code (blocking socket calls service them
# only every 100 ms on esp32, flash erase and GC not at all) and are dropped, unseen,
# when the queue is full. So a timer tick cannot be trusted to be on time or to arrive
# at all (docs/firmware.md, "Port facts"). Two ways of sampling follow from that:
#
# - With an MPU-6050 the sensor paces the rows: it samples into its own FIFO at the
#   configured rate, and a slower timer (tens of Hz) drains whatever the FIFO holds.
#   A late or dropped drain tick loses nothing; only a FIFO overflow does, and that is
#   detected, counted and marked as a gap. Other channels in the same row (ADC, pulse)
#   are read at drain time, once per row, so they lag the IMU rows by up to one drain
#   interval.
# - Without one, each tick reads every channel. Rows are stamped with the time they
#   were really read, and each row is kept only in its own slot of the sample grid
#   (within half a period of its intended time): a tick that comes too early for the
#   next slot (a stale queued one) is skipped, and slots that passed without a row are
#   counted as missed and marked as a gap. A DATA frame never spans a gap (the batcher
#   cuts there), so its evenly spaced timestamps are true to within one period.
#
# The callbacks allocate nothing (bound methods are made once in __init__).


class Sampler:
    """readers: driver objects with `.width` and `.read(vals, offset)`; at most one
    with a FIFO (`fifo_count`/`fifo_read`, the MPU-6050). clock: ticks_ms/ticks_us/
    ticks_diff/ticks_add (the `time` module, or the simulated clock)."""

    def __init__(self, ring, readers, clock, rate_hz):
        width = 0
        self.fifo = None
        self.fifo_off = 0
        for r in readers:
            if hasattr(r, "fifo_count"):
                if self.fifo is not None:
                    raise ValueError("only one FIFO sensor (MPU-6050) per device")
                self.fifo = r
                self.fifo_off = width
            width += r.width
        if width != ring.width:
            raise ValueError("readers give %d values per row, ring holds %d" % (width, ring.width))
        self.ring = ring
        self.readers = tuple(readers)
        others = []
        offs = []
        off = 0
        for r in readers:
            if r is not self.fifo:
                others.append(r)
                offs.append(off)
            off += r.width
        self.others = tuple(others)
        self.other_offs = tuple(offs)
        self.clock = clock
        self._ticks_us = clock.ticks_us
        self._ticks_ms = clock.ticks_ms
        self._ticks_diff = clock.ticks_diff
        self._ticks_add = clock.ticks_add
        self.irq_ref = self.on_tick if self.fifo is None else self.on_drain  # bound once
        self.period_us = 0
        self.timer_hz = 0
        self._due = 0
        self._last_drain = 0
        self.samples = 0
        self.missed = 0  # sample slots without a row: dropped ticks, FIFO overflows
        self.slips = 0  # gaps marked in the ring (each ends a DATA frame)
        self.stale = 0  # queued ticks that came too late for their slot (skipped)
        self.jitter_max = 0  # worst |actual - intended| row time in us since last reset
        self.set_rate(rate_hz)

    def set_rate(self, rate_hz):
        if not (0 < rate_hz <= 10000):
            raise ValueError("sample rate must be in (0, 10000] Hz, got %r" % (rate_hz,))
        self.rate_hz = rate_hz
        self.period_us = int(1000000 / rate_hz + 0.5)
        if self.fifo is not None:
            self.fifo.set_rate(rate_hz)  # resets the FIFO: what follows is a new run
            self.ring._lost = True
            self.timer_hz = drain_hz(self.period_us)
        else:
            self.timer_hz = rate_hz
        self.restart()

    def restart(self):
        # Intended time of the next row: one period from now.
        self._due = self._ticks_add(self._ticks_us(), self.period_us)
        self._last_drain = self._ticks_us()

    # ------------------------------------------------------------------ timer-paced
    def on_tick(self, _timer=None):
        """Timer callback without a FIFO sensor: one row per sample slot."""
        now = self._ticks_us()
        p = self.period_us
        half = p >> 1
        d = self._ticks_diff(now, self._due)
        if d < -half:
            self.stale += 1  # a queued tick whose slot already has its row
            return
        if d >= half:
            # slots passed without a row (ticks dropped or held up): count, cut the frame
            self.missed += (d + half) // p
            self.ring._lost = True
            self._due = now
            d = 0
        elif d < 0:
            d = -d
        self.jitter_max = max(self.jitter_max, d)
        self._due = self._ticks_add(self._due, p)
        ring = self.ring
        h = ring.begin()
        if h < 0:
            return  # ring full: counted by the ring
        self._read_others(ring.vals, h * ring.width)  # no FIFO sensor: all of them
        ring.commit(self._ticks_ms())
        self._count(1)

    # ------------------------------------------------------------------ FIFO-paced
    def on_drain(self, _timer=None):
        """Timer callback with a FIFO sensor: move every complete sample into the ring."""
        fifo = self.fifo
        now = self._ticks_us()
        n = fifo.fifo_count()
        if n < 0:
            self._lost(n, now)
            return
        self._last_drain = now
        if n == 0:
            return
        ring = self.ring
        width = ring.width
        p = self.period_us
        # the newest sample was taken about now; the FIFO holds the n before it, evenly
        # spaced by the sensor's clock
        stamp = self._ticks_ms()
        i = 0
        while i < n:
            h = ring.head
            run = ring.tail - h - 1 if ring.tail > h else ring.rows - h - (1 if ring.tail == 0 else 0)
            if run <= 0:
                # ring full: the rest waits in the FIFO (an overflow there is counted from
                # the newest row taken, not from now)
                self._last_drain = self._ticks_add(now, -(n - i) * p)
                return
            k = n - i
            k = min(k, run)
            k = min(k, FIFO_CHUNK)
            got = fifo.fifo_read(ring.vals, h * width + self.fifo_off, width, k)
            if got < 0:
                self._lost(got, now)
                return
            # stamp the k rows: row j of this burst was taken (n - 1 - i - j) periods ago
            ticks = ring.ticks
            gap = ring.gap
            add = self._ticks_add
            back = (n - 1 - i) * p
            row = h
            end = h + k
            while row < end:
                ticks[row] = add(stamp, -(back // 1000))
                gap[row] = 0
                back -= p
                row += 1
            if self.others:
                row = h
                while row < end:
                    self._read_others(ring.vals, row * width)
                    row += 1
            if ring._lost:
                ring.gap[h] = 1
                ring._lost = False
            nh = h + k
            ring.head = 0 if nh == ring.rows else nh
            i += k
            self._count(k)

    def _lost(self, code, now):
        # -1: the driver reset the FIFO (overflow, or a resync after a failed read):
        # after it the sample boundaries cannot be trusted, so everything since the
        # last drain is gone; -2: an I2C error (counted by the driver), the samples
        # wait in the FIFO. Either way the next row starts a new DATA frame.
        if code == -1:
            lost = self._ticks_diff(now, self._last_drain) // self.period_us
            self.missed += lost if lost > 0 else 1
            self._last_drain = now
        self.ring._lost = True

    def _read_others(self, vals, row_off):
        # the channels without a FIFO, read now and held for the rows of this drain
        others = self.others
        offs = self.other_offs
        i = 0
        while i < len(others):
            others[i].read(vals, row_off + offs[i])
            i += 1

    def _count(self, k):
        n = self.samples + k
        if n > 0x3FFFFFFF:
            n = 0  # stays a small int on 32-bit ports
        self.samples = n

    def fifo_overflows(self):
        return 0 if self.fifo is None else self.fifo.overflows

    def overruns(self):
        return self.ring.overruns + self.missed


FIFO_SAMPLES = 85  # 1024-byte FIFO / 12 bytes per accel+gyro sample
FIFO_CHUNK = 32  # samples per I2C burst


def drain_hz(period_us):
    """Drain the FIFO every 50 ms, or sooner when it would be a quarter full by then:
    20-100 scheduler slots a second, rows reach the batcher within 50 ms, and a drain
    tick may be late or dropped for ~3/4 of the FIFO's span (1.3 s at 50 Hz) before a
    single sample is lost."""
    ms = FIFO_SAMPLES * period_us // 4000
    ms = min(ms, 50)
    ms = max(ms, 10)
    return 1000 // ms
