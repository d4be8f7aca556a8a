"""The forwarder's store thread: the only user of the SQLite queue.

It commits the memory buffer in groups (when: ``gateway/forward/commit_policy.py``), turns PUBACKs
into in-order deletes, picks the next records to publish (per lane, a prefetch of committed
records), hands them to paho, enforces the disk budget and reports losses.

Long (about 570 lines) because it is one thread's state and the loop that drives it; its parts
(commits, deletes, publishing) share the in-flight bookkeeping, so they stay together.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from paho.mqtt.enums import MQTTErrorCode

from gateway.forward.commit_policy import GROUP_BYTES, CommitPolicy
from gateway.forward.errors import QueueError
from gateway.forward.payload import encode_json, json_topic
from gateway.forward.queue import (
    ALERT,
    LANES,
    REGISTRY,
    ROW_OVERHEAD,
    BudgetResult,
    DiskFullError,
    Pending,
    QueuedRecord,
    lane_lo,
)
from gateway.forward.ratelimit import TokenBucket

if TYPE_CHECKING:
    from gateway.forward.forwarder import Forwarder

log = logging.getLogger("edgeline.forward")

_PREFETCH = 512
_MAX_BATCH = 5000
_SMALL_BATCH = 64
_HANDOFF = 4
_RETRY_AFTER_WRITE_ERROR_S = 1.0


class StoreLoop:
    """State of the store thread (kept out of Forwarder so only this thread touches it)."""

    def __init__(self, fwd: Forwarder) -> None:
        self.fwd = fwd
        self.q = fwd._queue
        self.cfg = fwd.config
        n = len(LANES)
        self.inflight: dict[int, tuple[int, int, int]] = {}  # mid -> (lane, id, bytes in the file, at most)
        self.lane_inflight: list[deque[int]] = [deque() for _ in range(n)]
        self.lane_acked: list[set[int]] = [set() for _ in range(n)]
        self.sizes: dict[int, int] = {}  # id -> bytes in the file (at most), while in flight
        # Per lane, in order: (id, bytes) of acknowledged records not deleted yet.
        self.to_delete: list[deque[tuple[int, int]]] = [deque() for _ in range(n)]
        self.delete_bytes = 0  # their bytes in the file (at most)
        self.prefetch: list[deque[QueuedRecord]] = [deque() for _ in range(n)]
        self.cursor = [lane_lo(i) - 1 for i in range(n)]
        self.last_sent = [lane_lo(i) - 1 for i in range(n)]
        self.exhausted = [False] * n
        self.first_pending: float | None = None
        self.peak_bytes = 0  # largest database + WAL + WAL index seen after a write
        self.last_delete = time.monotonic()
        self.retry_at = 0.0
        self.small_batches_until = 0.0
        self.next_wake = 0.25
        self.policy = CommitPolicy(
            min_delay_s=self.cfg.commit_interval_ms / 1000.0,
            max_delay_s=self.cfg.commit_max_delay_ms / 1000.0,
            group_bytes=min(GROUP_BYTES, self.q.max_commit_bytes),
            delete_interval_s=self.cfg.delete_interval_ms / 1000.0,
            delete_group_bytes=self.q.max_commit_bytes,
        )
        self.bandwidth = (
            TokenBucket(self.cfg.bandwidth_limit_bytes_per_s) if self.cfg.bandwidth_limit_bytes_per_s else None
        )
        self.drain = TokenBucket(self.cfg.drain_limit_messages_per_s) if self.cfg.drain_limit_messages_per_s else None
        # A record becomes one message (JSON), or with Sparkplug maybe births or a death around it:
        # the last message is the record's own, the one whose PUBACK deletes it.
        self.encode: Callable[[QueuedRecord], list[tuple[str, bytes]]]
        self.encoded: tuple[QueuedRecord, list[tuple[str, bytes]]] | None = None  # held back by a rate cap
        self.sparkplug = fwd._sparkplug
        self.born_connection = 0  # Sparkplug: the connection (fwd._connects) whose births were sent
        gw = fwd.gateway_id
        if self.sparkplug is not None:
            self.encode = self.sparkplug.messages_for
        else:
            prefix = self.cfg.topic_prefix
            self.encode = lambda r: [(json_topic(prefix, gw, r.lane), encode_json(gw, r))]

    def run(self) -> None:
        fwd = self.fwd
        self._refresh_status()
        while True:
            fwd._wake.clear()
            stopping = fwd._stop.is_set()
            self._process_acks()
            now = time.monotonic()
            with fwd._lock:
                pending = len(fwd._buffer)
                pending_bytes = fwd._buffer_bytes if pending < _MAX_BATCH else self.policy.group_bytes
                urgent = bool(fwd._urgent_buffer)
                flush = fwd._flush_all or stopping
                connected = fwd._connected
            if pending and self.first_pending is None:
                self.first_pending = now
                self.policy.arrival(now)
            reason = self.policy.reason(now, self.first_pending, pending_bytes, flush=flush, urgent=urgent)
            delete_due = self._deletes_pending() and (reason is not None or self._delete_wait(now) == 0.0)
            if (reason is not None or delete_due) and (now >= self.retry_at or stopping):
                self._commit(reason)
            elif flush and not pending and not urgent:
                with fwd._lock:
                    fwd._flush_all = False
            self.next_wake = 0.25
            if connected and not stopping:
                self._top_up()
            if stopping:
                self._final_commit()
                if self.sparkplug is not None:
                    self.sparkplug.save()
                return
            fwd._wake.wait(self._wait_time(connected))

    def _delete_wait(self, now: float) -> float | None:
        with self.fwd._lock:
            buffered = bool(self.fwd._buffer)
        return self.policy.delete_wait(now, self.last_delete, self.delete_bytes, buffered)

    def _wait_time(self, connected: bool) -> float:
        """How long the store thread may sleep (a submit into an empty buffer, an alert, a batch of
        PUBACKs or stop() wakes it earlier)."""
        now = time.monotonic()
        timeout = self.next_wake
        with self.fwd._lock:
            pending = len(self.fwd._buffer)
            hurry = self.fwd._flush_all or bool(self.fwd._urgent_buffer)
        if hurry:
            timeout = 0.0  # more to commit at once (a large backlog takes several transactions)
        elif pending:
            first = now if self.first_pending is None else self.first_pending
            timeout = min(timeout, max(self.policy.commit_wait(now, first), 0.0005))
        if self._deletes_pending():
            left = self._delete_wait(now)
            if left is not None:
                timeout = min(timeout, max(left, 0.0005))
        if self.inflight and connected:
            timeout = min(timeout, 0.005)  # PUBACKs are collected in batches (see Forwarder._on_publish)
        if self.retry_at > now:
            timeout = max(timeout, min(self.retry_at - now, 0.25))
        return timeout

    # -- acks -> deletes -------------------------------------------------------------------
    def _process_acks(self) -> None:
        acks = self.fwd._acks
        acked = [0] * len(LANES)
        while acks:
            mid = acks.popleft()
            entry = self.inflight.pop(mid, None)
            if entry is None:
                continue
            lane, rid, size = entry
            done = self.lane_acked[lane]
            done.add(rid)
            self.sizes[rid] = size
            order = self.lane_inflight[lane]
            # In-order delete: a record is deleted only when every record before it in its lane is acked.
            while order and order[0] in done:
                head = order.popleft()
                done.discard(head)
                size = self.sizes.pop(head)
                self.to_delete[lane].append((head, size))
                self.delete_bytes += size
                acked[lane] += 1
        if any(acked):
            total = sum(acked)
            with self.fwd._lock:
                for i, n in enumerate(acked):
                    self.fwd._stat_acked[i] += n
                    self.fwd._stat_depth[i] = max(0, self.fwd._stat_depth[i] - n)
                    self.fwd._stat_inflight[i] = len(self.lane_inflight[i])
                self.fwd._drain_marks.append((time.monotonic(), total))

    # -- commits ---------------------------------------------------------------------------
    def _take_batch(self, urgent_only: bool) -> list[Pending]:
        """The oldest buffered records (urgent lanes first; with ``urgent_only`` only those), at most
        one transaction's worth (count and bytes)."""
        fwd = self.fwd
        # After "disk full": commit in small pieces so what fits gets in.
        limit = _SMALL_BATCH if self.small_batches_until > time.monotonic() else _MAX_BATCH
        room = self.q.max_commit_bytes
        items: list[Pending] = []
        with fwd._lock:
            for buffer in (fwd._urgent_buffer,) if urgent_only else (fwd._urgent_buffer, fwd._buffer):
                while buffer and len(items) < limit:
                    size = self.q.estimate_bytes(buffer[0])
                    if items and size > room:
                        break
                    room -= size
                    items.append(buffer.popleft())
                    if buffer is fwd._buffer:
                        fwd._buffer_bytes -= len(items[-1].body) + ROW_OVERHEAD
            if not urgent_only:  # what did not fit goes next, at once
                fwd._flush_all = bool(fwd._buffer) or bool(fwd._urgent_buffer)
        return items

    def _deletes_pending(self) -> bool:
        return any(self.to_delete)

    def _delete_batch(self, room: int, lanes: frozenset[int] | None) -> tuple[dict[int, int], int, list[int]]:
        """Deletes for the next commit, about ``room`` bytes of rows at most (one row at least when
        ``room`` is the whole transaction), of ``lanes`` (None: all): lane -> delete through this id,
        their bytes, rows per lane.  (A commit of alerts alone deletes only acknowledged alerts: their
        rows share its pages.)

        Deleting rows rewrites the pages they are on: bounded so that one transaction never outgrows
        the WAL allowance (after a long drain, the deletes take several commits)."""
        through: dict[int, int] = {}
        taken = [0] * len(LANES)
        total = 0
        for lane, rows in enumerate(self.to_delete):
            if lanes is not None and lane not in lanes:
                continue
            for rid, size in rows:
                if total + size > room and (total or room < self.q.max_txn_bytes):
                    return through, total, taken
                through[lane] = rid
                taken[lane] += 1
                total += size
        return through, total, taken

    def _commit(self, reason: str | None) -> None:
        """Commit the oldest buffered records (for ``reason``, see CommitPolicy) and the deletes due."""
        fwd = self.fwd
        items: list[Pending] = []
        too_large: list[Pending] = []
        urgent_only = reason == "urgent"
        for item in self._take_batch(urgent_only):
            (too_large if self.q.stored_bytes(item) > self.q.max_record_bytes else items).append(item)
        incoming = sum(self.q.estimate_bytes(item) for item in items)
        if items and self.q.needs_room(incoming):
            self._enforce(force=False, incoming=incoming)
        lanes = fwd._urgent_lanes if urgent_only else None
        through, delete_bytes, taken = self._delete_batch(self.q.max_txn_bytes - incoming, lanes)
        try:
            new, _deleted = self.q.commit(items, through, delete_bytes=delete_bytes)
        except QueueError as exc:
            with fwd._lock:
                fwd._requeue(items)
                fwd._last_write_error = str(exc)
            if too_large:
                self._settle(too_large, lost=True)
            self._on_write_error(exc)
            return
        if not urgent_only:
            self.first_pending = None
        if items and reason is not None:
            self.policy.committed(time.monotonic(), reason)
        for lane, n in enumerate(taken):
            for _ in range(n):
                self.to_delete[lane].popleft()
        self.delete_bytes -= delete_bytes
        if not self._deletes_pending():  # else the rest goes with the next commit, at once
            self.last_delete = time.monotonic()
        for record in new:
            lane = record.lane
            if self.exhausted[lane] and record.id > self.cursor[lane]:
                self.prefetch[lane].append(record)
                self.cursor[lane] = record.id
        self._report_overflow()
        self._refresh_status()
        self._settle(too_large, lost=True)
        self._settle(items)

    def _settle(self, items: list[Pending], *, lost: bool = False) -> None:
        """``items`` are committed (or, with ``lost``, counted lost: too large for the budget)."""
        if not items:
            return
        fwd = self.fwd
        if lost:
            counts: dict[str, int] = {}
            for item in items:
                name = LANES[item.lane]
                log.error(
                    "forward: a %s record of %d bytes is larger than the disk budget allows", name, len(item.body)
                )
                self.q.bump(f"lost.{name}")
                counts[name] = counts.get(name, 0) + 1
            report = {"type": "loss_report", "reason": "record_too_large", "lost_before_commit": counts}
            self._push_internal(
                REGISTRY, {**report, "max_record_bytes": self.q.max_record_bytes, "epoch": self.q.epoch}
            )
        with fwd._committed:
            fwd._settled_total += len(items)
            # In ticket order within each buffer; an urgent record may be done ahead of others.
            for item in sorted(items, key=lambda item: item.ticket):
                if item.ticket:
                    fwd._ticket_done(item.ticket)
            fwd._committed.notify_all()

    def _final_commit(self) -> None:
        failures = 0
        while failures < 3:
            with self.fwd._lock:
                pending = len(self.fwd._buffer) + len(self.fwd._urgent_buffer)
            if not pending and not self._deletes_pending():
                break
            self.retry_at = 0.0
            written = self.q.commits
            self._commit("flush")
            if self.q.commits == written:
                failures += 1
        with contextlib.suppress(QueueError):
            self.q.save_counters()

    def _on_write_error(self, exc: QueueError) -> None:
        if isinstance(exc, DiskFullError):
            # "budget_full": the queue's own page cap stopped a commit that the estimate let through.
            name, reason = ("disk_full" if exc.reason == "disk_full" else "budget_full"), exc.reason
        else:
            name = reason = "write_errors"
        self.q.bump(f"events.{name}")
        log.error("forward queue write failed: %s", exc)
        self.retry_at = time.monotonic() + _RETRY_AFTER_WRITE_ERROR_S
        if isinstance(exc, DiskFullError):
            # The disk is smaller than the budget (or the estimate was short): free space the same way
            # the budget does.
            self.small_batches_until = time.monotonic() + 10.0
            if self._enforce(force=True, reason=exc.reason):
                self.retry_at = time.monotonic()
        self._report_overflow(reason=reason)
        self._refresh_status()

    def _enforce(self, *, force: bool, incoming: int = 0, reason: str = "disk_budget") -> bool:
        # Records sent by this process (in flight or acked) are never compacted or dropped.
        protect = {lane: self.last_sent[lane] for lane in range(len(LANES))}
        result = BudgetResult()
        try:
            result = self.q.enforce_budget(protect, incoming=incoming, force=force, result=result)
        except QueueError as exc:  # what was done before the error is committed and reported below
            log.error("forward queue: could not free space (%s): %s", reason, exc)
        if not result:
            return False
        for lane in result.touched:
            self.prefetch[lane].clear()
            self.exhausted[lane] = False
            self.cursor[lane] = self.last_sent[lane]
        self._loss_report(result, reason=reason)
        return True

    def _loss_report(self, result: BudgetResult, reason: str) -> None:
        log.warning(
            "forward queue over budget (%s): compacted %s, dropped %s", reason, result.compacted, result.dropped
        )
        report = {
            "type": "loss_report",
            "reason": reason,
            "compacted": result.compacted,
            "dropped": result.dropped,
            "dropped_seq_ranges": result.dropped_seq_ranges,
            "epoch": self.q.epoch,
            "totals": {
                k: v for k, v in sorted(self.q.counters.items()) if k.startswith(("dropped.", "compacted.", "lost."))
            },
        }
        self._push_internal(REGISTRY, report)

    def _report_unreadable(self) -> None:
        """Records whose stored bodies failed authentication (or did not inflate) were deleted by the
        queue: the cloud learns which sequence numbers it will never get."""
        ranges: dict[str, list[list[int]]] = {}
        for lane, seq in sorted(self.q.discarded):
            spans = ranges.setdefault(LANES[lane], [])
            if spans and spans[-1][1] + 1 == seq:
                spans[-1][1] = seq
            else:
                spans.append([seq, seq])
        self.q.discarded.clear()
        report = {
            "type": "loss_report",
            "reason": "unreadable_on_disk",
            "unreadable": {name: sum(b - a + 1 for a, b in spans) for name, spans in ranges.items()},
            "unreadable_seq_ranges": ranges,
            "epoch": self.q.epoch,
        }
        self._push_internal(REGISTRY, report)

    def _report_overflow(self, reason: str = "memory_buffer_full") -> None:
        fwd = self.fwd
        with fwd._lock:
            fresh = [fwd._stat_overflow[i] - fwd._reported_overflow[i] for i in range(len(LANES))]
            fwd._reported_overflow = list(fwd._stat_overflow)
        if not any(fresh):
            return
        lost = {LANES[i]: n for i, n in enumerate(fresh) if n}
        for name, n in lost.items():
            self.q.bump(f"lost.{name}", n)
        self._push_internal(
            REGISTRY,
            {"type": "loss_report", "reason": reason, "lost_before_commit": lost, "epoch": self.q.epoch},
        )

    def _push_internal(self, lane: int, record: dict[str, Any]) -> None:
        body = json.dumps(record, separators=(",", ":"))
        with self.fwd._lock:
            # Internal reports bypass the memory bound: they are tiny and are the only trace of a loss.
            self.fwd._requeue([Pending(lane, time.time(), body, 0)])
            self.fwd._accepted_total += 1
            self.fwd._flush_all = True
        self.fwd._wake.set()

    def _refresh_status(self) -> None:
        oldest = [self.q.oldest_created(i) if self.q.counts[i] else None for i in range(len(LANES))]
        db_bytes, wal_bytes, shm_bytes = self.q.file_bytes()
        on_disk = db_bytes + wal_bytes + shm_bytes
        self.peak_bytes = max(self.peak_bytes, on_disk)
        disk = {
            "used_bytes": on_disk,
            "peak_bytes": self.peak_bytes,
            "db_file_bytes": db_bytes,
            "wal_file_bytes": wal_bytes,
            "shm_file_bytes": shm_bytes,
            "records_bytes": self.q.used_bytes(),
        }
        with self.fwd._lock:
            for i in range(len(LANES)):
                self.fwd._stat_depth[i] = self.q.counts[i]
                self.fwd._stat_oldest[i] = oldest[i]
                self.fwd._stat_inflight[i] = len(self.lane_inflight[i])
            self.fwd._stat_disk = disk
            self.fwd._stat_commits = {
                "total": self.q.commits,
                **self.policy.commits,
                "delay_ms": round(self.policy.delay_s * 1000.0, 3),
            }
            self.fwd._counters = dict(self.q.counters)

    # -- publishing ------------------------------------------------------------------------
    def _next_record(self) -> QueuedRecord | None:
        for lane in range(len(LANES)):
            pf = self.prefetch[lane]
            if not pf and not self.exhausted[lane]:
                rows = self.q.fetch(lane, self.cursor[lane], _PREFETCH)
                if self.q.discarded:
                    self._report_unreadable()
                pf.extend(rows)
                if rows:
                    self.cursor[lane] = rows[-1].id
                self.exhausted[lane] = len(rows) < _PREFETCH
            if pf:
                return pf[0]
        return None

    def _sparkplug_births(self) -> Any:
        """Sparkplug: the client to publish on once this connection's births are out (None: not
        connected).  The first time on a connection: forget what was in flight on the last one (its
        client is gone) and send it again after the births; on a host's rebirth request: births again."""
        fwd, session = self.fwd, self.sparkplug
        assert session is not None
        with fwd._lock:
            client, connection, connected = fwd._client, fwd._connects, fwd._connected
            rebirth, fwd._rebirth_requested = fwd._rebirth_requested, False
        if not connected or client is None:
            return None
        if connection != self.born_connection:
            self._rewind()
            births = session.begin(new_connection=True)
        elif rebirth:
            self.encoded = None  # encoded for the births before: seq and births start again
            births = session.begin(new_connection=False)
        else:
            return client
        for topic, payload in births:
            client.publish(topic, payload, qos=1)
        self.born_connection = connection
        return client

    def _rewind(self) -> None:
        """Sparkplug, new connection: records in flight on the last one go out again, from the first
        unacknowledged one of each lane (deletes stay in order; a copy acknowledged before is sent twice)."""
        self.inflight.clear()
        self.sizes.clear()
        self.encoded = None
        for lane in range(len(LANES)):
            order, ahead = self.lane_inflight[lane], self.prefetch[lane]
            if order:
                self.cursor[lane] = order[0] - 1
            elif ahead:
                self.cursor[lane] = ahead[0].id - 1
            order.clear()
            self.lane_acked[lane].clear()
            ahead.clear()
            self.exhausted[lane] = False
        with self.fwd._lock:
            self.fwd._stat_inflight = [0] * len(LANES)

    def _encode(self, record: QueuedRecord) -> list[tuple[str, bytes]]:
        if self.encoded is not None and self.encoded[0] is record:
            messages = self.encoded[1]
            self.encoded = None
            return messages
        self.encoded = None
        try:
            return self.encode(record)
        except Exception as exc:  # a bug in an encoder must not stop the drain
            # Sent as JSON instead, counted: never block the lane on one record.
            log.error("cannot encode record %s of lane %s: %s", record.seq, LANES[record.lane], exc)
            self.q.bump(f"events.encode_fallback_{LANES[record.lane]}")
            return [
                (
                    json_topic(self.cfg.topic_prefix, self.fwd.gateway_id, record.lane),
                    encode_json(self.fwd.gateway_id, record),
                )
            ]

    def _top_up(self) -> None:
        client = self.fwd._client if self.sparkplug is None else self._sparkplug_births()
        if client is None:
            return
        sent = [0] * len(LANES)
        # paho keeps at most max_inflight on the wire and queues the rest, sending them as PUBACKs
        # come in; handing it up to HANDOFF windows at a time saves a thread switch per record.  An
        # alert is handed over at once (it then waits behind at most that many records).
        limit = _HANDOFF * self.cfg.max_inflight
        free = limit - len(self.inflight)
        if free < self.cfg.max_inflight and not self.prefetch[ALERT] and self.exhausted[ALERT]:
            return
        while len(self.inflight) < limit:
            record = self._next_record()
            if record is None:
                break
            messages = self._encode(record)
            size = sum(len(payload) for _topic, payload in messages)
            if self.bandwidth is not None and not self.bandwidth.take(size):
                self.next_wake = min(self.next_wake, max(self.bandwidth.wait_time(size), 0.001))
                self.encoded = (record, messages)  # encoded once: Sparkplug numbered them already
                break
            if self.drain is not None and not self.drain.take(1):
                self.next_wake = min(self.next_wake, max(self.drain.wait_time(1), 0.001))
                self.encoded = (record, messages)
                break
            for topic, payload in messages[:-1]:
                client.publish(topic, payload, qos=1)
            info = client.publish(*messages[-1], qos=1)
            if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
                if self.sparkplug is not None:  # a message missing from the seq: start over with births
                    with self.fwd._lock:
                        self.fwd._rebirth_requested = True
                break  # e.g. queue full: try again on the next wake
            self.prefetch[record.lane].popleft()
            size = min(len(record.body), self.q.max_record_bytes) + self.q.row_overhead
            self.inflight[info.mid] = (record.lane, record.id, size)
            self.lane_inflight[record.lane].append(record.id)
            self.last_sent[record.lane] = record.id
            sent[record.lane] += 1
        if any(sent):
            with self.fwd._lock:
                for i, n in enumerate(sent):
                    self.fwd._stat_sent[i] += n
                    self.fwd._stat_inflight[i] = len(self.lane_inflight[i])
