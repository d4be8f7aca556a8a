"""Gap repair: ask devices for the frames the gateway is missing (CMD_RESEND).

The sequence tracker knows, per device, the missing ranges and the older boots whose
end is unknown (``SequenceTracker.wanted``). Once a device has wanted something for
``after_s`` (frames still in flight get there first), it is asked, and asked again
every ``interval_s`` while it is online. It answers with the frames (historical) and
a LOSS frame for what it no longer holds, which the pipeline records as lost. When
``attempts`` requests in a row bring no progress (an old firmware, a device that lost
its flash) the gateway gives up: the frames are counted lost (unanswered) and the
tails closed, so nothing stays silently open. Plain state, no I/O: ``send`` is injected.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gateway.sequence import SequenceTracker
from shared_protocol.repair import RESEND_MAX_RANGES

Ranges = list[tuple[int, int, int]]


@dataclass
class _Ask:
    since: float  # when the device started wanting something
    last: float | None = None  # last request
    attempts: int = 0  # requests since the last progress
    total: int = 0  # what was wanted at the last request (frames, tails counted whole)


@dataclass(frozen=True)
class GaveUp:
    device: str
    frames: int  # counted lost (unanswered)
    tails: int  # older boots closed without an answer


class GapRepair:
    def __init__(
        self,
        sequence: SequenceTracker,
        send: Callable[[str, Ranges], None],
        online: Callable[[str], bool],
        *,
        after_s: float,
        interval_s: float,
        attempts: int,
    ) -> None:
        self.sequence = sequence
        self.send = send
        self.online = online
        self.after_s = after_s
        self.interval_s = interval_s
        self.attempts = attempts
        self._asks: dict[str, _Ask] = {}
        self.requests = 0
        self.given_up = 0

    def forget(self, device: str) -> None:
        self._asks.pop(device, None)

    def pending(self) -> int:
        return len(self._asks)

    def tick(self, now: float) -> list[GaveUp]:
        """Send the requests that are due; returns the devices given up on."""
        seq = self.sequence
        for device in seq.changed:
            if seq.wanted(device):
                self._asks.setdefault(device, _Ask(since=now))
            else:
                self._asks.pop(device, None)
        seq.changed.clear()
        gave_up: list[GaveUp] = []
        for device, ask in list(self._asks.items()):
            if now - ask.since < self.after_s:
                continue
            if ask.last is not None and now - ask.last < self.interval_s:
                continue
            if not self.online(device):
                continue  # a CMD would not reach it: do not count this as an attempt
            wanted = seq.wanted(device)
            if not wanted:
                del self._asks[device]
                continue
            total = sum(hi - lo + 1 for _b, lo, hi in wanted)
            if ask.last is not None and total < ask.total:
                ask.attempts = 0  # the last request helped
            ask.total = total
            if ask.attempts >= self.attempts:
                frames, tails = seq.give_up(device)
                seq.changed.discard(device)
                del self._asks[device]
                self.given_up += 1
                gave_up.append(GaveUp(device, frames, tails))
                continue
            self.send(device, wanted[:RESEND_MAX_RANGES])
            ask.last = now
            ask.attempts += 1
            self.requests += 1
        return gave_up
