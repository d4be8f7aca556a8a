"""Interval summaries out to the cloud lane, and the watermark that says up to where
they are durable (so a restart rebuilds, from the raw log, only what was not sent).

    flush    the interval in progress, each interval and at a clean stop (also published
             as JSON on the local broker, with or without a forwarder)
    settle   move the watermark over every interval whose records are durable
    recover  at start-up: rebuild the summaries received after the watermark
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

from gateway.counters import Counters
from gateway.decisions import Summaries
from gateway.outbox import Outbox
from gateway.rawlog import RawLog
from gateway.registry import Registry
from gateway.schemas import SchemaBook
from gateway.summary_recovery import WATERMARK, rebuild

log = logging.getLogger(__name__)


class SummaryFlow:
    def __init__(
        self,
        summaries: Summaries,
        *,
        registry: Registry,
        outbox: Outbox,
        counters: Counters,
        committed: Callable[[int], bool] | None,
    ) -> None:
        self.summaries = summaries
        self.registry = registry
        self.outbox = outbox
        self.counters = counters
        self.committed = committed
        # (end of interval, ticket of its last record): the watermark moves once it is durable
        self._marks: deque[tuple[float, int | None]] = deque()
        # Latest receive time of a frame already processed: a flush covers everything received
        # up to it, so it is the watermark (frames are processed in receive order).
        self.last_received = summaries.start

    def flush(self, now: float) -> None:
        ticket = None
        for rec in self.summaries.flush(now):
            rec["site"] = self.outbox.site
            self.counters.summaries += 1
            self.outbox.local_summary(rec)  # always: local tools read it on the broker
            ticket = self.outbox.forward("summary", rec)
        self._marks.append((self.last_received, ticket))
        self.settle()

    def pending(self) -> bool:
        return bool(self._marks)

    def settle(self) -> None:
        end = None
        marks = self._marks
        while marks:
            t, ticket = marks[0]
            if ticket is not None and self.committed is not None and not self.committed(ticket):
                break
            end = t
            marks.popleft()
        if end is not None:
            self.registry.set_meta(WATERMARK, repr(end))

    def recover(self, rawlog: RawLog, schemas: SchemaBook, *, interval_s: float, now: float) -> None:
        since = self.registry.get_meta(WATERMARK)
        if since is None or self.outbox.submit is None or float(since) >= now:
            self.registry.set_meta(WATERMARK, repr(now))
            return
        records = rebuild(rawlog, schemas.by_device(), interval_s=interval_s, since=float(since), until=now)
        ticket = None
        for rec in records:
            rec["site"] = self.outbox.site
            if rec.get("event") == "summary_missing":
                log.warning("summaries %.0f..%.0f cannot be rebuilt: %s", rec["start"], rec["end"], rec["reason"])
                ticket = self.outbox.forward("registry", rec)
            else:
                self.counters.summaries_rebuilt += 1
                ticket = self.outbox.forward("summary", rec)
        if records:
            log.info("rebuilt %d summary record(s) after the last run's watermark", len(records))
        self._marks.append((now, ticket))
        self.settle()
