"""ACKs: tell each device which of its frames are durable here, after the commit.

Owned by whoever commits (the writer thread in the running gateway), with its own
counters. Per device, ACKs are coalesced: a device that was not ACKed within
``interval_s`` is ACKed at once (a board that sends a few frames and sleeps gets
its ACK after one commit); otherwise what was committed since waits until the
interval has passed, so a busy gateway sends at most one ACK per device per
interval, however small its batches. What is waiting is a handful of ranges per
device, never more than ``MAX_PENDING_RANGES`` (the oldest are dropped, counted and
logged: the device sends those frames again and they are ACKed as duplicates).

A publish the client refuses (not connected, its queue full) is kept and tried
again RETRY_S later; refusals are counted and logged once per streak.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.batch import Seqs, ranges_of
from gateway.rawlog import RawLog
from shared_protocol.gw_encode import MAX_RANGES, encode_ack

log = logging.getLogger(__name__)

MAX_PENDING_RANGES = 4 * MAX_RANGES  # per device, waiting for its next ACK
RETRY_S = 0.25  # after a refused publish, the next try waits this long (the writer thread must not spin)
RESYNC_WINDOW = 4096  # sequence numbers below the highest that a first ACK after a start repeats
RESYNC_RUNS = 32  # at most this many runs of them (the newest)


class Publisher(Protocol):
    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> bool: ...


class Header:
    """The gateway's frame header values (boot, seq, ticks), shared by ACKs and CMDs."""

    def __init__(self, boot: int) -> None:
        self.boot = boot
        self._seq = itertools.count(1)  # next() is atomic: the writer thread and CMDs share it

    def next(self) -> tuple[int, int, int]:
        return self.boot, next(self._seq) & 0xFFFFFFFF, int(time.monotonic() * 1000) & ((1 << 30) - 1)


@dataclass
class AckStats:
    sent: int = 0
    ranges: int = 0
    resynced: int = 0  # first ACKs after a start that repeat recent stored frames
    refused: int = 0  # publishes the client refused (tried again)
    dropped_ranges: int = 0  # over MAX_PENDING_RANGES while waiting (the device re-sends them)


class Acker:
    def __init__(
        self,
        publisher: Publisher,
        header: Header,
        topic: Callable[[str], str],
        *,
        interval_s: float = 0.0,
        resync: set[str] | None = None,
        recent_stored: Callable[[str, Any], Seqs] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """topic(device) -> its ACK topic. resync: devices stored before this start; their first
        ACK also repeats recent_stored(device, seq_state), since the ACKs of the last commit
        before a crash may never have left."""
        self._publisher = publisher
        self._header = header
        self._topic = topic
        self.interval_s = interval_s
        self._resync = resync if resync is not None else set()
        self._recent_stored = recent_stored
        self._clock = clock
        self._buf = bytearray(64 + 10 * MAX_RANGES)  # header, count, ranges, CRC
        self._waiting: dict[str, list[tuple[int, int, int]]] = {}
        self._last: dict[str, float] = {}  # device -> when its last ACK left
        self._refusing = False
        self._retry_at = 0.0  # no publish is tried before this (clock time), after a refusal
        self.stats = AckStats()

    def add(self, acks: dict[str, Seqs], seq_states: dict[str, Any]) -> None:
        """The frames of a commit that just became durable."""
        for device, committed in acks.items():
            seqs = committed
            if device in self._resync and self._recent_stored is not None:
                self._resync.discard(device)
                seqs = committed + self._recent_stored(device, seq_states.get(device))
                self.stats.resynced += 1
            old = self._waiting.get(device)
            ranges = ranges_of(seqs) if old is None else _merge(old, seqs)
            if len(ranges) > MAX_PENDING_RANGES:
                drop = len(ranges) - MAX_PENDING_RANGES
                self.stats.dropped_ranges += drop
                log.warning("device %s: %d ACK range(s) dropped while waiting; it sends them again", device, drop)
                ranges = ranges[drop:]
            self._waiting[device] = ranges

    def waiting(self) -> int:
        return len(self._waiting)

    def next_due(self) -> float | None:
        """When the earliest waiting ACK may leave (clock time), or None."""
        if not self._waiting:
            return None
        last = self._last
        return max(self._retry_at, min(last.get(d, -1e18) for d in self._waiting) + self.interval_s)

    def flush(self, *, force: bool = False) -> None:
        """Send every waiting ACK whose interval has passed (all of them with force)."""
        now = self._clock()
        if now < self._retry_at and not force:
            return
        due = [d for d in self._waiting if force or now - self._last.get(d, -1e18) >= self.interval_s]
        for device in due:
            ranges = self._waiting[device]
            sent = 0
            for start in range(0, len(ranges), MAX_RANGES):
                if not self._send(device, ranges[start : start + MAX_RANGES]):
                    self._retry_at = now + RETRY_S
                    break
                sent = start + MAX_RANGES
            if sent < len(ranges):
                self._waiting[device] = ranges[sent:]
                return  # the client refuses: the rest waits for the next try
            del self._waiting[device]
            self._last[device] = now

    def _send(self, device: str, part: list[tuple[int, int, int]]) -> bool:
        n = encode_ack(self._buf, *self._header.next(), part)
        ok = self._publisher.publish(self._topic(device), bytes(self._buf[:n]))
        st = self.stats
        if not ok:
            st.refused += 1
            if not self._refusing:
                log.warning("ACK to %s refused by the MQTT client (not connected or its queue full); kept", device)
            self._refusing = True
            return False
        if self._refusing:
            log.info("ACKs are accepted again (%d refusal(s) so far, all kept and sent)", st.refused)
        self._refusing = False
        st.sent += 1
        st.ranges += len(part)
        return True


def _merge(ranges: list[tuple[int, int, int]], seqs: Seqs) -> list[tuple[int, int, int]]:
    """Waiting ranges with more (boot, seq) pairs, as sorted, non-adjacent ranges."""
    out: list[tuple[int, int, int]] = []
    for boot, first, last in sorted(ranges + ranges_of(seqs)):
        if out and out[-1][0] == boot and first <= out[-1][2] + 1:
            out[-1] = (boot, out[-1][1], max(last, out[-1][2]))
        else:
            out.append((boot, first, last))
    return out


def recent_stored(rawlog: RawLog, device: str, state: Any) -> Seqs:
    """(boot, seq) of the frames of the device's current boot stored in the raw log, up to
    RESYNC_WINDOW numbers below the highest seen: what a device may still hold, unACKed."""
    if state is None or state[0] is None:
        return []
    boot = state[0]
    highest = next((st[2] for st in state[1] if st[0] == boot), -1)
    if highest < 0:
        return []
    seqs = rawlog.stored_seqs(device, boot, since=max(0, highest - RESYNC_WINDOW))
    runs = ranges_of([(boot, s) for s in seqs])[-RESYNC_RUNS:]  # a small ACK for a small board
    return [(boot, s) for _b, first, last in runs for s in range(first, last + 1)]
