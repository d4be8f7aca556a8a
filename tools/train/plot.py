"""A small SVG plot of per-window scores over time (no plotting library: the Pi has none).

One strip per detector (the model, each baseline): its score over time with its threshold,
the labelled anomalous spans shaded, windows over the threshold marked under the curve. Long
recordings are reduced to one min/max pair per pixel column, so the file stays small (about
100 kB per strip) whatever the number of windows.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import numpy as np
import numpy.typing as npt

WIDTH = 1000
STRIP_H = 150
LEFT, RIGHT, TOP, GAP, BOTTOM = 72, 16, 26, 34, 40
COLOURS = ("#1f5fa8", "#b85c00", "#2e7d32", "#6a3d9a", "#555555")
UNIX_TIME = 1e8  # times above this are taken for Unix time and labelled as UTC clock times


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


_CLOCK_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)


def _time_ticks(lo: float, hi: float, n: int = 8) -> list[float]:
    """Ticks on round clock times (UTC) for Unix times."""
    raw = (hi - lo) / n
    step = next((s for s in _CLOCK_STEPS if s >= raw), 86400 * math.ceil(raw / 86400))
    first = math.ceil(lo / step) * step
    return [float(first + i * step) for i in range(int((hi - first) // step) + 1)]


def _fmt_num(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e4 or abs(v) < 1e-3:
        return f"{v:.2g}"
    return f"{v:.4g}"


def _fmt_time(v: float, span: float) -> str:
    if v > UNIX_TIME:
        fmt = "%H:%M" if span > 600 else "%H:%M:%S"
        return time.strftime(fmt, time.gmtime(v))
    return _fmt_num(v)


def _use_log(scores: list[npt.NDArray[np.float64]]) -> bool:
    """Automatic log scale: all scores positive and spanning more than two decades."""
    allv = np.concatenate([s[np.isfinite(s)] for s in scores]) if scores else np.zeros(0)
    if allv.size == 0 or (allv <= 0).any():
        return False
    return bool(allv.max() / allv.min() > 1e2)


@dataclass(frozen=True)
class _Frame:
    """The x axis shared by the strips: time -> pixel."""

    t0: float
    t1: float
    cols: int

    def x(self, v: float) -> float:
        return LEFT + (v - self.t0) / (self.t1 - self.t0) * (self.cols - 1)


@dataclass(frozen=True)
class _YAxis:
    lo: float
    hi: float
    log: bool
    top: float
    bot: float

    @classmethod
    def fit(cls, s: npt.NDArray[np.float64], thr: npt.NDArray[np.float64], log: bool, top: float) -> _YAxis:
        vals = np.concatenate([s[np.isfinite(s)], thr[np.isfinite(thr)]])
        vals = vals[vals > 0] if log else vals
        if vals.size == 0:
            vals = np.array([1.0])
        if log:
            lo, hi = float(math.floor(math.log10(vals.min()))), float(math.ceil(math.log10(vals.max())))
            hi = max(hi, lo + 1)
        else:
            lo, hi = min(0.0, float(vals.min())), float(vals.max()) * 1.05
            hi = hi if hi > lo else lo + 1.0
        return cls(lo, hi, log, top, top + STRIP_H)

    def y(self, v: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        u = np.log10(np.maximum(v, 10.0**self.lo)) if self.log else v
        out: npt.NDArray[np.float64] = np.clip(
            self.bot - (u - self.lo) / (self.hi - self.lo) * STRIP_H, self.top, self.bot
        )
        return out

    def ticks(self) -> list[float]:
        if self.log:
            return [float(10.0**e) for e in range(int(self.lo), int(self.hi) + 1)]
        return _nice_ticks(self.lo, self.hi, 4)


def svg(
    t: npt.ArrayLike,
    series: Mapping[str, tuple[npt.ArrayLike, float | npt.ArrayLike]],
    labels: Sequence[tuple[float, float]],
    path: Path,
    *,
    xlabel: str = "time (s)",
    log_scale: bool | None = None,
    alarms: bool = True,
    title: str = "",
) -> None:
    """Write ``path``: one strip per ``series`` entry (name -> (scores per window, threshold: a
    number or one per window)) against ``t`` (s, per window), ``labels`` the anomalous spans
    (t0, t1) to shade. ``log_scale`` None: log when the scores span more than two decades."""
    tx = np.asarray(t, np.float64).ravel()
    cols = WIDTH - LEFT - RIGHT
    t0 = float(tx.min()) if tx.size else 0.0
    t1 = float(tx.max()) if tx.size else 1.0
    fr = _Frame(t0, t1 if t1 > t0 else t0 + 1.0, cols)
    col = np.clip(((tx - fr.t0) / (fr.t1 - fr.t0) * (cols - 1)).round().astype(np.int64), 0, cols - 1)
    height = TOP + len(series) * (STRIP_H + GAP) + BOTTOM
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
    ]
    if title:
        out.append(f'<text x="{LEFT}" y="16" font-size="13" font-weight="bold">{escape(title)}</text>')
    for k, (name, (sc, th)) in enumerate(series.items()):
        s = np.asarray(sc, np.float64).ravel()
        if s.shape != tx.shape:
            raise ValueError(f"plot: series {name!r} has {s.size} scores for {tx.size} times")
        thr = np.broadcast_to(np.asarray(th, np.float64), s.shape)
        log = _use_log([s]) if log_scale is None else log_scale
        ya = _YAxis.fit(s, thr, log, TOP + k * (STRIP_H + GAP) + 16)
        out += _strip(
            name, COLOURS[k % len(COLOURS)], tx=tx, col=col, s=s, thr=thr, fr=fr, ya=ya, labels=labels, alarms=alarms
        )
    out += _x_axis(fr, TOP + len(series) * (STRIP_H + GAP) + 16 - GAP, xlabel)
    out.append("</svg>")
    path.write_text("\n".join(out) + "\n", encoding="utf-8")


def _strip(
    name: str,
    colour: str,
    *,
    tx: npt.NDArray[np.float64],
    col: npt.NDArray[np.int64],
    s: npt.NDArray[np.float64],
    thr: npt.NDArray[np.float64],
    fr: _Frame,
    ya: _YAxis,
    labels: Sequence[tuple[float, float]],
    alarms: bool,
) -> list[str]:
    cols, top, bot = fr.cols, ya.top, ya.bot
    over = np.isfinite(s) & (s > thr)
    const = bool(np.all(thr == thr[0])) if thr.size else True
    label = f"{escape(name)}: threshold {_fmt_num(float(thr[0]))}" if const and thr.size else escape(name)
    out = [
        f'<g class="strip" id={quoteattr("strip-" + name)}>',
        f'<text x="{LEFT}" y="{top - 4}" font-weight="bold">{label}, {int(over.sum())} windows over'
        f"{' (log scale)' if ya.log else ''}</text>",
        f'<rect x="{LEFT}" y="{top}" width="{cols}" height="{STRIP_H}" fill="none" stroke="#999"/>',
    ]
    for a, b in labels:
        if b < fr.t0 or a > fr.t1:
            continue
        xa, xb = fr.x(max(a, fr.t0)), fr.x(min(b, fr.t1))
        out.append(
            f'<rect class="anomaly" x="{xa:.1f}" y="{top}" width="{max(xb - xa, 1.0):.1f}" height="{STRIP_H}" '
            'fill="#f2b8b5" fill-opacity="0.6"/>'
        )
    for v in ya.ticks():
        y = float(ya.y(np.array([v]))[0])
        out.append(f'<line x1="{LEFT - 4}" y1="{y:.1f}" x2="{LEFT + cols}" y2="{y:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt_num(v)}</text>')
    out.append(f'<text transform="translate(14,{(top + bot) / 2:.0f}) rotate(-90)" text-anchor="middle">score</text>')
    out.append(f'<path class="score" d="{_score_path(tx, col, s, ya, cols)}" fill="none" stroke="{colour}"/>')
    if const:
        y = float(ya.y(thr[:1])[0]) if thr.size else bot
        out.append(
            f'<line class="threshold" x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + cols}" y2="{y:.1f}" '
            'stroke="#c62828" stroke-dasharray="5,3"/>'
        )
    else:
        tmax = np.full(cols, -np.inf)
        np.maximum.at(tmax, col, thr)
        have = np.flatnonzero(np.isfinite(tmax))
        ys = ya.y(tmax[have])
        pts = " ".join(f"{LEFT + int(c)},{y:.1f}" for c, y in zip(have, ys, strict=True))
        out.append(f'<polyline class="threshold" points="{pts}" fill="none" stroke="#c62828" stroke-dasharray="5,3"/>')
    if alarms and over.any():
        ticks_d = "".join(f"M{LEFT + int(c)} {bot - 1}v-6" for c in np.unique(col[over]))
        out.append(f'<path class="alarm" d="{ticks_d}" stroke="#c62828" stroke-width="1"/>')
    out.append("</g>")
    return out


def _score_path(
    tx: npt.NDArray[np.float64], col: npt.NDArray[np.int64], s: npt.NDArray[np.float64], ya: _YAxis, cols: int
) -> str:
    """Per pixel column the min and max score, joined column to column, broken at holes: a NaN
    score, or a time step over 3 typical ones."""
    ok = np.isfinite(s) & (s > 0 if ya.log else True)
    cmax = np.full(cols, -np.inf)
    cmin = np.full(cols, np.inf)
    np.maximum.at(cmax, col[ok], s[ok])
    np.minimum.at(cmin, col[ok], s[ok])
    have = np.isfinite(cmax)
    ymax, ymin = ya.y(np.where(have, cmax, 1.0)), ya.y(np.where(have, cmin, 1.0))
    brk = np.zeros(cols, bool)
    if tx.size > 1:
        dt = np.diff(tx)
        typical = float(np.median(dt[dt > 0])) if (dt > 0).any() else 0.0
        hole = (dt > 3 * typical) | ~np.isfinite(s[:-1])
        brk[col[1:][hole & (col[1:] != col[:-1])]] = True
    d: list[str] = []
    prev = False
    for c in np.flatnonzero(have):
        x = LEFT + int(c)
        d.append(f"{'L' if prev and not brk[c] else 'M'}{x} {ymax[c]:.1f}L{x} {ymin[c]:.1f}")
        prev = True
    return "".join(d)


def _x_axis(fr: _Frame, base: float, xlabel: str) -> list[str]:
    out = []
    span = fr.t1 - fr.t0
    if fr.t0 > UNIX_TIME:
        xlabel += ", UTC " + time.strftime("%Y-%m-%d", time.gmtime(fr.t0))
    for v in _time_ticks(fr.t0, fr.t1) if fr.t0 > UNIX_TIME else _nice_ticks(fr.t0, fr.t1, 8):
        x = fr.x(v)
        out.append(f'<line x1="{x:.1f}" y1="{base}" x2="{x:.1f}" y2="{base + 4}" stroke="#333"/>')
        out.append(f'<text x="{x:.1f}" y="{base + 16}" text-anchor="middle">{escape(_fmt_time(v, span))}</text>')
    out.append(f'<text x="{LEFT + fr.cols / 2:.0f}" y="{base + 32}" text-anchor="middle">{escape(xlabel)}</text>')
    return out
