"""ACKs after the commit: coalesced per device, refused publishes kept and sent again."""

from __future__ import annotations

from gateway.acker import MAX_PENDING_RANGES, RETRY_S, Acker, Header
from shared_protocol.decode import decode


class Broker:
    """A publisher that refuses while `down` (as paho does when not connected)."""

    def __init__(self) -> None:
        self.down = False
        self.sent: list[tuple[str, list[tuple[int, int, int]]]] = []

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> bool:
        if self.down:
            return False
        self.sent.append((topic, decode(payload).fields["ranges"]))
        return True


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _acker(interval_s: float) -> tuple[Acker, Broker, Clock]:
    broker, clock = Broker(), Clock()
    acker = Acker(broker, Header(1), lambda d: f"el/s1/{d}/ack", interval_s=interval_s, clock=clock)
    return acker, broker, clock


def test_first_ack_at_once_then_one_per_interval() -> None:
    acker, broker, clock = _acker(0.5)
    acker.add({"a": [(1, 1)]}, {})
    acker.flush()
    assert broker.sent == [("el/s1/a/ack", [(1, 1, 1)])]  # a device not ACKed lately: at once
    for seq in (2, 3, 4):
        clock.t += 0.1
        acker.add({"a": [(1, seq)]}, {})
        acker.flush()
    assert len(broker.sent) == 1 and acker.waiting() == 1
    due = acker.next_due()
    assert due is not None and abs(due - 100.5) < 1e-9
    clock.t = 100.5
    acker.flush()
    assert broker.sent[-1] == ("el/s1/a/ack", [(1, 2, 4)])  # three commits, one ACK
    assert acker.stats.sent == 2 and acker.waiting() == 0


def test_a_refused_ack_is_kept_and_sent_when_the_client_accepts_again() -> None:
    acker, broker, clock = _acker(0.0)
    broker.down = True
    acker.add({"a": [(1, 1), (1, 2)], "b": [(3, 7)]}, {})
    acker.flush()
    assert not broker.sent and acker.stats.refused == 1 and acker.waiting() == 2
    # The writer thread does not spin on a refusing client: the next try is RETRY_S later.
    due = acker.next_due()
    assert due is not None and due == clock.t + RETRY_S
    acker.flush()
    assert acker.stats.refused == 1
    acker.add({"a": [(1, 3)]}, {})
    broker.down = False
    clock.t += RETRY_S
    acker.flush()
    assert sorted(broker.sent) == [("el/s1/a/ack", [(1, 1, 3)]), ("el/s1/b/ack", [(3, 7, 7)])]
    assert acker.waiting() == 0


def test_what_waits_per_device_is_bounded() -> None:
    acker, broker, _clock = _acker(0.0)
    broker.down = True
    acker.add({"a": [(1, 2 * k) for k in range(MAX_PENDING_RANGES + 10)]}, {})  # every other seq
    assert acker.stats.dropped_ranges == 10
    broker.down = False
    acker.flush(force=True)
    ranges = [r for _t, part in broker.sent for r in part]
    assert len(ranges) == MAX_PENDING_RANGES and ranges[0] == (1, 20, 20)  # the newest kept
