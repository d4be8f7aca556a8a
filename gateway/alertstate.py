"""Alert states: one fault is one episode per (device, pipeline), not one alert per window.

    ok --(raise_after windows in a row over the threshold)--> raised
    raised --(clear_after windows in a row below clear_below x threshold)--> ok

While raised, an "updated" record goes out at most every ``update_interval_s`` with
the count of windows over the threshold and the peak score. The gap between the
threshold and the clear level (hysteresis) and the run of quiet windows needed to
clear (hold-off) keep a score that hovers around the threshold from raising and
clearing on every window.

Windows arrive per pipeline in order per device. Replayed (historical) windows go
through the same machine, so a fault that happened during an outage still becomes
one episode; its records say ``historical``. Which records the actuator rules act on
(``Alert.acts``) is decided here, once:

- a raise from a live window acts; a raise from a replayed one does not (too late);
- an episode raised from replayed data acts at its first live window over the
  threshold (the fault is still there now): an "updated" record, sent at once;
- a clear acts when the episode's rules acted, replayed or not (it undoes them: an
  output held while raised is never left on after the episode ends).

Thresholds: the pipeline's (model manifest or config), or a device's own learned by
per-device calibration (``set_calibrated``, gateway/calibration.py), or a per-device
override set by an operator (``set_threshold``), which wins over both.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

RAISED, UPDATED, CLEARED = "raised", "updated", "cleared"


@dataclass(frozen=True)
class AlertPolicy:
    raise_after: int = 1  # windows in a row over the threshold that raise (1: the first one)
    clear_below: float = 0.8  # clear level as a fraction of the threshold
    clear_after: int = 5  # windows in a row below the clear level that clear
    update_interval_s: float = 10.0  # at most one "updated" record per episode this often


@dataclass(frozen=True)
class Alert:
    """A record of an alert episode: raised, updated or cleared (JSON: ``to_record``)."""

    device: str
    pipeline: str
    window_end: float  # rebuilt wall-clock time of the latest window's last sample (s)
    score: float  # of the latest window
    threshold: float
    model_version: str
    received: float  # gateway receive time of the frame that completed the latest window
    decided: float  # when the gateway decided (s); decided - received = gateway latency
    historical: bool = False  # the completing frame was replayed from the device's queue
    boot: int = 0  # (boot, seq) of the frame that completed the latest window
    seq: int = 0
    state: str = RAISED
    alert_id: str = ""  # stable over the episode: device/pipeline/boot-seq of the raising window
    since: float = 0.0  # window end of the window that raised
    peak: float = 0.0
    windows_over: int = 1
    windows: int = 1
    cleared_at: float | None = None
    acts: bool = False  # the actuator rules act on this record (see the module's docstring)

    def to_record(self) -> dict[str, Any]:
        rec = asdict(self)
        rec["latency_ms"] = {
            "gateway": round((self.decided - self.received) * 1000.0, 3),
            "since_window_end": round((self.decided - self.window_end) * 1000.0, 3),
        }
        if self.cleared_at is not None:
            rec["duration_s"] = round(self.cleared_at - self.since, 3)
        return rec

    def to_json(self) -> bytes:
        return json.dumps(self.to_record(), separators=(",", ":")).encode()


@dataclass(frozen=True)
class Window:
    """One scored window, as the alert state machine sees it."""

    device: str
    pipeline: str
    window_end: float
    received: float
    score: float
    threshold: float
    historical: bool
    boot: int
    seq: int
    model_version: str


@dataclass(slots=True)
class Episode:
    alert_id: str
    since: float  # window end of the window that raised
    raised: Window
    last: Window
    peak: float
    windows: int = 1
    windows_over: int = 1
    quiet: int = 0  # windows in a row below the clear level
    last_update: float = 0.0
    acted: bool = False  # the rules acted on this episode (a live window over the threshold)

    def record(self, state: str, decided: float, *, cleared_at: float | None = None, acts: bool = False) -> Alert:
        w = self.last
        return Alert(
            device=w.device,
            pipeline=w.pipeline,
            window_end=w.window_end,
            score=w.score,
            threshold=w.threshold,
            model_version=w.model_version,
            received=w.received,
            decided=decided,
            historical=w.historical,
            boot=w.boot,
            seq=w.seq,
            state=state,
            alert_id=self.alert_id,
            since=self.since,
            peak=self.peak,
            windows_over=self.windows_over,
            windows=self.windows,
            cleared_at=cleared_at,
            acts=acts,
        )


@dataclass(slots=True)
class _Track:
    over_run: int = 0  # windows in a row over the threshold (before raising)
    run_start: float = 0.0  # window end of the first of them
    run_peak: float = 0.0
    episode: Episode | None = None


class AlertStates:
    def __init__(self, policy: AlertPolicy | None = None) -> None:
        self.policy = policy or AlertPolicy()
        self._tracks: dict[tuple[str, str], _Track] = {}  # only devices over, or raised
        self._overrides: dict[tuple[str, str], float] = {}
        self._calibrated: dict[tuple[str, str], float] = {}
        self.raised = 0
        self.cleared = 0
        self.updates = 0

    # ------------------------------------------------------------------ thresholds
    def set_threshold(self, device: str, pipeline: str, threshold: float | None) -> None:
        """A per-device threshold for one pipeline (None: back to the pipeline's)."""
        if threshold is None:
            self._overrides.pop((device, pipeline), None)
        else:
            self._overrides[(device, pipeline)] = float(threshold)

    def set_calibrated(self, device: str, pipeline: str, threshold: float | None) -> None:
        """A device's threshold learned by calibration (None: none); an operator's wins."""
        if threshold is None:
            self._calibrated.pop((device, pipeline), None)
        else:
            self._calibrated[(device, pipeline)] = float(threshold)

    def overrides(self) -> dict[tuple[str, str], float]:
        return dict(self._overrides)

    def calibrated(self) -> dict[tuple[str, str], float]:
        return dict(self._calibrated)

    def threshold(self, device: str, pipeline: str, default: float) -> float:
        """The threshold in force for one device: operator's, else calibrated, else default."""
        key = (device, pipeline)
        t = self._overrides.get(key)
        if t is None:
            t = self._calibrated.get(key)
        return float(default) if t is None else t

    def thresholds(self, pipeline: str, devices: list[str], default: float) -> NDArray[np.float64]:
        out = np.full(len(devices), float(default))
        if self._overrides or self._calibrated:
            for i, device in enumerate(devices):
                t = self.threshold(device, pipeline, default)
                if t != default:
                    out[i] = t
        return out

    # ------------------------------------------------------------------ the machine
    def active_indices(self, pipeline: str, devices: list[str], over: NDArray[np.bool_]) -> list[int]:
        """Windows the machine must look at, in order: every window of a device it tracks or
        with a window over the threshold in this batch. A window under the threshold after one
        over it in the same batch counts too (it breaks a run towards ``raise_after``, or is
        quiet towards the clear); the other devices' windows cost nothing."""
        hits = np.flatnonzero(over).tolist()
        tracked = {d for d, p in self._tracks if p == pipeline}
        if not hits and not tracked:
            return []
        watched = tracked.union(devices[i] for i in hits)
        first = 0 if tracked else hits[0]  # untracked devices: nothing to step before their first hit
        return [i for i in range(first, len(devices)) if devices[i] in watched]

    def step(self, w: Window, now: float) -> Alert | None:
        """One window, in order per (device, pipeline): the record of a transition or update, if any."""
        key = (w.device, w.pipeline)
        track = self._tracks.get(key)
        over = w.score > w.threshold
        if track is None:
            if not over:
                return None
            track = self._tracks[key] = _Track()
        ep = track.episode
        p = self.policy
        if ep is None:
            if not over:
                del self._tracks[key]
                return None
            if not track.over_run:
                track.run_start, track.run_peak = w.window_end, w.score
            track.over_run += 1
            track.run_peak = max(track.run_peak, w.score)
            if track.over_run < p.raise_after:
                return None
            ep = track.episode = Episode(
                alert_id=f"{w.device}/{w.pipeline}/{w.boot}-{w.seq}",
                since=track.run_start,
                raised=w,
                last=w,
                peak=track.run_peak,
                windows=track.over_run,
                windows_over=track.over_run,
                last_update=now,
                acted=not w.historical,
            )
            self.raised += 1
            return ep.record(RAISED, now, acts=ep.acted)
        ep.last = w
        ep.windows += 1
        if over:
            ep.windows_over += 1
            ep.peak = max(ep.peak, w.score)
        clear_level = w.threshold - (1.0 - p.clear_below) * abs(w.threshold)
        ep.quiet = ep.quiet + 1 if w.score < clear_level else 0
        if ep.quiet >= p.clear_after:
            del self._tracks[key]
            self.cleared += 1
            return ep.record(CLEARED, now, cleared_at=w.window_end, acts=ep.acted)
        if over and not ep.acted and not w.historical:
            ep.acted = True  # raised from replayed data, and still over in live data
            ep.last_update = now
            self.updates += 1
            return ep.record(UPDATED, now, acts=True)
        if now - ep.last_update >= p.update_interval_s:
            ep.last_update = now
            self.updates += 1
            return ep.record(UPDATED, now)
        return None

    def active(self) -> list[Alert]:
        """The raised episodes, as of their latest window."""
        return [
            t.episode.record(UPDATED, t.episode.last_update) for t in self._tracks.values() if t.episode is not None
        ]
