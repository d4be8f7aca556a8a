"""What an operator sees of each device right now: the last readings, a short history
of readings and anomaly scores for plots, the alert state per pipeline and the
configuration the device last reported. The device registry (gateway/registry.py)
stays the one source of availability, firmware, schema, health and last-seen; this
view adds what the registry does not keep.

Written by the processing thread (the alert stage feeds readings and scores, the
alert states their records); read by the local state topics (gateway/localstate.py,
same thread) and by the status page and /metrics (web threads). Readers on other
threads take ``lock``; the ``fleet()`` rows are a new list at most once a second (never
mutated after it is returned).

Plot histories: the readings come from the raw log (gateway/rawlog.py, read-only on the
web thread, one point per ``step_s``: the last reading of each step), so they cost no memory
here. Anomaly scores are kept nowhere else: the highest score of each ``step_s`` goes into a
preallocated ring (150 x 0.8 s = two minutes; 1.2 KB per device and pipeline).
``points`` 0 keeps none (a gateway without its status page).

The fleet rows are built when asked (``fleet()``, at most once a second, on the asking thread),
not on the processing thread: 10,000 rows a second cost a tenth of a core nobody may be using.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from gateway.atrest import KeyRing
from gateway.export import readings as decoded_readings
from gateway.rawlog import read_frames
from gateway.registry import DeviceInfo, Registry
from shared_protocol import DATA
from shared_protocol.decode import Schema

HISTORY_POINTS = 300  # readings: 300 x 0.4 s, read from the raw log when asked
HISTORY_STEP_S = 0.4
SCORE_POINTS = 150  # scores kept: 150 x 0.8 s (the highest of each step), 1.2 KB a device and pipeline
SCORE_STEP_S = 0.8
RATE_S = 1.0  # the rate shown is measured over at least this much device time
FRAME_SPAN_S = 5.0  # a DATA frame's readings span at most this (its time is its first reading's)
REFRESH_S = 1.0
EPISODES = 20  # alert episodes kept per device for the plots' markers


class ScoreRing:
    """The highest score of each ``step_s`` over the last ``size`` steps, in preallocated arrays:
    the step's index (uint32: steps of 0.8 s since 1970 fit until 2078) and the score (float32),
    8 bytes a point, no object per point. A point's time is the end of its step."""

    __slots__ = ("i", "k", "n", "step_s", "v")

    def __init__(self, size: int, step_s: float) -> None:
        self.step_s = step_s
        self.k = np.zeros(size, dtype=np.uint32)
        self.v = np.zeros(size, dtype=np.float32)
        self.i = 0  # next slot
        self.n = 0  # points held

    def put_max(self, t: float, value: float) -> None:
        k = int(t // self.step_s)
        size = self.k.shape[0]
        if self.n:
            last = (self.i - 1) % size
            if int(self.k[last]) == k:
                self.v[last] = max(float(self.v[last]), value)
                return
        self.k[self.i] = k
        self.v[self.i] = value
        self.i = (self.i + 1) % size
        self.n = min(self.n + 1, size)

    def since(self, t0: float) -> tuple[list[float], list[float]]:
        """(times, scores) of the steps that end after t0, in order."""
        order = np.arange(self.i - self.n, self.i) % self.k.shape[0]
        t = (self.k[order].astype(np.float64) + 1.0) * self.step_s
        keep = t > t0
        return t[keep].tolist(), self.v[order][keep].tolist()


@dataclass(slots=True)
class LiveDevice:
    device: str
    values: list[float] = field(default_factory=list)  # the last reading, in the order of the channels
    values_at: float = 0.0  # its rebuilt wall-clock time
    scores: dict[str, ScoreRing] = field(default_factory=dict)  # pipeline -> the highest score of each step
    thresholds: dict[str, float] = field(default_factory=dict)  # pipeline -> threshold in force
    alerts: dict[str, dict[str, Any]] = field(default_factory=dict)  # pipeline -> latest alert record
    episodes: deque[dict[str, Any]] | None = None  # the last EPISODES alert episodes, oldest first
    config: dict[str, Any] = field(default_factory=dict)  # as last acknowledged by the device
    config_at: float = 0.0
    samples: int = 0  # readings (rows of all channels) accepted since the gateway started
    gaps: int = 0  # gaps found (frames missing before a run)
    # the rate shown (fleet table, state topic): samples at the start of the current measure
    rate_hz: float = 0.0
    _samples_then: int = 0
    _then: float = 0.0


class LiveView:
    def __init__(
        self,
        registry: Registry,
        *,
        rawlog: Path | None = None,
        points: int = HISTORY_POINTS,
        step_s: float = HISTORY_STEP_S,
        keys: KeyRing | None = None,
    ) -> None:
        """rawlog: the raw log file the readings' plot history is read from (None: no history);
        keys: its key ring when it is encrypted at rest."""
        self.registry = registry
        self.rawlog = rawlog
        self.keys = keys
        self.points = points
        self.step_s = step_s
        self.lock = threading.Lock()
        self.devices: dict[str, LiveDevice] = {}
        self._fleet: list[dict[str, Any]] = []
        self._next_refresh = 0.0
        self._changed: set[str] = set()  # anything shown changed, readings too (the JSON state)
        self._events: set[str] = set()  # availability, health, alert state or config changed

    def _get(self, device: str) -> LiveDevice:
        d = self.devices.get(device)
        if d is None:
            d = self.devices[device] = LiveDevice(device)
        return d

    # ------------------------------------------------------------------ fed by the pipeline
    def readings(self, device: str, wall: float, period_s: float, block: NDArray[np.float32], missing: int) -> None:
        """A run of consecutive readings of one device: block is (samples, channels), the
        first sample at wall-clock time ``wall``, one every ``period_s``."""
        n = block.shape[0]
        if not n:
            return
        last = block[-1].tolist()
        with self.lock:
            d = self.devices.get(device) or self._get(device)
            d.samples += n
            if missing:
                d.gaps += 1
            last_t = wall + (n - 1) * period_s
            d.values = last
            d.values_at = last_t
            if not d._then:
                d._samples_then, d._then = d.samples - n, wall
            elif last_t - d._then >= RATE_S:
                d.rate_hz = (d.samples - d._samples_then) / (last_t - d._then)
                d._samples_then, d._then = d.samples, last_t
            self._changed.add(device)

    def scores(
        self, device: str, pipeline: str, times: NDArray[np.float64], scores: NDArray[Any], threshold: float
    ) -> None:
        """Anomaly scores of consecutive windows of one device (window end times)."""
        with self.lock:
            d = self._get(device)
            d.thresholds[pipeline] = float(threshold)
            if not self.points:
                return
            hist = d.scores.get(pipeline)
            if hist is None:
                hist = d.scores[pipeline] = ScoreRing(SCORE_POINTS, SCORE_STEP_S)
            for t, v in zip(times.tolist(), np.asarray(scores, dtype=np.float64).tolist(), strict=True):
                hist.put_max(t, v)

    def alert(self, record: dict[str, Any]) -> None:
        """The latest alert record of a (device, pipeline): state raised, updated or cleared."""
        with self.lock:
            d = self._get(record["device"])
            d.alerts[record["pipeline"]] = record
            brief = {k: record.get(k) for k in ("alert_id", "pipeline", "since", "cleared_at", "peak", "historical")}
            if d.episodes is None:
                d.episodes = deque(maxlen=EPISODES)
            if d.episodes and d.episodes[-1]["alert_id"] == brief["alert_id"]:
                d.episodes[-1] = brief
            else:
                d.episodes.append(brief)
            self._changed.add(record["device"])
            self._events.add(record["device"])

    def set_config(self, device: str, config: dict[str, Any], at: float) -> None:
        """The configuration a device acknowledged (remote configuration)."""
        with self.lock:
            d = self._get(device)
            d.config = dict(config)
            d.config_at = at
            self._changed.add(device)
            self._events.add(device)

    def touch(self, device: str) -> None:
        """Something of the device the registry keeps changed (BIRTH, HEALTH, DEATH, silence,
        back online)."""
        with self.lock:
            self._changed.add(device)
            self._events.add(device)

    def take_changed(self) -> tuple[set[str], set[str]]:
        """(devices whose state changed, those of them with more than new readings) since the
        last call (for the state topics)."""
        with self.lock:
            changed, self._changed = self._changed, set()
            events, self._events = self._events, set()
        return changed, events

    # ------------------------------------------------------------------ read side
    def fleet(self, now: float | None = None) -> list[dict[str, Any]]:
        """One row per known device (safe from any thread): built at most once every REFRESH_S,
        by the first caller after that (the rows are never changed once returned)."""
        now = time.time() if now is None else now
        if now >= self._next_refresh:
            rows = []
            devices = list(self.registry.devices.items())  # one step under the GIL: a safe copy
            devices.sort()
            with self.lock:
                for device, info in devices:
                    rows.append(fleet_row(info, self.devices.get(device), now))
            self._fleet = rows
            self._next_refresh = now + REFRESH_S
        return self._fleet

    def detail(self, device: str, *, since: float | None = None) -> dict[str, Any] | None:
        """Everything about one device, with its plot histories (points after ``since``)."""
        info = self.registry.devices.get(device)
        if info is None:
            return None
        with self.lock:
            d = self.devices.get(device)
            row = fleet_row(info, d, None)
            t0 = -np.inf if since is None else since
            newest = d.values_at if d is not None else 0.0
            scores = {p: h.since(t0) for p, h in d.scores.items()} if d is not None else {}
            thresholds = dict(d.thresholds) if d is not None else {}
            episodes = [dict(e) for e in d.episodes] if d is not None and d.episodes else []
        t, values = self._readings(device, info, since, newest)
        row["health"] = dict(info.last_health)
        row["episodes"] = episodes  # the last EPISODES alert episodes: alert_id, pipeline, since, cleared_at
        row["history"] = {
            "channels": [c[0] for c in info.channels or ()],
            "t": t,
            "values": values,
            "scores": {p: {"t": st, "score": sv} for p, (st, sv) in scores.items()},
            "thresholds": thresholds,
        }
        return row

    def _readings(
        self, device: str, info: DeviceInfo, since: float | None, newest: float
    ) -> tuple[list[float], list[list[float]]]:
        """The last reading of each step_s after ``since`` (at most points x step_s back from
        the newest reading), from the raw log: (times, one list of values per channel)."""
        if self.rawlog is None or not self.points or not info.channels or not newest:
            return [], []
        t_from = newest - self.points * self.step_s
        if since is not None:
            t_from = max(t_from, since)
        rows = read_frames(self.rawlog, device, t_from - FRAME_SPAN_S, newest, types=(DATA,), keys=self.keys)
        t, v, _skipped = decoded_readings(rows, Schema([tuple(c) for c in info.channels]))
        keep = t > t_from
        t, v = t[keep], v[keep]
        if not t.size:
            return [], []
        step = np.floor(t / self.step_s)
        last = np.flatnonzero(np.diff(step, append=np.inf) != 0)  # the last reading of each step
        return t[last].tolist(), v[last].T.tolist()


def fleet_row(info: DeviceInfo, d: LiveDevice | None, now: float | None) -> dict[str, Any]:
    """The fleet table's row of one device (registry facts + live ones)."""
    health = info.last_health
    channels = info.channels or ()
    row: dict[str, Any] = {
        **info.facts(),
        "channels": [{"name": c[0], "unit": c[1], "rate_hz": c[5]} for c in channels],
        "queue_depth": health.get("queue_depth"),
        "rssi": health.get("rssi"),
        "free_heap": health.get("free_heap"),
        "values": {},
        "values_at": None,
        "rate_hz": 0.0,
        "samples": 0,
        "gaps": 0,
        "alerts": {},
        "config": {},
    }
    if now is not None:
        row["age_s"] = round(now - info.last_seen, 3)
    if d is not None:
        row["values"] = {c[0]: v for c, v in zip(channels, d.values, strict=False)}
        row["values_at"] = d.values_at or None
        row["rate_hz"] = round(d.rate_hz, 2)
        row["samples"] = d.samples
        row["gaps"] = d.gaps
        row["alerts"] = {p: dict(r) for p, r in d.alerts.items()}
        row["config"] = dict(d.config)
    return row
