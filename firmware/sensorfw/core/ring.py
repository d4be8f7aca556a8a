# Preallocated ring buffers filled by interrupt handlers and drained by the main loop.
#
# Single producer (the handler), single consumer (the main loop): the handler only
# moves `head`, the main loop only moves `tail`, so no lock is needed. Nothing here
# allocates after __init__ (no floats, no slices, no new objects): the handler-side
# methods run under micropython.heap_lock().

from array import array

_SIZES = {"b": 1, "B": 1, "h": 2, "H": 2, "i": 4, "I": 4}


def zeros(typecode, n):
    """array of n zeros without building a list (MicroPython copies the raw bytes)."""
    try:
        return array(typecode, bytes(n * _SIZES[typecode]))
    except TypeError:  # CPython refuses bytes for wide typecodes
        return array(typecode, [0]) * n


class SampleRing:
    """Rows of `width` int16 values, each with a ticks_ms timestamp.

    A writer fills row `slot` through `vals[slot * width + i]` between begin() and
    commit(); begin() returns -1 when the ring is full (the row is dropped and
    counted in `overruns`). The first row written after an overrun is marked in
    `gap`, so the batcher never puts rows from both sides of a hole in one frame.
    """

    def __init__(self, rows, width):
        if rows < 2:
            raise ValueError("ring needs >= 2 rows, got %d" % rows)
        if width < 1:
            raise ValueError("ring width must be >= 1, got %d" % width)
        self.rows = rows
        self.width = width
        self.ticks = zeros("i", rows)
        self.vals = zeros("h", rows * width)
        self.gap = bytearray(rows)
        self.head = 0  # next row to write (handler)
        self.tail = 0  # next row to read (main loop)
        self.overruns = 0
        self._lost = False

    def begin(self):
        """Slot of the next free row, or -1 (overrun counted) when full."""
        h = self.head
        nxt = h + 1
        if nxt == self.rows:
            nxt = 0
        if nxt == self.tail:
            n = self.overruns + 1
            if n > 0x3FFFFFFF:
                n = 0
            self.overruns = n
            self._lost = True
            return -1
        if self._lost:
            self.gap[h] = 1
            self._lost = False
        else:
            self.gap[h] = 0
        return h

    def commit(self, ticks):
        """Publish the row begun last, stamped with ticks (ticks_ms)."""
        h = self.head
        self.ticks[h] = ticks
        h += 1
        if h == self.rows:
            h = 0
        self.head = h

    def count(self):
        n = self.head - self.tail
        if n < 0:
            n += self.rows
        return n

    def clear(self):
        self.tail = self.head


class EventRing:
    """(channel, ticks_ms, int32 value) records from pin interrupts."""

    def __init__(self, capacity):
        if capacity < 2:
            raise ValueError("event ring needs >= 2 entries, got %d" % capacity)
        self.capacity = capacity
        self.channels = bytearray(capacity)
        self.ticks = zeros("i", capacity)
        self.values = zeros("i", capacity)
        self.head = 0
        self.tail = 0
        self.overruns = 0

    def put(self, channel, ticks, value):
        """Store one event; False (and an overrun counted) when full. Allocates nothing."""
        h = self.head
        nxt = h + 1
        if nxt == self.capacity:
            nxt = 0
        if nxt == self.tail:
            n = self.overruns + 1
            if n > 0x3FFFFFFF:
                n = 0
            self.overruns = n
            return False
        self.channels[h] = channel
        self.ticks[h] = ticks
        self.values[h] = value
        self.head = nxt
        return True

    def count(self):
        n = self.head - self.tail
        if n < 0:
            n += self.capacity
        return n
