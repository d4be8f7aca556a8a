"""Decisions: scores -> alerts, actuator commands and per-interval summaries.

Plain data in (scores with their window metadata, decoded sample blocks),
plain data out (Alert records, Command records, summary dicts). Publishing is
the pipeline's job, so every decision here is testable without a broker.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from gateway.alertstate import CLEARED, RAISED, Alert, AlertPolicy, AlertStates, Window
from gateway.config import RuleSection

__all__ = ["Alert", "Command", "Decided", "Decider", "Summaries"]


@dataclass(frozen=True)
class Command:
    """CMD_SET_OUTPUT for an actuator, decided by a rule on an episode's raise (or clear)."""

    rule: str
    device: str
    output: int
    value: int
    duration_ms: int
    cause: Alert


@dataclass(frozen=True)
class Decided:
    """The windows of one ``Decider.decide`` call as decided, for an observer (the replay's
    per-window scores): per window its threshold in force, over or not, and whether the
    device's alert episode is raised after it."""

    pipeline: str
    devices: list[str]
    window_end: NDArray[np.float64]
    scores: NDArray[np.floating[Any]]
    thresholds: NDArray[np.float64]
    over: NDArray[np.bool_]
    alert: NDArray[np.bool_]
    alerts: list[Alert]
    commands: list[Command]


@dataclass
class _RuleState:
    rule: RuleSection
    last_fired: float = -math.inf
    fired: int = 0
    suppressed: int = 0


class Decider:
    """Scores -> alert episodes (gateway/alertstate.py) -> actuator commands on their transitions."""

    def __init__(self, rules: tuple[RuleSection, ...] = (), policy: AlertPolicy | None = None) -> None:
        self._rules = [_RuleState(r) for r in rules]
        self.states = AlertStates(policy)
        self.windows = 0
        # called with every decided batch of windows when set (gateway/replay.py); None: no cost
        self.observer: Callable[[Decided], None] | None = None

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
        """The records of the episodes these windows raise, update or clear, and the commands
        their rules send. Windows neither over the threshold nor of a raised episode cost one
        vectorised comparison."""
        self.windows += len(scores)
        thresholds = self.states.thresholds(pipeline, devices, threshold)
        over = scores > thresholds
        alerts: list[Alert] = []
        commands: list[Command] = []
        watch = self.observer
        if watch is not None:
            # raised after each window: a raised device is tracked, so its windows are active
            raised = {a.device for a in self.states.active() if a.pipeline == pipeline}
            alert_after = np.zeros(len(scores), dtype=bool)
        for i in self.states.active_indices(pipeline, devices, over):
            alert = self.states.step(
                Window(
                    device=devices[i],
                    pipeline=pipeline,
                    window_end=float(window_end[i]),
                    received=float(received[i]),
                    score=float(scores[i]),
                    threshold=float(thresholds[i]),
                    historical=bool(historical[i]),
                    boot=int(boot[i]) if boot is not None else 0,
                    seq=int(seq[i]) if seq is not None else 0,
                    model_version=model_version,
                ),
                now,
            )
            if alert is not None:
                alerts.append(alert)
                if alert.acts:
                    commands.extend(self.commands_for(alert, now))
            if watch is not None:
                if alert is not None and alert.state == RAISED:
                    raised.add(devices[i])
                elif alert is not None and alert.state == CLEARED:
                    raised.discard(devices[i])
                alert_after[i] = devices[i] in raised
        if watch is not None:
            watch(Decided(pipeline, devices, window_end, scores, thresholds, over, alert_after, alerts, commands))
        return alerts, commands

    def commands_for(self, alert: Alert, now: float) -> list[Command]:
        """Commands of the rules that match a record the rules act on (``Alert.acts``, decided by
        gateway/alertstate.py): the clear rules for a clear, the raise rules otherwise."""
        out: list[Command] = []
        if not alert.acts:
            return out
        for st in self._rules:
            r = st.rule
            if r.pipeline is not None and r.pipeline != alert.pipeline:
                continue
            if not fnmatch.fnmatchcase(alert.device, r.on_alert_from):
                continue
            if alert.state == CLEARED:
                if r.clear_value is not None:
                    out.append(Command(r.name, r.device, r.output, r.clear_value, 0, alert))
                continue
            cooldown = r.cooldown_s if r.cooldown_s > 0 else 0.0
            if now - st.last_fired < cooldown:
                st.suppressed += 1
                continue
            st.last_fired = now
            st.fired += 1
            out.append(Command(r.name, r.device, r.output, r.value, round(r.duration_s * 1000), alert))
        return out

    def rule_stats(self) -> list[dict[str, Any]]:
        return [{"rule": s.rule.name, "fired": s.fired, "suppressed": s.suppressed} for s in self._rules]


class _StatsTable:
    """Running per-channel statistics of the devices that share one channel list, one row each:
    count, sums of (x - shift) and of its square, min and max, with shift the device's first
    reading (so the variance stays sound for readings far from zero, e.g. 1000 +- 0.01).

    A batch's blocks are reduced together (a few numpy calls per batch, not per frame), and a
    device costs one row of 5 x channels float64, whatever the interval."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names
        self.row: dict[str, int] = {}
        self._used = 0  # rows handed out (a device that changes its channel list leaves its row)
        self._alloc(16)

    def _alloc(self, cap: int) -> None:
        c = len(self.names)
        self.n = _grow(getattr(self, "n", None), self._used, np.zeros(cap, dtype=np.int64))
        self.shift = _grow(getattr(self, "shift", None), self._used, np.zeros((cap, c)))
        self.s1 = _grow(getattr(self, "s1", None), self._used, np.zeros((cap, c)))
        self.s2 = _grow(getattr(self, "s2", None), self._used, np.zeros((cap, c)))
        self.mn = _grow(getattr(self, "mn", None), self._used, np.full((cap, c), np.inf))
        self.mx = _grow(getattr(self, "mx", None), self._used, np.full((cap, c), -np.inf))

    def _rows(self, devices: list[str], blocks: list[NDArray[np.float32]]) -> NDArray[np.intp]:
        rows = []
        for device, block in zip(devices, blocks, strict=True):
            r = self.row.get(device)
            if r is None:
                if self._used == self.n.shape[0]:
                    self._alloc(2 * self._used)
                r = self.row[device] = self._used
                self._used += 1
                self.shift[r] = block[0]
            rows.append(r)
        return np.asarray(rows, dtype=np.intp)

    def add(self, devices: list[str], blocks: list[NDArray[np.float32]]) -> None:
        rows = self._rows(devices, blocks)
        lengths = np.fromiter((b.shape[0] for b in blocks), dtype=np.int64, count=len(blocks))
        v = np.concatenate(blocks, dtype=np.float64) if len(blocks) > 1 else blocks[0].astype(np.float64)
        starts = np.zeros(len(blocks), dtype=np.intp)
        np.cumsum(lengths[:-1], out=starts[1:])
        d = v - np.repeat(self.shift[rows], lengths, axis=0)
        s1 = np.add.reduceat(d, starts, axis=0)
        s2 = np.add.reduceat(d * d, starts, axis=0)
        mn = np.minimum.reduceat(v, starts, axis=0)
        mx = np.maximum.reduceat(v, starts, axis=0)
        if len(set(rows.tolist())) == len(rows):  # each device once (the usual batch): plain indexing
            self.n[rows] += lengths
            self.s1[rows] += s1
            self.s2[rows] += s2
            self.mn[rows] = np.minimum(self.mn[rows], mn)
            self.mx[rows] = np.maximum(self.mx[rows], mx)
        else:  # unbuffered, so a device twice in the batch adds up
            np.add.at(self.n, rows, lengths)
            np.add.at(self.s1, rows, s1)
            np.add.at(self.s2, rows, s2)
            np.minimum.at(self.mn, rows, mn)
            np.maximum.at(self.mx, rows, mx)

    def record(self, device: str) -> tuple[int, dict[str, dict[str, float]]]:
        r = self.row[device]
        n = int(self.n[r])
        if not n:
            return 0, {}
        m1 = self.s1[r] / n
        mean = self.shift[r] + m1
        std = np.sqrt(np.maximum(self.s2[r] / n - m1 * m1, 0.0))
        return n, {
            name: {
                "min": float(self.mn[r, i]),
                "max": float(self.mx[r, i]),
                "mean": float(mean[i]),
                "std": float(std[i]),
            }
            for i, name in enumerate(self.names)
        }


def _grow(old: Any, used: int, new: Any) -> Any:
    """new with the first `used` rows of old (None: nothing to keep)."""
    if old is not None and used:
        new[:used] = old[:used]
    return new


class Summaries:
    """Per-interval statistics per device: readings per channel, anomaly scores."""

    def __init__(self, interval_s: float, *, start: float) -> None:
        self.interval_s = interval_s
        self._start = start
        self._tables: dict[tuple[str, ...], _StatsTable] = {}
        self._channels: dict[str, _StatsTable] = {}  # device -> the table of its channel list
        # device -> pipeline -> (score arrays, threshold)
        self._scores: dict[str, dict[str, tuple[list[NDArray[np.float64]], float]]] = {}
        self._gaps: dict[str, int] = {}
        self._duplicates: dict[str, int] = {}

    def add_values(self, device: str, names: tuple[str, ...], values: NDArray[np.float32]) -> None:
        self.add_blocks([(device, names, values)])

    def add_blocks(self, blocks: list[tuple[str, tuple[str, ...], NDArray[np.float32]]]) -> None:
        """Readings of one batch: (device, channel names, (rows, channels) values) per block."""
        if not blocks:
            return
        groups: dict[tuple[str, ...], tuple[list[str], list[NDArray[np.float32]]]] = {}
        for device, names, values in blocks:
            table = self._channels.get(device)
            if table is None or table.names != names:
                # A new schema starts the device's statistics afresh (other columns).
                if table is not None:
                    table.row.pop(device, None)
                table = self._tables.get(names)
                if table is None:
                    table = self._tables[names] = _StatsTable(names)
                self._channels[device] = table
            g = groups.get(names)
            if g is None:
                groups[names] = ([device], [values])
            else:
                g[0].append(device)
                g[1].append(values)
        for names, (devices, values_list) in groups.items():
            self._tables[names].add(devices, values_list)

    def add_scores(self, device: str, pipeline: str, scores: NDArray[np.floating[Any]], threshold: float) -> None:
        per = self._scores.get(device)
        if per is None:
            per = self._scores[device] = {}
        entry = per.get(pipeline)
        s = np.asarray(scores, dtype=np.float64)
        if entry is None:
            per[pipeline] = ([s], threshold)
        else:
            entry[0].append(s)
            per[pipeline] = (entry[0], threshold)

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
        devices = sorted(set(self._channels) | set(self._scores) | set(self._gaps))
        out = []
        for device in devices:
            rec: dict[str, Any] = {
                "device": device,
                "start": self._start,
                "end": now,
                "gaps": self._gaps.get(device, 0),
                "duplicates": self._duplicates.get(device, 0),
            }
            table = self._channels.get(device)
            count, channels = table.record(device) if table is not None and device in table.row else (0, {})
            rec["count"] = count
            if count:
                rec["channels"] = channels
            scores = {}
            for pipe, (parts, threshold) in sorted(self._scores.get(device, {}).items()):
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
        self._tables.clear()
        self._scores.clear()
        self._gaps.clear()
        self._duplicates.clear()
        return out
