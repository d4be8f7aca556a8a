"""A recording: a sensor stream read from a CSV file or from the raw log, with optional labels.

The one shape every user-data tool works on: ``edgeline-train`` trains on it, ``edgeline-gateway
replay`` feeds it through the pipeline, ``edgeline-train evaluate`` scores it. Readers:
gateway/csvrec.py (CSV files) and gateway/rawrec.py (the gateway's raw log).

A recording is one or more *parts*, each a gap-free run of samples at the recording's rate
(one per CSV file, or per run between gaps in the raw log). Windows never cross a part's end.

Labels are per sample: 0 normal, 1 anomalous (the readers map the label column's values;
``label_names`` keeps what the file called them). A window is anomalous when any of its samples
is: an anomaly that touches a window is one the window should report.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from gateway.errors import GatewayError
from gateway.features import frame


class RecordingError(GatewayError, ValueError):
    """A recording that cannot be used; the message names the file, row or column and what to do."""


@dataclass(frozen=True)
class Part:
    """A gap-free run of samples."""

    t0: float  # time of the first sample, s (Unix time, or 0-based when the file has none)
    values: NDArray[np.float32]  # (n, channels), physical units
    labels: NDArray[np.int8] | None = None  # (n,) 0 normal / 1 anomalous; None: unlabelled
    origin: str = ""  # where it came from, for messages: "pump.csv rows 2-10001"

    @property
    def n(self) -> int:
        return int(self.values.shape[0])


@dataclass(frozen=True)
class Recording:
    channels: tuple[tuple[str, str], ...]  # (name, unit) per column of Part.values
    rate_hz: float
    parts: tuple[Part, ...]
    source: str  # "csv: a.csv, b.csv" or "rawlog: pump-01 2026-12-01T00:00Z..2026-12-02T00:00Z"
    fingerprint: str  # sha256 hex of the input bytes (CSV) or of the decoded samples (raw log)
    label_names: tuple[str, ...] = ()  # the label column's values as written ((): unlabelled)

    @property
    def channel_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.channels)

    @property
    def labelled(self) -> bool:
        return bool(self.parts) and all(p.labels is not None for p in self.parts)

    @property
    def n_samples(self) -> int:
        return sum(p.n for p in self.parts)

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.rate_hz


@dataclass(frozen=True)
class WindowSet:
    """Windows cut from a recording, in time order, with where each came from."""

    values: NDArray[np.float32]  # (n, window, channels)
    part: NDArray[np.int32]  # (n,) index of the part
    start: NDArray[np.int64]  # (n,) index of the first sample within its part
    t_end: NDArray[np.float64]  # (n,) time of the window's last sample, s
    labels: NDArray[np.int8] | None = None  # (n,) 1 when any sample is anomalous
    events: NDArray[np.int32] | None = field(default=None)  # (n,) anomaly event id, -1 none

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def take(self, idx: NDArray[np.intp] | slice) -> WindowSet:
        return WindowSet(
            values=self.values[idx],
            part=self.part[idx],
            start=self.start[idx],
            t_end=self.t_end[idx],
            labels=None if self.labels is None else self.labels[idx],
            events=None if self.events is None else self.events[idx],
        )


def windows(rec: Recording, window: int, hop: int) -> WindowSet:
    """Cut every part into windows of ``window`` samples every ``hop`` samples, from its first
    sample on (as the gateway's windower does from a device's first sample). Events are
    numbered runs of anomalous samples across the whole recording."""
    vals, parts, starts, ends, labels, events = [], [], [], [], [], []
    event_base = 0
    for i, p in enumerate(rec.parts):
        w = frame(p.values, window, hop)
        k = w.shape[0]
        s = np.arange(k, dtype=np.int64) * hop
        vals.append(w)
        parts.append(np.full(k, i, np.int32))
        starts.append(s)
        ends.append(p.t0 + (s + window - 1) / rec.rate_hz)
        if p.labels is not None:
            lab = p.labels.astype(np.int8)
            run_id = _event_ids(lab) + np.where(lab > 0, event_base, 0)
            event_base = int(run_id.max()) + 1 if (lab > 0).any() else event_base
            if k:
                idx = s[:, None] + np.arange(window)[None, :]
                labels.append(lab[idx].max(axis=1).astype(np.int8))
                ev = run_id[idx]
                # the window's event: the first anomalous run it touches (-1: none)
                ev_masked = np.where(ev >= 0, ev, np.iinfo(np.int32).max)
                first = ev_masked.min(axis=1)
                events.append(np.where(first == np.iinfo(np.int32).max, -1, first).astype(np.int32))
            else:
                labels.append(np.zeros(0, np.int8))
                events.append(np.zeros(0, np.int32))
    nch = len(rec.channels)
    return WindowSet(
        values=np.concatenate(vals) if vals else np.zeros((0, window, nch), np.float32),
        part=np.concatenate(parts) if parts else np.zeros(0, np.int32),
        start=np.concatenate(starts) if starts else np.zeros(0, np.int64),
        t_end=np.concatenate(ends) if ends else np.zeros(0, np.float64),
        labels=np.concatenate(labels) if rec.labelled and labels else None,
        events=np.concatenate(events) if rec.labelled and events else None,
    )


def _event_ids(labels: NDArray[np.int8]) -> NDArray[np.int32]:
    """0, 1, 2 ... per run of anomalous samples; -1 on normal samples."""
    on = labels > 0
    starts = on & ~np.concatenate([[False], on[:-1]])
    ids = np.cumsum(starts) - 1
    return np.where(on, ids, -1).astype(np.int32)


def time_split(ws: WindowSet, fractions: tuple[float, ...]) -> list[WindowSet]:
    """Split windows by time into consecutive sets of the given fractions (summing to 1).

    Windows are in time order; each set is a contiguous run, so no later data leaks into an
    earlier set. Overlapping windows at a boundary go to the earlier set only: the first
    windows of the next set that share samples with it are dropped.
    """
    if abs(sum(fractions) - 1.0) > 1e-9 or any(f <= 0 for f in fractions):
        raise RecordingError(f"split fractions must be > 0 and add up to 1, got {fractions}")
    n = len(ws)
    cuts = np.round(np.cumsum((0.0, *fractions)) * n).astype(int)
    out = []
    for a, b in itertools.pairwise(cuts):
        idx = np.arange(a, b)
        if a > 0 and idx.size:
            prev = a - 1
            window = ws.values.shape[1]
            overlap = (ws.part[idx] == ws.part[prev]) & (ws.start[idx] < ws.start[prev] + window)
            idx = idx[~overlap]
        out.append(ws.take(idx))
    return out


def fingerprint_bytes(chunks: list[bytes]) -> str:
    """sha256 over the inputs, each length-prefixed (so a.csv+b.csv differs from ab.csv)."""
    h = hashlib.sha256()
    for c in chunks:
        h.update(len(c).to_bytes(8, "little"))
        h.update(c)
    return h.hexdigest()
