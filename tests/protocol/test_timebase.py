"""Wall-clock reconstruction from (boot, ticks) and receive times."""

from __future__ import annotations

import random

import pytest

from shared_protocol.timebase import TimeBase

WRAP = 2**30  # MicroPython ticks_ms period in ms


def test_unrolls_ticks_across_the_wrap() -> None:
    tb = TimeBase(30)
    t0 = 1_000_000.0
    first = WRAP - 3000  # 3 s before the wrap
    tb.observe(first, t0)
    for k in range(1, 10):  # one frame per second across the wrap
        raw = (first + 1000 * k) % WRAP
        assert tb.unroll(raw, t0 + k) == first + 1000 * k
        assert tb.observe(raw, t0 + k) == pytest.approx(t0 + k, abs=1e-6)
    # without receive time: nearest to the last live tick
    assert tb.unroll((first + 12_000) % WRAP) == first + 12_000
    assert tb.unroll(first - 500) == first - 500  # replayed frame from before the wrap


def test_unrolls_across_many_wraps_with_receive_time() -> None:
    tb = TimeBase(30)
    tb.observe(5, 0.0)
    days = 40.0  # three wraps of 12.4 days while the device was unseen
    true_ticks = 5 + int(days * 86400 * 1000)
    assert tb.unroll(true_ticks % WRAP, days * 86400 + 0.02) == true_ticks
    assert tb.to_wall(true_ticks % WRAP, days * 86400 + 0.02) == pytest.approx(days * 86400, abs=0.01)


def test_min_offset_error_is_within_the_documented_bound() -> None:
    rng = random.Random(7)
    tb = TimeBase(30, window_s=300.0)
    boot_wall = 1_700_000_000.0
    ticks0 = WRAP - 60_000  # wraps one minute in
    latencies = []
    for i in range(600):  # one frame per 0.5 s, latency 2..200 ms, never below 2 ms
        sent = i * 500
        lat = 0.002 + rng.expovariate(1 / 0.03)
        lat = min(lat, 0.2)
        latencies.append(lat)
        tb.observe((ticks0 + sent) % WRAP, boot_wall + sent / 1000 + lat)
        # estimate for a sample 250 ms before this frame was sent
        est = tb.to_wall((ticks0 + sent - 250) % WRAP)
        err = est - (boot_wall + (sent - 250) / 1000)
        bound = min(latencies[-600:]) + 0.001
        assert -1e-6 <= err <= bound + 1e-6, (i, err, bound)
    assert err <= min(latencies) + 1e-6  # late by exactly the smallest latency seen
    assert min(latencies) < 0.0025


def test_drift_is_followed_by_the_sliding_window() -> None:
    """A crystal 100 ppm slow: the window keeps the error near drift * window."""
    tb = TimeBase(30, window_s=60.0)
    ppm = 100e-6
    for i in range(3600):  # one hour, one frame per second, 5 ms latency
        wall = float(i)
        ticks = int(i * 1000 * (1 - ppm))
        tb.observe(ticks % WRAP, wall + 0.005)
    est = tb.to_wall(int(3599 * 1000 * (1 - ppm)) % WRAP)
    assert abs(est - 3599.0) <= 0.005 + ppm * 60 + 0.001


def test_historical_frames_do_not_move_the_offset() -> None:
    tb = TimeBase(30)
    tb.observe(10_000, 100.0)
    off = tb.offset
    assert tb.to_wall(4_000) == pytest.approx(94.0)  # replayed, received much later: not observed
    assert tb.offset == off
    late = tb.observe(20_000, 150.0)  # a frame that sat in a queue: larger offset, min keeps the old one
    assert tb.offset == off and late == pytest.approx(110.0)


def test_data_frame_age_is_taken_into_account() -> None:
    tb = TimeBase(30)
    # DATA: header ticks = first of 32 samples at 20 ms; sent after the last one (620 ms later)
    wall_first = tb.observe(1000, 50.0 + 0.62 + 0.004, age_ms=31 * 20)
    assert wall_first == pytest.approx(50.004)


def test_needs_an_observation_first() -> None:
    tb = TimeBase(29)
    assert not tb.ready
    with pytest.raises(LookupError):
        tb.to_wall(5)
    with pytest.raises(ValueError):
        TimeBase(3)
