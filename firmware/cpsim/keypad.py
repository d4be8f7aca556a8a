# CircuitPython's `keypad`: Keys scans pins in the background every `interval` seconds
# and queues debounced press/release events with their supervisor.ticks_ms() timestamp;
# a full queue drops events and sets `overflowed`. Here the pins carry simulated pulse
# trains; an edge is seen at the first scan after it (its timestamp is that scan's).
from _cpsim import EdgeTrain, now_us
from supervisor import ticks_at


class Event:
    def __init__(self, key_number=0, pressed=True):
        self.key_number = key_number
        self.pressed = pressed
        self.timestamp = 0

    @property
    def released(self):
        return not self.pressed


class EventQueue:
    def __init__(self, keys, max_events):
        self._keys = keys
        self._q = []
        self._max = max_events
        self.overflowed = False

    def _put(self, n, pressed, t_us):
        if len(self._q) >= self._max:
            self.overflowed = True
            return
        self._q.append((n, pressed, ticks_at(t_us)))

    def get_into(self, event):
        self._keys._scan()
        if not self._q:
            return False
        event.key_number, event.pressed, event.timestamp = self._q.pop(0)
        return True

    def get(self):
        e = Event()
        return e if self.get_into(e) else None

    def clear(self):
        self._keys._scan()
        self._q = []

    def __len__(self):
        self._keys._scan()
        return len(self._q)


class Keys:
    def __init__(self, pins, *, value_when_pressed, pull=True, interval=0.02, max_events=64, debounce_threshold=1):
        if not 0 < interval <= 1:
            raise ValueError("interval must be 0.0-1.0")
        self._pins = tuple(pins)
        for p in self._pins:
            p.claim(self)
        self._vwp = bool(value_when_pressed)
        self._interval_us = int(interval * 1e6)
        self._trains = [EdgeTrain(p.n, getattr(p, "sim_hz", 5.0)) for p in self._pins]
        self._last_scan = now_us()
        self._state = [False] * len(self._pins)
        self.events = EventQueue(self, max_events)
        self.key_count = len(self._pins)

    def _scan(self):
        t = now_us()
        iv = self._interval_us
        while self._last_scan + iv <= t:
            s = self._last_scan + iv
            self._last_scan = s
            for i, tr in enumerate(self._trains):
                lvl = tr.level
                while True:
                    ev = tr.advance(s)
                    if ev is None:
                        break
                    lvl = ev[1]
                pressed = bool(lvl) == self._vwp
                if pressed != self._state[i]:
                    self._state[i] = pressed
                    self.events._put(i, pressed, s)

    def reset(self):
        self._state = [False] * len(self._pins)

    def deinit(self):
        for p in self._pins:
            p.release()
