# The simulation board's Wi-Fi station and watchdog (boards/sim.py builds them): both
# keep simulated time from the board's clock (board.sclock).
import time


class SimWLAN:
    """network.WLAN(STA_IF): a join takes EDGELINE_SIM_WIFI_JOIN_MS of simulated time
    after connect(); the link-down windows take the association away."""

    def __init__(self, board, join_ms, windows):
        self.board = board
        self.join_us = join_ms * 1000
        self.windows = windows
        # active and joining from power-on, as after a boot.py that starts the station
        self._active = True
        self._joined_at = self.join_us  # virtual us when the join completes; -1 = not joining
        self.joins = 1

    def active(self, flag=None):
        if flag is None:
            return self._active
        self._active = bool(flag)
        if not flag:
            self._joined_at = -1
        return None

    def connect(self, ssid=None, key=None):
        if not self._active:
            raise OSError("STA must be active")
        if self._joined_at < 0:
            self._joined_at = self.board.sclock.now_us() + self.join_us
            self.joins += 1

    def disconnect(self):
        self._joined_at = -1

    def down(self):
        if self.windows:
            t = self.board.sclock.now_us() // 1000000
            for a, b in self.windows:
                if a <= t < b:
                    return True
        return False

    def isconnected(self):
        return self._active and 0 <= self._joined_at <= self.board.sclock.now_us() and not self.down()

    def status(self, param=None):
        if param == "rssi":
            return -55
        return 1010 if self.isconnected() else 1001

    def config(self, *args, **kw):
        return None


class SimWDT:
    """machine.WDT: feeds counted in simulated time (lightsleep checks it); a thread ends
    the process (kill -9, as a reset) when the main loop stops feeding in real time."""

    def __init__(self, board, timeout_ms):
        from sensorfw.boards.sim_extras import watch_thread

        self.board = board
        self.timeout = timeout_ms
        self.fed_us = board.sclock.now_us()
        self.fed = time.ticks_ms()
        watch_thread(self)

    def feed(self):
        self.fed = time.ticks_ms()
        self.fed_us = self.board.sclock.now_us()
