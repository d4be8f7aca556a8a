"""Per-device clocks: shared_protocol.timebase.TimeBase for every (device, boot).

Devices have no wall clock. Each frame's device ticks become a device time
(unwrapped, seconds; what the windowing stage checks continuity against) and
a rebuilt wall-clock time (what the raw log, alerts and summaries carry).
Live frames teach the offset; replayed (historical) frames only use it. A
boot never seen live (replayed after a reboot) falls back to the receive time.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
from numpy.typing import NDArray

from shared_protocol.timebase import TimeBase


class DeviceClocks:
    def __init__(self, *, max_clocks: int = 4096) -> None:
        self.max_clocks = max_clocks
        self._bits: dict[str, int] = {}
        self._clocks: OrderedDict[tuple[str, int], TimeBase] = OrderedDict()

    def set_tick_bits(self, device: str, bits: int) -> None:
        """From BIRTH: the device's tick counter wraps at 2**bits."""
        if self._bits.get(device) != bits:
            self._bits[device] = bits
            for key in [k for k in self._clocks if k[0] == device]:
                del self._clocks[key]

    def clock(self, device: str, boot: int) -> TimeBase:
        key = (device, boot)
        tb = self._clocks.get(key)
        if tb is None:
            tb = self._clocks[key] = TimeBase(self._bits.get(device, 30))
            while len(self._clocks) > self.max_clocks:
                self._clocks.popitem(last=False)
        return tb

    def frame_times(
        self, device: str, boot: int, ticks: int, received: float, *, age_ms: float = 0.0, live: bool = True
    ) -> tuple[float, float]:
        """(device time, wall time) in seconds of a frame's ``ticks``.

        age_ms: how long after ``ticks`` the frame was sent (DATA: the span of
        its samples), so the offset estimate is not biased by batching.
        """
        tb = self.clock(device, boot)
        if live:
            u = tb.unroll(ticks, received if tb.ready else None)
            wall = tb.observe(ticks, received, age_ms)
            return u * tb.tick_s, wall
        if tb.ready:
            return tb.unroll(ticks) * tb.tick_s, tb.to_wall(ticks)
        return ticks * tb.tick_s, received

    def run_times(
        self,
        device: str,
        boot: int,
        ticks: NDArray[Any],
        received: NDArray[np.float64],
        *,
        age_ms: float = 0.0,
        live: bool = True,
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """frame_times() for consecutive frames of one boot at once: (device times, wall times).

        Live: the clock learns from the last frame and from the one with the least delay
        (the only ones a minimum filter can use). Ticks are unrolled from the first frame's,
        so a run must span less than half the tick period (days).
        """
        tb = self.clock(device, boot)
        period = tb.period
        t = ticks.tolist()
        t0 = t[0]
        if live:
            u0 = tb.unroll(t0, float(received[0]) if tb.ready else None)
        elif tb.ready:
            u0 = tb.unroll(t0)
        else:
            dev = np.asarray([(x - t0) % period + t0 for x in t], dtype=np.float64)
            return dev * tb.tick_s, received.copy()
        tick_s = tb.tick_s
        dev_list = [(u0 + (x - t0) % period) * tick_s for x in t]
        if live:
            recv = received.tolist()
            lags = [r - d for r, d in zip(recv, dev_list, strict=True)]
            best = lags.index(min(lags))
            tb.observe(t[best], recv[best], age_ms)
            if best != len(t) - 1:
                tb.observe(t[-1], recv[-1], age_ms)
        dev_s = np.asarray(dev_list, dtype=np.float64)
        return dev_s, dev_s + tb.offset
