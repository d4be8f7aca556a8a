"""Rebuild wall-clock time from device ticks (CPython gateway helper).

Devices have no wall clock: every frame carries (boot, seq, ticks) where ticks
is a millisecond counter that wraps at 2**tick_bits (MicroPython ticks_ms:
2**30 ms = 12.4 days; CircuitPython supervisor.ticks_ms: 2**29). One TimeBase
per (device, boot) turns ticks into wall time:

* wrap unrolling: a raw tick value t stands for t + k * 2**tick_bits; k is
  chosen so the result lies nearest to what the receive time predicts (or,
  without a receive time, nearest to the last unrolled tick);
* min-offset estimation: each live frame gives offset_i = recv_i - sent_i
  (sent_i in seconds of unrolled ticks) = true_offset + latency_i with
  latency_i >= 0, so the minimum over a sliding window is the best estimate
  of the true offset; it is late by the smallest latency in the window.

Error bound of to_wall() for a tick within the window (docs/protocol.md):
0 <= error <= min latency in window + drift_ppm * 1e-6 * window_s + 1 ms.
"""

from __future__ import annotations

from collections import deque

__all__ = ["TimeBase"]


class TimeBase:
    """Wall-time reconstruction for one (device, boot)."""

    def __init__(self, tick_bits: int = 30, *, tick_s: float = 0.001, window_s: float = 300.0) -> None:
        if not 8 <= tick_bits <= 64:
            raise ValueError("tick_bits must be 8..64, got %r" % tick_bits)
        if tick_s <= 0 or window_s <= 0:
            raise ValueError("tick_s and window_s must be > 0")
        self.period = 1 << tick_bits
        self.tick_s = tick_s
        self.window_s = window_s
        self._last_unrolled: int | None = None
        # monotonic deque of (recv_time, offset): offsets increase left to right
        self._window: deque[tuple[float, float]] = deque()
        self.observations = 0

    @property
    def ready(self) -> bool:
        """True once at least one live frame was observed."""
        return self._last_unrolled is not None

    @property
    def offset(self) -> float:
        """Current estimate of wall_time - unrolled_ticks * tick_s (seconds)."""
        if not self._window:
            raise LookupError("TimeBase has no live observation yet: call observe() first")
        return self._window[0][1]

    def unroll(self, ticks: int, recv_time: float | None = None) -> int:
        """Unrolled tick count for a raw (wrapped) tick value."""
        p = self.period
        t = int(ticks) % p
        if self._last_unrolled is None:
            return t
        if recv_time is not None and self._window:
            expected = (recv_time - self.offset) / self.tick_s
            k = round((expected - t) / p)
            return t + k * p
        ref = self._last_unrolled
        d = (t - ref) % p
        if d >= p // 2:
            d -= p
        return ref + d

    def observe(self, ticks: int, recv_time: float, age_ms: float = 0.0) -> float:
        """Feed a live (not historical) frame: its header ticks, the gateway's
        receive time (seconds, e.g. time.time()) and age_ms, how long after
        `ticks` the frame was sent (for DATA: (nsamples - 1) * period_us / 1000,
        since ticks is the first sample and the frame goes out after the last).
        Returns the wall time of `ticks`."""
        u = self.unroll(ticks, recv_time)
        if self._last_unrolled is None or u > self._last_unrolled:
            self._last_unrolled = u
        off = recv_time - (u * self.tick_s + age_ms / 1000.0)
        w = self._window
        while w and w[-1][1] >= off:
            w.pop()
        w.append((recv_time, off))
        horizon = recv_time - self.window_s
        while len(w) > 1 and w[0][0] < horizon:
            w.popleft()
        self.observations += 1
        return u * self.tick_s + self.offset

    def to_wall(self, ticks: int, recv_time: float | None = None) -> float:
        """Wall time (seconds) of a raw tick value, e.g. of a replayed frame.

        recv_time helps unroll ticks of live frames across long gaps; leave it
        out for historical frames, whose ticks are unrolled nearest to the last
        live tick (valid within half a wrap period of it: 6.2 days for 2**30).
        """
        u = self.unroll(ticks, recv_time)
        return u * self.tick_s + self.offset
