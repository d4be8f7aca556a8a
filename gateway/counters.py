"""What the processing stages count: frames by kind, rejected frames, alerts, commands."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

MAX_BAD_DEVICES = 4096  # devices counted apart in BadFrames; the rest count under "?"


@dataclass
class BadFrames:
    """Rejected frames counted per device and reason, with a bounded sample."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    sample: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=50))
    total: int = 0

    def add(self, device: str, reason: str, *, message: str, topic: str, payload: bytes, at: float) -> None:
        per = self.counts.get(device)
        if per is None:
            if len(self.counts) >= MAX_BAD_DEVICES:
                device = "?"  # a flood of invented ids must not grow this table
            per = self.counts.setdefault(device, {})
        per[reason] = per.get(reason, 0) + 1
        self.total += 1
        self.sample.append(
            {
                "at": at,
                "device": device,
                "topic": topic[:128],
                "reason": reason,
                "error": message[:200],
                "length": len(payload),
                "head_hex": payload[:48].hex(),
            }
        )


@dataclass
class Counters:
    """Counted on the processing thread only (the writer thread keeps its own, gateway/acker.py)."""

    batches: int = 0
    frames: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    readings: int = 0
    data_frames: int = 0
    no_schema: int = 0
    rebirth_requests: int = 0
    alerts: int = 0  # episodes raised
    alerts_cleared: int = 0
    alert_updates: int = 0
    commands: int = 0
    publish_failures: int = 0
    summaries: int = 0
    pending_dropped: int = 0
    empty: int = 0  # zero-length messages (retained-message clears), ignored
    loss_frames: int = 0  # LOSS frames received (answers to CMD_RESEND)
    summaries_rebuilt: int = 0  # summary records rebuilt from the raw log at start-up
    alert_latency_ms_max: float = 0.0

    def kind(self, kind: str, n: int = 1) -> None:
        self.by_kind[kind] = self.by_kind.get(kind, 0) + n
