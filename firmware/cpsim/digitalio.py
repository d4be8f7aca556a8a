# CircuitPython's `digitalio`: DigitalInOut with Direction and Pull. Outputs record their
# level changes (with supervisor ticks) for tests: `history`. An input reads its pull's
# level, or low while held to ground (EDGELINE_SIM_HELD_PINS "0,15": GPIO numbers).
import supervisor
from _cpsim import env

HELD = [int(x) for x in env("EDGELINE_SIM_HELD_PINS", "").split(",") if x]


class Direction:
    INPUT = "INPUT"
    OUTPUT = "OUTPUT"


class Pull:
    UP = "UP"
    DOWN = "DOWN"


class DriveMode:
    PUSH_PULL = "PUSH_PULL"
    OPEN_DRAIN = "OPEN_DRAIN"


OUTPUTS = []


class DigitalInOut:
    def __init__(self, pin):
        pin.claim(self)
        self.pin = pin
        self._direction = Direction.INPUT
        self._value = False
        self.pull = None
        self.history = []

    @property
    def direction(self):
        return self._direction

    @direction.setter
    def direction(self, d):
        if d not in (Direction.INPUT, Direction.OUTPUT):
            raise TypeError("direction must be a Direction")
        self._direction = d
        if d == Direction.OUTPUT and self not in OUTPUTS:
            OUTPUTS.append(self)

    def switch_to_output(self, value=False, drive_mode=DriveMode.PUSH_PULL):
        self.direction = Direction.OUTPUT
        self.value = value

    def switch_to_input(self, pull=None):
        self._direction = Direction.INPUT
        self.pull = pull

    @property
    def value(self):
        if self._direction == Direction.INPUT:
            return self.pin.n not in HELD and self.pull == Pull.UP
        return self._value

    @value.setter
    def value(self, v):
        if self._direction != Direction.OUTPUT:
            raise AttributeError("Cannot set value when direction is input.")
        v = bool(v)
        if v != self._value or not self.history:
            self.history.append((supervisor.ticks_ms(), 1 if v else 0))
            del self.history[:-32]
        self._value = v

    def deinit(self):
        self.pin.release()
