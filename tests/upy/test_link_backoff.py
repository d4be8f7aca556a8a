# Link backoff (core/link.py) on a fake clock: exponential, "equal jitter", reset, lost().
#
# The unit under test is the state machine, so the clock, the network and the session are
# fakes: the clock moves only when the test moves it and wraps at 2**30 like a board's
# ticks_ms; open_session fails on demand. Delays are measured from the outside: the test
# plays the main loop, calling try_connect at every simulated millisecond, and counts the
# connection attempts. Jitter comes from an injected source (Link(getrandbits=...)), so
# every run is the same: all-zero bits give the fixed half exactly, all-one bits the top
# of the random half, a seeded generator the spread.

from sensorfw.core.link import Link

RUNTIMES = ("micropython", "cpython")

_PERIOD = 1 << 30  # ticks period on ESP32 / RP2040 (ticks stay small ints)
_MASK = _PERIOD - 1
_HALF = _PERIOD // 2

MIN = 100
MAX = 3200
# nominal delay after the 1st, 2nd, ... failure in a row
NOMINAL = (100, 200, 400, 800, 1600, 3200, 3200, 3200, 3200)
# ticks values where the clock starts: the middle, and just before the wrap (the schedule
# crosses it at different steps)
STARTS = (12345, _PERIOD - 1, _PERIOD - 30, _PERIOD - 700, _PERIOD - 6000)


class FakeClock:
    """ticks_ms / ticks_add / ticks_diff as on a board (period 2**30); time moves only
    through advance(). Stricter than a board: a value that is not a ticks value (e.g. a
    deadline computed with + instead of ticks_add) raises instead of being masked."""

    def __init__(self, start=0):
        self.now = start & _MASK

    def advance(self, ms):
        self.now = (self.now + ms) & _MASK

    def ticks_ms(self):
        return self.now

    def ticks_add(self, ticks, delta):
        _check_ticks(ticks)
        if not -_HALF <= delta < _HALF:
            raise OverflowError("ticks interval overflow")
        return (ticks + delta) & _MASK

    def ticks_diff(self, a, b):
        _check_ticks(a)
        _check_ticks(b)
        return ((a - b + _HALF) & _MASK) - _HALF


def _check_ticks(t):
    if not 0 <= t < _PERIOD:
        raise ValueError("not a ticks value: %r" % t)


class FakeNet:
    def __init__(self):
        self.connected = True
        self.joins = 0

    def isconnected(self):
        return self.connected

    def connect(self):
        self.joins += 1


class FakeTransport:
    def __init__(self):
        self.closes = 0

    def close(self):
        self.closes += 1


class FakeSession:
    """open_session for try_connect: fails with OSError while `fail`, after `takes_ms`
    of simulated time (a connect that runs into its socket timeout)."""

    def __init__(self, clock):
        self.clock = clock
        self.fail = True
        self.takes_ms = 0
        self.calls = 0

    def __call__(self):
        self.calls += 1
        self.clock.advance(self.takes_ms)
        if self.fail:
            raise OSError(111)  # ECONNREFUSED


def lowest(n):
    return 0


def highest(n):
    return (1 << n) - 1


class Lcg:
    """Seeded getrandbits(n) (n <= 31): the same numbers on every runtime and run."""

    def __init__(self, seed):
        self.x = seed & 0x7FFFFFFF

    def __call__(self, n):
        self.x = (self.x * 1103515245 + 12345) & 0x7FFFFFFF
        return self.x >> (31 - n)


class Rig:
    def __init__(self, source=None, start=0, **limits):
        self.clock = FakeClock(start)
        self.net = FakeNet()
        self.transport = FakeTransport()
        self.session = FakeSession(self.clock)
        if source is None:
            self.link = Link(self.transport, self.net, self.clock, **limits)
        else:
            self.link = Link(self.transport, self.net, self.clock, getrandbits=source, **limits)

    def attempts(self):
        return self.session.calls + self.net.joins

    def step(self):
        return self.link.try_connect(self.session)

    def wait_for_attempt(self, limit, coarse_until=0, stride=1):
        """Play the main loop: try_connect, then move the clock 1 ms, until the link makes
        an attempt (opens a session or joins the network). Returns the ms waited, or None
        if nothing happened within `limit` ms. Below `coarse_until` the loop may move
        `stride` ms at a time (long delays)."""
        before = self.attempts()
        waited = 0
        while waited <= limit:
            self.step()
            if self.attempts() != before:
                return waited
            step = stride if waited + stride <= coarse_until else 1
            self.clock.advance(step)
            waited += step
        return None

    def first_attempt_fails(self):
        # A new link may try at once; this attempt fails and starts the backoff.
        before = self.attempts()
        if self.step():
            raise AssertionError("the session was meant to fail")
        if self.attempts() != before + 1:
            raise AssertionError("a new link did not attempt at once")


def check_delay(waited, nominal, source, where):
    """Equal jitter: nominal/2 fixed + up to nominal/2 random."""
    if waited is None:
        raise AssertionError("%s: no attempt within %d ms (nominal delay %d)" % (where, 2 * nominal, nominal))
    if not nominal // 2 <= waited <= nominal:
        raise AssertionError(
            "%s: waited %d ms, nominal %d: outside [%d, %d]" % (where, waited, nominal, nominal // 2, nominal)
        )
    if source is lowest and waited != nominal // 2:
        raise AssertionError(
            "%s: zero random bits must give exactly the fixed half %d, got %d" % (where, nominal // 2, waited)
        )
    if source is highest and waited < nominal - nominal // 32:
        raise AssertionError("%s: all-one random bits must reach the nominal %d, got %d" % (where, nominal, waited))


def run_failures(rig, nominal, source, where):
    """Fail once per nominal step; check each wait. Returns the waits."""
    waits = []
    i = 0
    while i < len(nominal):
        d = nominal[i]
        waited = rig.wait_for_attempt(2 * d, coarse_until=d // 2 - 1, stride=1 + d // 200)
        check_delay(waited, d, source, "%s, failure %d" % (where, i + 1))
        waits.append(waited)
        i += 1
    return waits


def test_fake_clock_wraps_like_a_board():
    clock = FakeClock(_PERIOD - 10)
    later = clock.ticks_add(clock.ticks_ms(), 25)
    assert later == 15
    assert clock.ticks_diff(later, _PERIOD - 10) == 25
    assert clock.ticks_diff(_PERIOD - 10, later) == -25
    clock.advance(25)
    assert clock.ticks_ms() == 15
    for bad in (-1, _PERIOD):
        try:
            clock.ticks_diff(bad, 0)
        except ValueError:
            pass
        else:
            raise AssertionError("accepted %r as ticks" % bad)


def test_first_retry_waits_between_half_min_and_min():
    for source in (lowest, highest, Lcg(7), None):
        for start in STARTS:
            rig = Rig(source, start, min_ms=MIN, max_ms=MAX)
            rig.first_attempt_fails()
            assert rig.link.failures == 1
            waited = rig.wait_for_attempt(2 * MIN)
            check_delay(waited, MIN, source, "start %d" % start)


def test_each_failure_doubles_the_nominal_delay_up_to_max():
    for source in (lowest, highest, Lcg(1), Lcg(2024), None):
        for start in STARTS:
            rig = Rig(source, start, min_ms=MIN, max_ms=MAX)
            rig.first_attempt_fails()
            run_failures(rig, NOMINAL, source, "start %d" % start)
            assert rig.link.failures == len(NOMINAL) + 1
            assert rig.transport.closes == len(NOMINAL) + 1  # every failed session closed
            assert not rig.link.up()


def test_max_that_is_not_a_power_of_two_multiple_caps_the_delay():
    for source in (lowest, highest, Lcg(3)):
        rig = Rig(source, _PERIOD - 900, min_ms=300, max_ms=1000)
        rig.first_attempt_fails()
        run_failures(rig, (300, 600, 1000, 1000, 1000, 1000), source, "300..1000")


def test_delay_never_exceeds_max_after_many_failures():
    for source in (highest, Lcg(5)):
        rig = Rig(source, _PERIOD - 2000, min_ms=MIN, max_ms=MAX)
        rig.first_attempt_fails()
        run_failures(rig, NOMINAL + (MAX,) * 30, source, "many failures")


def test_default_backoff_doubles_from_1s_to_60s():
    nominal = (1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000)
    for source in (lowest, highest):
        rig = Rig(source, _PERIOD - 100000)
        rig.first_attempt_fails()
        run_failures(rig, nominal, source, "defaults")


def test_no_attempt_before_the_backoff_expires():
    rig = Rig(lowest, _PERIOD - 20, min_ms=MIN, max_ms=MAX)
    rig.first_attempt_fails()
    i = 0
    while i < 500:  # a busy main loop at the same instant
        assert rig.step() is False
        i += 1
    assert rig.attempts() == 1
    assert rig.transport.closes == 1
    rig.clock.advance(MIN // 2 - 1)
    assert rig.step() is False
    assert rig.attempts() == 1
    rig.clock.advance(1)
    assert rig.step() is False  # attempted, failed again
    assert rig.attempts() == 2


def test_network_down_joins_once_per_backoff_step():
    for source in (lowest, highest, Lcg(11)):
        rig = Rig(source, _PERIOD - 120, min_ms=MIN, max_ms=MAX)
        rig.net.connected = False
        rig.first_attempt_fails()
        assert rig.net.joins == 1
        assert rig.session.calls == 0  # no MQTT session without a network
        run_failures(rig, NOMINAL[:5], source, "network down")
        assert rig.net.joins == 6
        assert rig.session.calls == 0
        # the network comes back: the next attempt opens the session
        rig.net.connected = True
        rig.session.fail = False
        waited = rig.wait_for_attempt(2 * NOMINAL[5])
        check_delay(waited, NOMINAL[5], source, "network back")
        assert rig.link.up()
        assert rig.session.calls == 1


def test_backoff_counts_from_the_failure_not_from_the_attempt():
    rig = Rig(lowest, _PERIOD - 1500, min_ms=MIN, max_ms=MAX)
    rig.session.takes_ms = 2000  # connect runs into a 2 s socket timeout
    rig.first_attempt_fails()
    waited = rig.wait_for_attempt(4 * MIN)
    check_delay(waited, MIN, lowest, "slow failure")
    waited = rig.wait_for_attempt(4 * MIN)
    check_delay(waited, 2 * MIN, lowest, "slow failure 2")


def test_jitter_spreads_a_fleet_that_failed_together():
    # 40 devices, each with its own seeded source, fail at the same instant.
    for make in ((lambda i: Lcg(1000 + i)), (lambda i: None)):
        waits = []
        i = 0
        while i < 40:
            rig = Rig(make(i), _PERIOD - 50, min_ms=1000, max_ms=60000)
            rig.first_attempt_fails()
            waited = rig.wait_for_attempt(2000, coarse_until=499, stride=50)
            check_delay(waited, 1000, None, "device %d" % i)
            waits.append(waited)
            i += 1
        distinct = len(set(waits))
        assert distinct >= 20, "jitter missing: %d distinct delays of 40: %r" % (distinct, waits)
        assert min(waits) < 750 <= max(waits), "random half not used: %r" % waits


def test_jitter_varies_from_step_to_step():
    rig = Rig(Lcg(42), 0, min_ms=MIN, max_ms=MAX)
    rig.session.fail = False
    assert rig.step()
    waits = []
    i = 0
    while i < 12:
        rig.link.lost(OSError(104))
        waited = rig.wait_for_attempt(2 * MIN)
        check_delay(waited, MIN, None, "loss %d" % i)
        assert rig.link.up()
        waits.append(waited)
        i += 1
    assert len(set(waits)) >= 6, "the same delay every time: %r" % waits


def test_success_resets_the_failure_count():
    for source in (lowest, highest, Lcg(9)):
        rig = Rig(source, _PERIOD - 3000, min_ms=MIN, max_ms=MAX)
        rig.first_attempt_fails()
        run_failures(rig, NOMINAL[:4], source, "before success")
        rig.session.fail = False
        waited = rig.wait_for_attempt(2 * NOMINAL[4])
        check_delay(waited, NOMINAL[4], source, "success")
        assert rig.link.up()
        assert rig.link.failures == 0
        assert rig.link.connects == 1
        calls = rig.session.calls
        rig.clock.advance(5000)
        assert rig.step() is True  # up: no new session
        assert rig.session.calls == calls
        # the session breaks: the backoff starts again from min_ms, not from 1600
        rig.session.fail = True
        rig.link.lost(OSError(104))
        assert rig.link.failures == 1
        run_failures(rig, NOMINAL[:3], source, "after success")


def test_lost_schedules_the_next_try_in_the_min_range():
    for source in (lowest, highest, Lcg(17), None):
        for start in STARTS:
            rig = Rig(source, start, min_ms=MIN, max_ms=MAX)
            rig.session.fail = False
            assert rig.step()
            rig.clock.advance(777)
            closes = rig.transport.closes
            rig.link.lost(OSError(104))
            assert not rig.link.up()
            assert rig.link.losses == 1
            assert rig.transport.closes == closes + 1
            assert rig.step() is False  # not at once
            waited = rig.wait_for_attempt(2 * MIN)
            check_delay(waited, MIN, source, "lost, start %d" % start)
            assert rig.link.up()
            assert rig.link.connects == 2
