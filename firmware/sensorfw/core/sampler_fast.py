# Viper copies of the Sampler's per-sample handlers: the timer callback runs once
# per sample, and the viper emitter turns its integer bookkeeping (jitter, ring
# indices, counters) into machine instructions and its ring stores into raw memory
# writes. Same logic, same ring layout, allocation-free, as Sampler.on_tick /
# Sampler.capture (sampler.py: the fallback on runtimes without the native emitters,
# e.g. CircuitPython and CPython), which Sampler replaces by these at import.
# tests/upy/test_fw_alloc.py runs both on the same inputs and compares them.
#
# Integers: ticks and counters stay below 2**30 on the boards (and below 2**62 on
# the 64-bit unix port), so they fit a machine word and a small int both ways.
import micropython


@micropython.viper
def on_tick(self, _timer):
    now = int(self._ticks_us())
    due = int(self._due)
    mask = int(self._tmask)
    half = int(self._thalf)
    d = ((now - due + half) & mask) - half  # ticks_diff(now, due)
    if d < 0:
        d = 0 - d
    if d > int(self._slip_us):
        self.slips = int(self.slips) + 1  # lost track: re-anchor, count a slip
        due = now
    elif d > int(self.jitter_max):
        self.jitter_max = d
    self._due = (due + int(self.period_us)) & mask  # ticks_add(due, period)
    if self.deferred:
        if self._pending:
            self.sched_overruns = int(self.sched_overruns) + 1
            return
        self._pending = True
        self._stamp_ms = self._ticks_ms()
        try:
            self._schedule(self._run_ref, 0)
        except RuntimeError:  # schedule queue full: this sample is lost, counted
            self._pending = False
            self.sched_overruns = int(self.sched_overruns) + 1
        return
    ring = self.ring
    h = int(ring.head)
    nxt = h + 1
    if nxt == int(ring.rows):
        nxt = 0
    if nxt == int(ring.tail):
        ring.begin()  # counts the overrun
        return
    gap = ptr8(ring.gap)  # noqa: F821 - viper pointer type
    if ring._lost:
        gap[h] = 1
        ring._lost = False
    else:
        gap[h] = 0
    w = int(ring.width)
    off = h * w
    burst = self._burst
    if burst:
        # a lone register-burst sensor (MPU-6050): read and unpack it here
        buf = burst[3]
        try:
            burst[0](burst[1], burst[2], buf)
        except OSError:  # counted; the previous values of the buffer repeat
            r = self.readers[0]
            r.errors = int(r.errors) + 1
        src = ptr8(buf)  # noqa: F821 - viper pointer type
        dst = ptr16(ring.vals)  # noqa: F821 - stores the low 16 bits: int16 again
        skip = int(burst[4])
        i = 0
        j = 0
        while i < w:
            if i == skip:
                j += 2
            dst[off + i] = (src[j] << 8) | src[j + 1]
            i += 1
            j += 2
    elif int(self.nreaders) == 1:
        self.readers[0].read(ring.vals, off)
    else:
        self._read_all(ring.vals, off)
    ptr32(ring.ticks)[h] = int(self._ticks_ms())  # noqa: F821 - viper pointer type
    ring.head = nxt
    n = int(self.samples) + 1
    if n > 0x3FFFFFFF:
        n = 0
    self.samples = n


@micropython.viper
def capture(self, ticks):
    # the deferred read (micropython.schedule on hard-IRQ ports): on_tick's second
    # half, stamped with the tick's time
    ring = self.ring
    h = int(ring.head)
    nxt = h + 1
    if nxt == int(ring.rows):
        nxt = 0
    if nxt == int(ring.tail):
        ring.begin()  # counts the overrun
        return
    gap = ptr8(ring.gap)  # noqa: F821 - viper pointer type
    if ring._lost:
        gap[h] = 1
        ring._lost = False
    else:
        gap[h] = 0
    w = int(ring.width)
    off = h * w
    burst = self._burst
    if burst:
        # a lone register-burst sensor (MPU-6050): read and unpack it here
        buf = burst[3]
        try:
            burst[0](burst[1], burst[2], buf)
        except OSError:  # counted; the previous values of the buffer repeat
            r = self.readers[0]
            r.errors = int(r.errors) + 1
        src = ptr8(buf)  # noqa: F821 - viper pointer type
        dst = ptr16(ring.vals)  # noqa: F821 - stores the low 16 bits: int16 again
        skip = int(burst[4])
        i = 0
        j = 0
        while i < w:
            if i == skip:
                j += 2
            dst[off + i] = (src[j] << 8) | src[j + 1]
            i += 1
            j += 2
    elif int(self.nreaders) == 1:
        self.readers[0].read(ring.vals, off)
    else:
        self._read_all(ring.vals, off)
    ptr32(ring.ticks)[h] = int(ticks)  # noqa: F821 - viper pointer type
    ring.head = nxt
    n = int(self.samples) + 1
    if n > 0x3FFFFFFF:
        n = 0
    self.samples = n
