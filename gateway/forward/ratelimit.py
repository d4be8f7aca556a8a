"""Token bucket for the optional bandwidth cap (metered links) and drain-rate cap."""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """``rate`` tokens per second, holding at most ``burst`` (default: a quarter second's worth, so a
    metered link sees the cap within a second, not after a one-second burst)."""

    def __init__(self, rate: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0:
            raise ValueError(f"token bucket rate must be > 0, got {rate}")
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(rate / 4, 1.0))
        self.clock = clock
        self.tokens = self.burst
        self.stamp = clock()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self, n: float) -> bool:
        """Take ``n`` tokens if available.  A request larger than the burst passes when the bucket is full."""
        self._refill()
        if self.tokens >= n or self.tokens >= self.burst:
            self.tokens -= n
            return True
        return False

    def wait_time(self, n: float) -> float:
        """Seconds until :meth:`take` of ``n`` tokens would succeed."""
        self._refill()
        need = min(n, self.burst) - self.tokens
        return max(0.0, need / self.rate)
