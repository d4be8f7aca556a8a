# Simulated GPIO pins and ADC channels of the simulation board (loaded on first use).


class SimPin:
    IN = 0
    OUT = 1
    IRQ_RISING = 1
    IRQ_FALLING = 2

    def __init__(self, board, pin_id, mode=0):
        self.board = board
        self.id = pin_id
        self.mode = mode
        self.level = 0
        self.handler = None
        self.trigger = 0
        self.gen = None  # sim_signals.Pulses for driven inputs
        self.next_edge = -1
        self.history = []

    def value(self, v=None):
        if v is None:
            return self.level
        self.level = 1 if v else 0
        if self.mode == SimPin.OUT:
            self.history.append((self.board.clock.ticks_ms(), self.level))
            if len(self.history) > 32:
                self.history.pop(0)
            if self.board.verbose:
                print("[sim] pin %d -> %d" % (self.id, self.level))

    def irq(self, handler=None, trigger=3, hard=False):
        self.handler = handler
        self.trigger = trigger

    def _edge(self, level):
        self.level = level
        h = self.handler
        if h is None:
            return
        if (level and self.trigger & 1) or (not level and self.trigger & 2):
            h(self)


class SimADC:
    def __init__(self, gen):
        self.gen = gen
        self.value = 32768

    def latch(self):
        self.value = self.gen.read_u16()

    def read_u16(self):
        return self.value  # latched before the timer tick: allocation-free
