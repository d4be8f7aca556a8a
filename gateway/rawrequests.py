"""Raw windows for the cloud: on request, and the readings around each alert.

Requests come from the forwarder's command channel (``<prefix>/<gateway>/cmd/request_raw``,
``{"op": "request_raw", "device": "d1", "start": t0, "end": t1}``, Unix seconds) on its
network thread: they are checked and queued here, never served there. Alerts add a request
for the readings around them (at most one per device per ``alert_holdoff_s``). The
processing thread serves due requests between batches, from the raw log, and hands each
window to the forwarder's "raw" lane (the lowest priority, the first dropped on a full disk).
"""

from __future__ import annotations

import logging
import re
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.decisions import Alert
from gateway.export import raw_window
from gateway.rawlog import ChunkReader

log = logging.getLogger(__name__)

_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
COMMAND = "request_raw"


@dataclass(frozen=True)
class RawRequest:
    device: str
    start: float
    end: float
    reason: str  # "request" or "alert"
    ref: dict[str, Any]  # the command, or the alert's identity
    not_before: float  # serve once the raw log holds the span (end + commit margin)


class RawRequests:
    def __init__(
        self,
        data_dir: Path,
        submit: Callable[[str, dict[str, Any]], object],
        *,
        before_s: float = 10.0,
        after_s: float = 2.0,
        holdoff_s: float = 60.0,
        max_samples: int = 20_000,
        max_span_s: float = 3600.0,
        commit_margin_s: float = 1.0,
        max_queued: int = 64,
        reader: ChunkReader | None = None,
    ) -> None:
        """reader: opens the raw log's chunks (decrypts them at rest; the serving thread's)."""
        self.data_dir = data_dir
        self.reader = reader
        self.submit = submit
        self.before_s = before_s
        self.after_s = after_s
        self.holdoff_s = holdoff_s
        self.max_samples = max_samples
        self.max_span_s = max_span_s
        self.commit_margin_s = commit_margin_s
        self._queue: deque[RawRequest] = deque()
        self._lock = threading.Lock()
        self._max_queued = max_queued
        self._last_alert: dict[str, float] = {}
        self.served = 0
        self.rejected = 0
        self.dropped = 0
        self.failed = 0

    def _push(self, req: RawRequest) -> None:
        with self._lock:
            if len(self._queue) >= self._max_queued:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append(req)

    def on_command(self, cmd: dict[str, Any], now: float) -> None:
        """A cloud command (forwarder network thread). Raises ValueError naming the bad field."""
        if cmd.get("command") != COMMAND and cmd.get("op") != COMMAND:
            self.rejected += 1
            raise ValueError(f"unknown command {cmd.get('command')!r}: this gateway serves {COMMAND!r}")
        device: Any = cmd.get("device")
        start: Any = cmd.get("start")
        end: Any = cmd.get("end")
        problem = None
        if not isinstance(device, str) or not _ID_RE.match(device):
            problem = f"device: expected a device id, got {device!r}"
        elif not isinstance(start, int | float) or not isinstance(end, int | float) or not start < end:
            problem = f"start, end: expected Unix times with start < end, got {start!r}, {end!r}"
        elif end - start > self.max_span_s:
            problem = f"end - start: at most {self.max_span_s:g} s per request, got {end - start:g}"
        if problem is not None:
            self.rejected += 1
            raise ValueError(f"{COMMAND}: {problem}")
        ref = {k: v for k, v in cmd.items() if k in ("id", "request_id", "op", "command")}
        self._push(RawRequest(device, float(start), float(end), "request", ref, float(end) + self.commit_margin_s))
        del now

    def on_alert(self, alert: Alert, now: float) -> bool:
        """Queue the readings around an alert (processing thread); False when held off."""
        last = self._last_alert.get(alert.device)
        if last is not None and now - last < self.holdoff_s:
            return False
        self._last_alert[alert.device] = now
        end = alert.window_end + self.after_s
        ref = {"pipeline": alert.pipeline, "boot": alert.boot, "seq": alert.seq, "score": alert.score}
        self._push(RawRequest(alert.device, alert.window_end - self.before_s, end, "alert", ref, end + 1.0))
        return True

    def serve(self, now: float) -> int:
        """Serve the requests that are due (processing thread); returns how many."""
        with self._lock:
            due = [r for r in self._queue if r.not_before <= now]
            if not due:
                return 0
            self._queue = deque(r for r in self._queue if r.not_before > now)
        for req in due:
            try:
                rec = raw_window(
                    self.data_dir, req.device, req.start, req.end, max_samples=self.max_samples, keys=self.reader
                )
            except Exception as exc:  # a missing schema, an unreadable log: report, keep going
                self.failed += 1
                log.warning("raw window for %s [%s, %s] not served: %s", req.device, req.start, req.end, exc)
                continue
            rec["reason"] = req.reason
            rec["ref"] = req.ref
            self.submit("raw", rec)
            self.served += 1
        return len(due)

    def stats(self) -> dict[str, int]:
        with self._lock:
            queued = len(self._queue)
        return {
            "queued": queued,
            "served": self.served,
            "rejected": self.rejected,
            "dropped": self.dropped,
            "failed": self.failed,
        }
