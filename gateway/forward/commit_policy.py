"""When the store thread commits: adaptive group commit.

A commit writes whole pages: at least one 4 KB page into the WAL (and the same page again into the
database file at the next checkpoint), whatever it holds.  Committing every record of a steady
trickle on its own costs a page per record, about 20 bytes written per byte queued for 200-byte
summaries.  So submitted records are grouped:

* **urgent**: a record of an urgent lane (``forward.urgent_lanes``, the ``alert`` lane by default),
  ``flush()``, ``stop()`` and the forwarder's own loss reports commit at once, together with
  everything buffered before them.  Alerts are published as soon as they are committed.
* **full**: a group commits as soon as its records reach :data:`GROUP_BYTES` (or a transaction's
  worth): waiting longer would save nothing, the pages are full.
* **delay**: otherwise the group commits once its first record has waited the current *delay*.
  After a quiet spell (no commit for ``commit_max_delay_ms``) the delay is ``commit_interval_ms``
  (5 ms): an isolated record, or the burst of summaries at the end of an interval, is committed and
  sent at once.  Each commit that the delay triggered doubles it, up to ``commit_max_delay_ms``
  (1 s): while records keep trickling in, they are committed about once a second, a few pages per
  second whatever the rate.

Deletes of acknowledged records ride with those commits.  They commit on their own only when no
record is waiting and they have waited ``delete_interval_ms`` or twice the delay (whichever is
longer), or when they reach a transaction's worth.

``Forwarder.committed(ticket)`` turns true only after the commit that holds the record: grouping
delays it, it never makes it true early.  Pure logic on a monotonic clock, no threads: the store
thread feeds it what it sees (see ``gateway/forward/store.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

GROUP_BYTES = 32 * 1024
"""Bytes of buffered records (JSON + row overhead, an upper bound of their stored size) that make a
group worth committing without waiting for the delay: eight pages or more."""
_MIN_GROWTH_S = 0.001  # the delay grows from at least 1 ms (commit_interval_ms may be 0)
_TOLERANCE_S = 1e-6  # a timer that ran out by the clock's rounding has run out


@dataclass
class CommitPolicy:
    """The group-commit delay and the decisions that use it.  Times are ``time.monotonic()`` seconds."""

    min_delay_s: float
    max_delay_s: float
    group_bytes: int = GROUP_BYTES
    delete_interval_s: float = 0.05
    delete_group_bytes: int = 1024 * 1024

    def __post_init__(self) -> None:
        self.delay_s = self.min_delay_s
        self.last_commit: float | None = None  # last commit that took buffered records
        self.commits = {"urgent": 0, "flush": 0, "full": 0, "delay": 0}

    def arrival(self, now: float) -> None:
        """A record arrived into an empty buffer at ``now``: after a quiet spell start from the
        shortest delay again."""
        if self.last_commit is None or now - self.last_commit >= self.max_delay_s:
            self.delay_s = self.min_delay_s

    def reason(
        self, now: float, first_pending: float | None, pending_bytes: int, *, flush: bool, urgent: bool
    ) -> str | None:
        """What to commit now: "flush" (everything: flush(), stop(), a loss report), "full" or
        "delay" (the group of records that started at ``first_pending``: everything), "urgent"
        (the records of the urgent lanes alone), or None (nothing yet)."""
        if flush and (first_pending is not None or urgent):
            return "flush"
        if first_pending is not None:
            if pending_bytes >= self.group_bytes:
                return "full"
            if now - first_pending >= self.delay_s - _TOLERANCE_S:
                return "delay"
        return "urgent" if urgent else None

    def commit_wait(self, now: float, first_pending: float) -> float:
        """Seconds until the delay of the group that started at ``first_pending`` runs out."""
        return max(0.0, first_pending + self.delay_s - now)

    def committed(self, now: float, reason: str) -> None:
        """A commit of buffered records for ``reason`` succeeded: a delay that ran out grows."""
        self.commits[reason] += 1
        if reason == "urgent":
            return  # the group of other records is still waiting
        self.last_commit = now
        if reason == "delay":
            self.delay_s = min(self.max_delay_s, max(self.delay_s * 2, _MIN_GROWTH_S))

    def delete_wait(self, now: float, last_delete: float, delete_bytes: int, records_buffered: bool) -> float | None:
        """Seconds until acknowledged rows should be deleted (0: now), or None: they go with the commit
        of the buffered records."""
        if delete_bytes >= self.delete_group_bytes:
            return 0.0
        if records_buffered:
            return None
        return max(0.0, last_delete + max(self.delete_interval_s, 2 * self.delay_s) - now)
