# Batching: the main loop drains the rings into DATA and EVENT frames.
#
# DATA frames are encoded straight from the sample ring (no copy): a batch is a run
# of consecutive rows that does not cross the ring's end or an overrun hole, handed
# to DataEncoder through a memoryview cached per start row. With a ring of a whole
# number of batches every frame is full-size except after a hole or a flush.


from sensorfw.core.ring import zeros
from shared_protocol.encode import encode_event

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


_FLAG_DELTA = const(2)
_MARK = b"\x01"
MAX_EVENTS_PER_FRAME = 32
EVENT_BUF_SIZE = 13 + 1 + 9 * MAX_EVENTS_PER_FRAME + 4


class Batcher:
    """ring -> DATA frames, events -> EVENT frames, each handed to `sink`.

    sink: object with `next_seq()`, `boot` and `put_frame(ftype, frame, n)` where
    frame is a memoryview/bytearray holding n bytes of a finished frame.
    """

    def __init__(self, ring, events, encoder, batch, sampler, sink, delta=False):  # noqa: PLR0917
        self.ring = ring
        self.events = events
        self.encoder = encoder
        self.sampler = sampler
        self.sink = sink
        self.delta = delta
        self.frames = 0
        self._views = [None] * ring.rows
        self._vals_mv = memoryview(ring.vals)
        self.set_batch(batch)
        self.ev_channels = bytearray(MAX_EVENTS_PER_FRAME)
        self.ev_ticks = zeros("i", MAX_EVENTS_PER_FRAME)
        self.ev_values = zeros("i", MAX_EVENTS_PER_FRAME)
        self.ev_buf = bytearray(EVENT_BUF_SIZE)
        self.ev_mv = memoryview(self.ev_buf)

    def set_batch(self, batch):
        if not (1 <= batch <= self.encoder.max_samples):
            raise ValueError("batch must be 1..%d samples, got %r" % (self.encoder.max_samples, batch))
        if batch >= self.ring.rows:
            raise ValueError("batch of %d rows needs a ring of more rows (have %d)" % (batch, self.ring.rows))
        self.batch = batch

    def _view(self, row):
        v = self._views[row]
        if v is None:
            v = self._vals_mv[row * self.ring.width :]
            self._views[row] = v
        return v

    def drain(self, flush=False):
        """Encode every complete batch (and with flush=True the partial rest).
        Returns the number of DATA frames produced. Allocates nothing once each
        start row and frame length has been seen."""
        ring = self.ring
        rows = ring.rows
        gap = ring.gap
        batch = self.batch
        made = 0
        while True:
            tail = ring.tail
            head = ring.head
            if head >= tail:
                avail = head - tail
                wrapped = False
            else:
                avail = rows - tail  # the run up to the ring's end is complete
                wrapped = True
            if avail == 0:
                return made
            n = avail if avail < batch else batch
            # cut before the first row that follows an overrun hole (C-level search)
            i = gap.find(_MARK, tail + 1, tail + n)
            cut = i >= 0
            if cut:
                n = i - tail
            if n < batch and not (flush or cut or wrapped):
                return made
            self._emit(tail, n)
            nt = tail + n
            if nt == rows:
                nt = 0
            ring.tail = nt
            made += 1

    def _emit(self, row, n):
        sink = self.sink
        enc = self.encoder
        flags = _FLAG_DELTA if self.delta else 0
        size = enc.encode(
            sink.boot, sink.next_seq(), self.ring.ticks[row], self.sampler.period_us, self._view(row), n, flags
        )
        self.frames += 1
        sink.put_frame(2, enc.frame, size)

    def drain_events(self):
        """Pack pending events (up to 32 per frame) into EVENT frames."""
        ev = self.events
        if ev is None:
            return 0
        made = 0
        while ev.head != ev.tail:
            n = 0
            t = ev.tail
            cap = ev.capacity
            while t != ev.head and n < MAX_EVENTS_PER_FRAME:
                self.ev_channels[n] = ev.channels[t]
                self.ev_ticks[n] = ev.ticks[t]
                self.ev_values[n] = ev.values[t]
                n += 1
                t += 1
                if t == cap:
                    t = 0
            ev.tail = t
            sink = self.sink
            size = encode_event(
                self.ev_buf,
                sink.boot,
                sink.next_seq(),
                self.ev_ticks[0],
                0,
                self.ev_channels,
                self.ev_ticks,
                self.ev_values,
                n,
            )
            sink.put_frame(3, self.ev_mv, size)
            made += 1
        return made
