# Pulse / event input on a GPIO pin (Pin.irq): flow meters, PIR, buttons.
#
# mode "count": the interrupt counts edges; the DATA channel carries the edges seen
#               per sample period (flow meter, anemometer).
# mode "event": every accepted edge also becomes an EVENT record (channel, ticks,
#               pin level); the DATA channel carries the pin level (PIR, button).
# debounce_ms drops edges closer than that to the last accepted one.
# The handler allocates nothing: it may run as a hard interrupt.

_COUNT_MASK = 0x1FFFFFFF


class PulseInput:
    width = 1
    needs_soft = False

    def __init__(self, pin, name, clock, mode="count", debounce_ms=0, unit=None):  # noqa: PLR0917
        if mode not in ("count", "event"):
            raise ValueError("pulse mode must be 'count' or 'event', got %r" % (mode,))
        self.pin = pin
        self._value = pin.value  # bound once
        self.name = name
        self.mode = mode
        self.is_event = mode == "event"
        self.debounce_ms = debounce_ms
        self.unit = unit or ("pulses" if mode == "count" else "level")
        self._ticks_ms = clock.ticks_ms
        self._ticks_diff = clock.ticks_diff
        self.count = 0
        self._seen = 0
        self._last = 0
        self._armed = False
        self.events = None
        self.channel = 0
        self.irq_ref = self.on_edge

    def attach(self, events, channel):
        """Event ring and the channel index its EVENT records carry."""
        self.events = events
        self.channel = channel

    def on_edge(self, _pin=None):
        """Pin interrupt handler. Allocates nothing."""
        t = self._ticks_ms()
        if self.debounce_ms and self._armed and self._ticks_diff(t, self._last) < self.debounce_ms:
            return
        self._armed = True
        self._last = t
        c = self.count + 1
        if c > _COUNT_MASK:
            c = 0  # stays a small int on 32-bit ports
        self.count = c
        if self.is_event and self.events is not None:
            self.events.put(self.channel, t, self._value())

    def read(self, vals, off):
        if self.is_event:
            vals[off] = self._value()
            return
        c = self.count
        d = (c - self._seen) & _COUNT_MASK
        self._seen = c
        d = min(d, 32767)
        vals[off] = d

    def channels(self, rate_hz, sample_type):
        return [(self.name, self.unit, 1.0, 0.0, sample_type, rate_hz)]
