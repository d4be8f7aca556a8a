# CircuitPython's `analogio.AnalogIn`: value 0..65535 from a slow sine plus noise
# (sensorfw/boards/sim_signals.Analog), one step per read.
from _cpsim import SEED
from sensorfw.boards.sim_signals import Analog


class AnalogIn:
    def __init__(self, pin):
        pin.claim(self)
        self.pin = pin
        self._sig = Analog(rate_hz=50.0, seed=SEED + pin.n, period_s=30.0)
        self.reference_voltage = 3.3

    @property
    def value(self):
        return self._sig.read_u16()

    def deinit(self):
        self.pin.release()
