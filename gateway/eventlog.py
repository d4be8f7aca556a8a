"""Log lines for events that can come in floods (sequence gaps from a device on a bad link):
at most one line per key and interval, saying how many events it stands for. The counters in
status.json count every event; this only keeps the journal readable."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class Throttled:
    """``note(key, amount)``: log ``message % (key, events, amount total, seconds)`` at once for
    the first event of a key, then at most once per ``interval_s`` with what came meanwhile."""

    def __init__(
        self,
        logger: logging.Logger,
        message: str,
        *,
        interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.message = message
        self.interval_s = interval_s
        self.clock = clock
        self._next: dict[str, float] = {}  # key -> when its next line may be written
        self._held: dict[str, tuple[int, int, float]] = {}  # key -> events, amount, since

    def note(self, key: str, amount: int = 1) -> None:
        now = self.clock()
        events, total, since = self._held.get(key, (0, 0, now))
        events, total = events + 1, total + amount
        if now < self._next.get(key, 0.0):
            self._held[key] = (events, total, since)
            return
        self._held.pop(key, None)
        self._next[key] = now + self.interval_s
        self.logger.info(self.message, key, events, total, now - since)
