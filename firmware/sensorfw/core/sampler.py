# Periodic capture: a timer interrupt reads every periodic sensor into one ring row.
#
# Interrupt rules (docs/firmware.md): the handler stores ticks and values into the
# preallocated SampleRing, counts overruns and returns. It allocates nothing: no
# floats, no slices, no bound methods (the callbacks are bound once in __init__).
# Readers that may not run in a hard interrupt (I2C) are deferred with
# micropython.schedule when the port delivers timer callbacks as hard interrupts.


class Sampler:
    """Owns the sample ring row layout and the timer callback.

    readers: driver objects with `.width`, `.needs_soft` and `.read(vals, offset)`.
    clock: object with ticks_ms/ticks_us/ticks_diff/ticks_add (the `time` module on
    boards, the simulated clock on the sim board).
    schedule: micropython.schedule, or None where the callback is already soft.
    """

    def __init__(self, ring, readers, clock, rate_hz, hard_irq=False, schedule=None):  # noqa: PLR0917
        width = 0
        soft = False
        for r in readers:
            width += r.width
            if r.needs_soft:
                soft = True
        if width != ring.width:
            raise ValueError("readers give %d values per row, ring holds %d" % (width, ring.width))
        self.ring = ring
        self.readers = tuple(readers)
        self.nreaders = len(readers)
        self.clock = clock
        self._ticks_us = clock.ticks_us
        self._ticks_ms = clock.ticks_ms
        self._ticks_diff = clock.ticks_diff
        self._ticks_add = clock.ticks_add
        # Defer to micropython.schedule only where the handler is hard and a reader
        # needs a soft context (I2C on RP2040).
        self.deferred = bool(hard_irq and soft and schedule is not None)
        self._schedule = schedule
        self._pending = False
        self._stamp_ms = 0
        self._run_ref = self._run_deferred  # bound once: schedule() then allocates nothing
        self.irq_ref = self.on_tick
        self.period_us = 0
        self._due = 0
        self.samples = 0
        self.sched_overruns = 0
        self.slips = 0
        self.jitter_max = 0  # worst |actual - intended| tick in us since last reset
        # ticks arithmetic inlined by the viper handler: period of the clock's ticks
        self._tmask = clock.ticks_add(0, -1)
        self._thalf = (self._tmask + 1) >> 1
        # a lone register-burst reader (MPU6050.burst): (read_into, addr, reg, buf, skip),
        # read and unpacked by the viper handler itself
        self._burst = None
        if self.nreaders == 1 and hasattr(self.readers[0], "burst"):
            self._burst = self.readers[0].burst()
        self.set_rate(rate_hz)

    def set_rate(self, rate_hz):
        if not (0 < rate_hz <= 10000):
            raise ValueError("sample rate must be in (0, 10000] Hz, got %r" % (rate_hz,))
        self.rate_hz = rate_hz
        self.period_us = int(1000000 / rate_hz + 0.5)
        self._slip_us = 16 * self.period_us
        self.restart()

    def restart(self):
        # Intended time of the next tick: one period from now.
        self._due = self._ticks_add(self._ticks_us(), self.period_us)

    def on_tick(self, _timer=None):
        """Timer callback (hard or soft). Allocates nothing."""
        now = self._ticks_us()
        due = self._due
        d = self._ticks_diff(now, due)
        if d < 0:
            d = -d
        if d > self._slip_us:
            # Lost track (timer re-armed, sim catch-up gap): re-anchor, count a slip.
            self.slips += 1
            due = now
        elif d > self.jitter_max:
            self.jitter_max = d
        self._due = self._ticks_add(due, self.period_us)
        if self.deferred:
            if self._pending:
                self.sched_overruns += 1
                return
            self._pending = True
            self._stamp_ms = self._ticks_ms()
            try:
                self._schedule(self._run_ref, 0)
            except RuntimeError:
                # schedule queue full: this sample is lost, counted
                self._pending = False
                self.sched_overruns += 1
            return
        # capture() inlined: this is the hot path of every sample (soft IRQ ports)
        ring = self.ring
        h = ring.head
        nxt = h + 1
        if nxt == ring.rows:
            nxt = 0
        if nxt == ring.tail:
            ring.begin()  # counts the overrun
            return
        if ring._lost:
            ring.gap[h] = 1
            ring._lost = False
        else:
            ring.gap[h] = 0
        if self.nreaders == 1:
            self.readers[0].read(ring.vals, h * ring.width)
        else:
            self._read_all(ring.vals, h * ring.width)
        ring.ticks[h] = self._ticks_ms()
        ring.head = nxt
        n = self.samples + 1
        if n > 0x3FFFFFFF:
            n = 0
        self.samples = n

    def _run_deferred(self, _arg):
        self._pending = False
        self.capture(self._stamp_ms)

    def capture(self, ticks):
        """Read every reader into one ring row stamped `ticks`. Allocates nothing.
        (SampleRing.begin/commit inlined: this runs once per sample.)"""
        ring = self.ring
        h = ring.head
        nxt = h + 1
        if nxt == ring.rows:
            nxt = 0
        if nxt == ring.tail:
            ring.begin()  # counts the overrun
            return
        if ring._lost:
            ring.gap[h] = 1
            ring._lost = False
        else:
            ring.gap[h] = 0
        if self.nreaders == 1:
            self.readers[0].read(ring.vals, h * ring.width)
        else:
            self._read_all(ring.vals, h * ring.width)
        ring.ticks[h] = ticks
        ring.head = nxt
        n = self.samples + 1
        if n > 0x3FFFFFFF:
            n = 0  # stays a small int on 32-bit ports
        self.samples = n

    def _read_all(self, vals, off):
        readers = self.readers
        i = 0
        while i < self.nreaders:
            r = readers[i]
            r.read(vals, off)
            off += r.width
            i += 1

    def overruns(self):
        return self.ring.overruns + self.sched_overruns


try:  # the viper copies of the handlers (sampler_fast.py)
    from sensorfw.core import sampler_fast as _fast

    Sampler.py_on_tick = Sampler.on_tick  # the bytecode versions, for the equivalence test
    Sampler.py_capture = Sampler.capture
    Sampler.on_tick = _fast.on_tick
    Sampler.capture = _fast.capture
except (ImportError, AttributeError, SyntaxError, ValueError):  # no viper emitter here
    pass
