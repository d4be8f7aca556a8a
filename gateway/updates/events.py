"""Every transition of an update, in one place: the log, the status (``updates`` section),
the local broker's retained state topic ``<prefix>/<site>/_gateway/updates`` and a record
to the cloud (lane "registry", ``{"type": "update", ...}``), so what happened to a bundle is
visible at the site and in the cloud, and survives an outage of either link.

Thread-safe: the delivery thread, the processing thread and the rollout call ``record``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger("gateway.updates")

RECENT = 50  # transitions kept for the status page
MAX_TOTALS = 500  # counted (kind, name, state, code) keys; more are counted under the name "(other)"

#: publish(topic, payload, retain) on the local broker; submit(lane, record) to the cloud
Publish = Callable[[str, bytes, bool], object]
Submit = Callable[[str, dict[str, Any]], object]


class UpdateEvents:
    def __init__(self, *, state_topic: str | None, publish: Publish | None, submit: Submit | None) -> None:
        self._lock = threading.Lock()
        self._recent: deque[dict[str, Any]] = deque(maxlen=RECENT)
        self._current: dict[str, dict[str, Any]] = {}  # "<kind>/<name>" -> its latest transition
        self._totals: dict[tuple[str, str, str, str], int] = {}  # (kind, name, state, code) -> count (/metrics)
        self._topic = state_topic
        self._publish = publish
        self._submit = submit
        self.count = 0

    def record(self, kind: str, name: str, state: str, *, reason: str | None = None, **fields: Any) -> dict[str, Any]:
        """One transition: ``state`` is a short word ("received", "refused", "shadow",
        "promoted", "rolled_back", ...), ``reason`` the why of a refusal or rollback (a
        sentence a user can act on), fields anything else (version, counter, device...).
        Never pass secrets."""
        event = {"kind": kind, "name": name, "state": state, "at": round(time.time(), 3), **fields}
        if reason is not None:
            event["reason"] = reason
        with self._lock:
            self.count += 1
            self._recent.append(event)
            self._current[f"{kind}/{name}"] = event
            key = (kind, name, state, str(fields.get("code") or ""))
            if key not in self._totals and len(self._totals) >= MAX_TOTALS:
                key = (kind, "(other)", state, key[3])
            self._totals[key] = self._totals.get(key, 0) + 1
            snapshot = dict(self._current)
        level = (
            logging.WARNING if state in ("refused", "rolled_back", "failed", "halted", "not_promoted") else logging.INFO
        )
        log.log(level, "update %s %s: %s%s", kind, name, state, f" ({reason})" if reason else "")
        if self._publish is not None and self._topic is not None:
            self._publish(self._topic, json.dumps(snapshot, separators=(",", ":")).encode(), True)
        if self._submit is not None:
            try:
                self._submit("registry", {"type": "update", **event})
            except Exception:  # a full disk or a stopped forwarder must not stop an update
                log.exception("update %s %s: the record to the cloud could not be queued", kind, name)
        return event

    def status(self) -> dict[str, Any]:
        """``totals``: transitions since the start counted per kind, name, state and refusal
        code (the bundle check that failed; "" for others), what /metrics exports."""
        with self._lock:
            totals = [
                {"kind": k, "name": n, "state": s, "code": c, "count": v}
                for (k, n, s, c), v in sorted(self._totals.items())
            ]
            return {
                "current": dict(self._current),
                "recent": list(self._recent),
                "transitions": self.count,
                "totals": totals,
            }
