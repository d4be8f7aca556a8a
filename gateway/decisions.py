"""Decisions: scores -> alerts, actuator commands and per-interval summaries.

Plain data in (scores with their window metadata, decoded sample blocks),
plain data out (Alert records, Command records, summary dicts). Publishing is
the pipeline's job, so every decision here is testable without a broker.
"""

from __future__ import annotations

import fnmatch
import json
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from gateway.config import RuleSection


@dataclass(frozen=True)
class Alert:
    device: str
    pipeline: str
    window_end: float  # rebuilt wall-clock time of the window's last sample (s)
    score: float
    threshold: float
    model_version: str
    received: float  # gateway receive time of the frame that completed the window
    decided: float  # when the gateway decided (s); decided - received = gateway latency
    historical: bool = False  # the completing frame was replayed from the device's queue
    boot: int = 0  # (boot, seq) of the frame that completed the window
    seq: int = 0

    def to_record(self) -> dict[str, Any]:
        rec = asdict(self)
        rec["latency_ms"] = {
            "gateway": round((self.decided - self.received) * 1000.0, 3),
            "since_window_end": round((self.decided - self.window_end) * 1000.0, 3),
        }
        return rec

    def to_json(self) -> bytes:
        return json.dumps(self.to_record(), separators=(",", ":")).encode()


@dataclass(frozen=True)
class Command:
    """CMD_SET_OUTPUT for an actuator, decided by a rule."""

    rule: str
    device: str
    output: int
    value: int
    duration_ms: int
    cause: Alert


@dataclass
class _RuleState:
    rule: RuleSection
    last_fired: float = -math.inf
    fired: int = 0
    suppressed: int = 0


class Decider:
    """Threshold scores into alerts; match alerts against actuator rules."""

    def __init__(self, rules: tuple[RuleSection, ...] = ()) -> None:
        self._rules = [_RuleState(r) for r in rules]
        self.alerts = 0
        self.windows = 0

    def decide(
        self,
        *,
        pipeline: str,
        devices: list[str],
        window_end: NDArray[np.float64],
        received: NDArray[np.float64],
        historical: NDArray[np.bool_],
        scores: NDArray[np.floating[Any]],
        boot: NDArray[np.int64] | None = None,
        seq: NDArray[np.int64] | None = None,
        threshold: float,
        model_version: str,
        now: float,
    ) -> tuple[list[Alert], list[Command]]:
        """One alert per window whose score exceeds the threshold (vectorised test)."""
        self.windows += len(scores)
        hits = np.flatnonzero(scores > threshold)
        alerts = [
            Alert(
                device=devices[i],
                pipeline=pipeline,
                window_end=float(window_end[i]),
                score=float(scores[i]),
                threshold=float(threshold),
                model_version=model_version,
                received=float(received[i]),
                decided=now,
                historical=bool(historical[i]),
                boot=int(boot[i]) if boot is not None else 0,
                seq=int(seq[i]) if seq is not None else 0,
            )
            for i in hits
        ]
        self.alerts += len(alerts)
        commands: list[Command] = []
        for alert in alerts:
            commands.extend(self.commands_for(alert, now))
        return alerts, commands

    def commands_for(self, alert: Alert, now: float) -> list[Command]:
        out: list[Command] = []
        if alert.historical:
            return out  # replayed data: too late to drive an actuator
        for st in self._rules:
            r = st.rule
            if r.pipeline is not None and r.pipeline != alert.pipeline:
                continue
            if not fnmatch.fnmatchcase(alert.device, r.on_alert_from):
                continue
            cooldown = r.cooldown_s if r.cooldown_s > 0 else 0.0
            if now - st.last_fired < cooldown:
                st.suppressed += 1
                continue
            st.last_fired = now
            st.fired += 1
            out.append(
                Command(
                    rule=r.name,
                    device=r.device,
                    output=r.output,
                    value=r.value,
                    duration_ms=round(r.duration_s * 1000),
                    cause=alert,
                )
            )
        return out

    def rule_stats(self) -> list[dict[str, Any]]:
        return [{"rule": s.rule.name, "fired": s.fired, "suppressed": s.suppressed} for s in self._rules]


class _ChannelStats:
    """Running per-channel statistics (count, mean, M2 = sum of squared deviations, min, max).

    Rows are copied into a small per-device buffer and folded in with Chan's parallel
    formula when it is full, so the per-batch cost is a copy, the memory per device is
    bounded (FOLD_ROWS rows, whatever the interval) and the variance stays sound."""

    def __init__(self, names: tuple[str, ...]) -> None:
        n = len(names)
        self.names = names
        self.count = 0
        self.mean: NDArray[np.float64] = np.zeros(n)
        self.m2: NDArray[np.float64] = np.zeros(n)
        self.min: NDArray[np.float64] = np.full(n, np.inf)
        self.max: NDArray[np.float64] = np.full(n, -np.inf)
        self._buf: NDArray[np.float32] = np.empty((FOLD_ROWS, n), dtype=np.float32)
        self._fill = 0

    def add(self, values: NDArray[np.float32]) -> None:
        i = 0
        rows = values.shape[0]
        while i < rows:
            take = min(rows - i, FOLD_ROWS - self._fill)
            self._buf[self._fill : self._fill + take] = values[i : i + take]
            self._fill += take
            i += take
            if self._fill == FOLD_ROWS:
                self.fold()

    def fold(self) -> None:
        if not self._fill:
            return
        v = self._buf[: self._fill].astype(np.float64)
        self._fill = 0
        n_b = v.shape[0]
        mean_b = v.mean(axis=0)
        d = v - mean_b
        m2_b = np.einsum("ij,ij->j", d, d)
        n_a = self.count
        n = n_a + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self.m2 = self.m2 + m2_b + delta * delta * (n_a * n_b / n)
        np.minimum(self.min, v.min(axis=0), out=self.min)
        np.maximum(self.max, v.max(axis=0), out=self.max)
        self.count = n


FOLD_ROWS = 64  # rows buffered per device (6 channels: 1.5 KiB) before they are folded in


class Summaries:
    """Per-interval statistics per device: readings per channel, anomaly scores."""

    def __init__(self, interval_s: float, *, start: float) -> None:
        self.interval_s = interval_s
        self._start = start
        self._channels: dict[str, _ChannelStats] = {}
        self._scores: dict[tuple[str, str], tuple[list[NDArray[np.float64]], float]] = {}
        self._gaps: dict[str, int] = {}
        self._duplicates: dict[str, int] = {}

    def add_values(self, device: str, names: tuple[str, ...], values: NDArray[np.float32]) -> None:
        st = self._channels.get(device)
        if st is None or st.names != names:
            # A new schema starts its statistics afresh (what was summed so far is in other columns).
            st = self._channels[device] = _ChannelStats(names)
        st.add(values)

    def add_scores(self, device: str, pipeline: str, scores: NDArray[np.floating[Any]], threshold: float) -> None:
        key = (device, pipeline)
        entry = self._scores.get(key)
        s = np.asarray(scores, dtype=np.float64)
        if entry is None:
            self._scores[key] = ([s], threshold)
        else:
            entry[0].append(s)
            self._scores[key] = (entry[0], threshold)

    def add_gap(self, device: str) -> None:
        self._gaps[device] = self._gaps.get(device, 0) + 1

    def add_duplicate(self, device: str) -> None:
        self._duplicates[device] = self._duplicates.get(device, 0) + 1

    @property
    def start(self) -> float:
        """Start of the interval in progress."""
        return self._start

    def due(self, now: float) -> bool:
        return now - self._start >= self.interval_s

    def flush(self, now: float) -> list[dict[str, Any]]:
        """One summary record per device for the interval [start, now); resets."""
        devices = sorted(set(self._channels) | {d for d, _ in self._scores} | set(self._gaps))
        out = []
        for device in devices:
            rec: dict[str, Any] = {
                "device": device,
                "start": self._start,
                "end": now,
                "gaps": self._gaps.get(device, 0),
                "duplicates": self._duplicates.get(device, 0),
            }
            ch = self._channels.get(device)
            if ch is not None:
                ch.fold()
            if ch is not None and ch.count:
                std = np.sqrt(np.maximum(ch.m2 / ch.count, 0.0))
                rec["count"] = ch.count
                rec["channels"] = {
                    name: {
                        "min": float(ch.min[i]),
                        "max": float(ch.max[i]),
                        "mean": float(ch.mean[i]),
                        "std": float(std[i]),
                    }
                    for i, name in enumerate(ch.names)
                }
            else:
                rec["count"] = 0
            scores = {}
            for (d, pipe), (parts, threshold) in sorted(self._scores.items()):
                if d != device:
                    continue
                sc = np.concatenate(parts)
                if not sc.size:
                    continue
                scores[pipe] = {
                    "windows": int(sc.size),
                    "min": float(sc.min()),
                    "max": float(sc.max()),
                    "mean": float(sc.mean()),
                    "std": float(sc.std()),
                    "alerts": int((sc > threshold).sum()),
                }
            if scores:
                rec["scores"] = scores
            out.append(rec)
        self._start = now
        self._channels.clear()
        self._scores.clear()
        self._gaps.clear()
        self._duplicates.clear()
        return out
