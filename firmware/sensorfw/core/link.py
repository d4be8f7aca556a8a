# Link state machine: DOWN -> (backoff) -> CONNECTING -> UP -> DOWN ...
#
# Reconnects with exponential backoff and "equal jitter" (half the delay fixed,
# half random) so a fleet that lost its broker does not reconnect in lockstep.
# Every transport call is bounded by the transport's socket timeout; a failure
# anywhere closes the session and schedules the next attempt.

import random

DOWN = 0
UP = 1


class Link:
    def __init__(self, transport, net, clock, min_ms=1000, max_ms=60000, *, getrandbits=None):
        self.transport = transport
        self.net = net
        self.clock = clock
        self.min_ms = min_ms
        self.max_ms = max_ms
        self.state = DOWN
        self.failures = 0
        self.connects = 0
        self.losses = 0
        self.next_try = clock.ticks_ms()
        self.last_error = None
        # log(msg): told why a connect failed (the first failure of a run of them, a new
        # reason, and the 2nd, 4th, 8th ... repeat), and when the link is up again
        self.log = None
        self._said = None
        # Source of the jitter: getrandbits(n) -> n random bits. Passed in by tests that
        # need the delays to be reproducible; random.getrandbits otherwise.
        self._getrandbits = random.getrandbits if getrandbits is None else getrandbits

    def up(self):
        return self.state == UP

    def delay_ms(self):
        d = self.min_ms
        n = self.failures
        while n > 1 and d < self.max_ms:
            d *= 2
            n -= 1
        d = min(d, self.max_ms)
        half = d // 2
        return half + (self._getrandbits(16) * (d - half) >> 16)

    def try_connect(self, open_session):
        """Attempt a session when the backoff allows it. open_session() does the
        MQTT connect + BIRTH; it raises OSError on failure. Returns True when up."""
        if self.state == UP:
            return True
        now = self.clock.ticks_ms()
        if self.clock.ticks_diff(now, self.next_try) < 0:
            return False
        if not self.net.isconnected():
            self.net.connect()
            self._failed("network not connected")
            return False
        try:
            open_session()
        except OSError as e:
            self.transport.close()
            d = self._failed(e)
            self._tell(e, d)
            return False
        if self._said is not None and self.log is not None:
            self.log("MQTT connected after %d failed attempts" % self.failures)
        self._said = None
        self.state = UP
        self.failures = 0
        self.connects += 1
        return True

    def _tell(self, err, delay):
        if self.log is None:
            return
        n = self.failures
        text = str(err)
        if text != self._said or not (n & (n - 1)):
            self._said = text
            self.log("MQTT connect failed (attempt %d, next in %d ms): %s" % (n, delay, text))

    def retry_now(self):
        """Next attempt at once, backoff reset (the network just came up)."""
        self.failures = 0
        self.next_try = self.clock.ticks_ms()

    def _failed(self, err):
        self.failures += 1
        self.last_error = err
        d = self.delay_ms()
        self.next_try = self.clock.ticks_add(self.clock.ticks_ms(), d)
        return d

    def lost(self, err):
        """The session broke (publish/poll/ping failed)."""
        self.transport.close()
        if self.state == UP:
            self.losses += 1
        self.state = DOWN
        self.failures = 1
        self.last_error = err
        self.next_try = self.clock.ticks_add(self.clock.ticks_ms(), self.delay_ms())
