# CircuitPython's `countio`: Counter counts edges of a pin in the background (here: the
# edges of a simulated pulse train up to the moment `count` is read).
import digitalio
from _cpsim import EdgeTrain, now_us


class Edge:
    RISE = "RISE"
    FALL = "FALL"
    RISE_AND_FALL = "RISE_AND_FALL"


class Counter:
    def __init__(self, pin, *, edge=Edge.FALL, pull=None):
        if edge not in (Edge.RISE, Edge.FALL, Edge.RISE_AND_FALL):
            raise TypeError("edge must be an Edge")
        if pull not in (None, digitalio.Pull.UP, digitalio.Pull.DOWN):
            raise TypeError("pull must be a Pull or None")
        pin.claim(self)
        self.pin = pin
        self.edge = edge
        self._train = EdgeTrain(pin.n, getattr(pin, "sim_hz", 5.0))
        self._count = 0

    def _update(self):
        t = now_us()
        e = self.edge
        while True:
            ev = self._train.advance(t)
            if ev is None:
                return
            lvl = ev[1]
            if e == Edge.RISE_AND_FALL or (lvl and e == Edge.RISE) or (not lvl and e == Edge.FALL):
                self._count += 1

    @property
    def count(self):
        self._update()
        return self._count

    @count.setter
    def count(self, v):
        self._update()
        self._count = v

    def reset(self):
        self.count = 0

    def deinit(self):
        self.pin.release()
