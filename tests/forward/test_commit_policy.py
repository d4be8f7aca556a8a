"""The group-commit decisions on their own (gateway/forward/commit_policy.py), on given times."""

from __future__ import annotations

from gateway.forward.commit_policy import CommitPolicy


def _policy() -> CommitPolicy:
    return CommitPolicy(min_delay_s=0.005, max_delay_s=1.0, group_bytes=32_768, delete_interval_s=0.05)


def test_delay_doubles_while_records_keep_coming_and_resets_after_a_quiet_spell() -> None:
    p = _policy()
    now, delays = 100.0, []
    for _ in range(12):  # a record every 20 ms: each group waits out its delay
        p.arrival(now)
        delays.append(p.delay_s)
        first = now
        assert p.reason(now, first, 250, flush=False, urgent=False) is None
        now += p.delay_s
        assert p.reason(now, first, 250, flush=False, urgent=False) == "delay"
        p.committed(now, "delay")
        now += 0.02
    assert delays[:4] == [0.005, 0.01, 0.02, 0.04]
    assert delays[-1] == 1.0  # capped
    p.arrival(now + 1.0)  # nothing for longer than the longest delay: an isolated record goes at once
    assert p.delay_s == 0.005


def test_urgent_records_commit_at_once_and_do_not_touch_the_group() -> None:
    p = _policy()
    p.arrival(0.0)
    p.committed(0.005, "delay")
    assert p.delay_s == 0.01
    assert p.reason(0.006, 0.006, 100, flush=False, urgent=True) == "urgent"
    p.committed(0.006, "urgent")
    assert p.delay_s == 0.01 and p.last_commit == 0.005  # the group's clock is unchanged
    assert p.reason(0.0061, None, 0, flush=False, urgent=True) == "urgent"  # alerts alone
    assert p.reason(0.1, None, 0, flush=False, urgent=False) is None


def test_full_group_flush_and_their_order() -> None:
    p = _policy()
    assert p.reason(0.0, 0.0, 32_768, flush=False, urgent=True) == "full"  # everything, alerts included
    assert p.reason(0.0, 0.0, 10, flush=True, urgent=False) == "flush"
    assert p.reason(0.0, None, 0, flush=True, urgent=False) is None  # nothing to flush
    assert p.reason(0.5, 0.0, 10, flush=False, urgent=True) == "delay"  # the group's time is up: all of it


def test_deletes_ride_with_commits_of_records() -> None:
    p = _policy()
    assert p.delete_wait(1.0, 0.98, 500, records_buffered=True) is None  # with the group's commit
    assert abs(p.delete_wait(1.0, 0.98, 500, records_buffered=False) - 0.03) < 1e-9  # type: ignore[operator]
    assert p.delete_wait(1.0, 0.98, 2 * 1024 * 1024, records_buffered=True) == 0.0  # a transaction's worth
    p.delay_s = 1.0  # a steady trickle: deletes wait for the next group (twice the delay at most)
    assert abs(p.delete_wait(1.0, 0.9, 500, records_buffered=False) - 1.9) < 1e-9  # type: ignore[operator]
