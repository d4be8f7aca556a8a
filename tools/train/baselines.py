"""Naive anomaly detectors scored on the same windows as a model, to tell whether it earns its keep.

Each is tuned on a training part only (its normal windows; an unlabelled set counts as normal)
and its threshold follows the one rule, :func:`gateway.thresholds.threshold_for`:

- ``zscore`` (rolling z-score): per channel, the window's mean against the mean and standard
  deviation of the L samples before the window in the same part; score = the largest |z| over
  the channels. A window with fewer than ``min(L, window)`` samples of history before it (the
  first windows of a part, or after a hole in the set) scores 0: there is nothing to compare
  with. L is picked from 1, 4 and 16 windows of history: the one whose scores separate the
  training part's anomalous windows from its normal ones best (ROC-AUC) when it has both,
  else the longest.
- ``mad`` (max absolute deviation): score = the largest |x - median| / MAD over the window's
  samples and channels, median and MAD per channel from the training part's normal samples
  (MAD scaled by 1.4826, so it estimates a standard deviation for Gaussian noise).

Everything is vectorised numpy: 100k windows of 128 x 6 samples score in about a second.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.recording import RecordingError, WindowSet
from gateway.thresholds import resolvable, threshold_for
from tools.train.common import roc_auc

Scores = npt.NDArray[np.float64]

HISTORY_WINDOWS = (1, 4, 16)  # the grid of L, in windows of history
MAD_TO_SIGMA = 1.4826
_TINY = 1e-12  # floor of a standard deviation / MAD (a constant channel)


@dataclass(frozen=True)
class Baseline:
    """A fitted naive detector: ``score(ws)`` per window, ``threshold``, ``params`` (what was tuned)."""

    name: str
    threshold: float
    params: dict[str, Any] = field(default_factory=dict)

    def score(self, ws: WindowSet) -> Scores:
        raise NotImplementedError


@dataclass(frozen=True)
class ZScoreBaseline(Baseline):
    history: int = 0  # L, samples

    def score(self, ws: WindowSet) -> Scores:
        return zscore_scores(ws, self.history)


@dataclass(frozen=True)
class MadBaseline(Baseline):
    median: tuple[float, ...] = ()
    mad: tuple[float, ...] = ()

    def score(self, ws: WindowSet) -> Scores:
        return mad_scores(ws, np.asarray(self.median), np.asarray(self.mad))


def _normal(ws: WindowSet) -> npt.NDArray[np.bool_]:
    if ws.labels is None:
        return np.ones(len(ws), bool)
    return np.asarray(ws.labels == 0)


def _check_train(train: WindowSet, what: str) -> None:
    if len(train) == 0 or not _normal(train).any():
        raise RecordingError(
            f"{what} baseline: the training part has no normal windows to tune on; give a longer "
            "recording or one with normal data (--baselines-from)"
        )


def _stream(ws: WindowSet) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_], npt.NDArray[np.int64]]:
    """The samples the windows cover, parts laid end to end: (samples (m, C) float64, covered (m,),
    the index of each window's first sample in that array). Uncovered samples are 0."""
    n, win, nch = ws.values.shape
    if n == 0:
        return np.zeros((0, nch)), np.zeros(0, bool), np.zeros(0, np.int64)
    ends = np.zeros(int(ws.part.max()) + 1, np.int64)
    np.maximum.at(ends, ws.part, ws.start + win)
    offset = np.concatenate([[0], np.cumsum(ends)[:-1]])
    first = offset[ws.part] + ws.start
    stream = np.zeros((int(ends.sum()), nch), np.float64)
    covered = np.zeros(int(ends.sum()), bool)
    # runs of windows at one regular hop (<= window): each sample copied once, by slices
    step = np.diff(first)
    hop = (
        int(np.bincount(step[(step > 0) & (step <= win)]).argmax())
        if n > 1 and ((step > 0) & (step <= win)).any()
        else 0
    )
    cut = np.flatnonzero((step != hop) | (ws.part[1:] != ws.part[:-1])) + 1 if hop else np.arange(1, n)
    bounds = np.concatenate([[0], cut, [n]])
    if hop and len(bounds) <= 1 + n // 4:
        for a, b in itertools.pairwise(bounds):
            f0 = int(first[a])
            body = ws.values[a : b - 1, :hop].reshape(-1, nch)
            stream[f0 : f0 + body.shape[0]] = body
            stream[f0 + body.shape[0] : f0 + body.shape[0] + win] = ws.values[b - 1]
            covered[f0 : f0 + body.shape[0] + win] = True
    else:
        idx = first[:, None] + np.arange(win)[None, :]
        stream[idx] = ws.values
        covered[idx] = True
    return stream, covered, first


@dataclass(frozen=True)
class _Sums:
    """Prefix sums over :func:`_stream` (centred per channel), for any L at little cost."""

    s1: npt.NDArray[np.float64]
    s2: npt.NDArray[np.float64]
    cnt: npt.NDArray[np.int64]  # finite samples
    first: npt.NDArray[np.int64]
    part_lo: npt.NDArray[np.int64]
    win: int


def _sums(ws: WindowSet) -> _Sums:
    n, win, nch = ws.values.shape
    stream, covered, first = _stream(ws)
    # centre each channel (on a typical value) first: sums of squares of large offsets lose the variance
    centre = np.nanmedian(ws.values[: min(n, 64)].reshape(-1, nch), axis=0)
    stream -= np.where(np.isfinite(centre), centre, 0.0)
    m = stream.shape[0]
    s1 = np.empty((m + 1, nch))
    s1[0] = 0.0
    np.cumsum(stream, axis=0, out=s1[1:])
    if covered.all() and np.isfinite(s1[-1]).all():
        valid = covered
    else:  # NaN samples (and holes) are no history
        valid = covered & np.isfinite(stream).all(axis=1)
        stream[~valid] = 0.0
        np.cumsum(stream, axis=0, out=s1[1:])
    np.square(stream, out=stream)
    s2 = np.empty((m + 1, nch))
    s2[0] = 0.0
    np.cumsum(stream, axis=0, out=s2[1:])
    cnt = np.zeros(m + 1, np.int64)
    np.cumsum(valid, out=cnt[1:])
    return _Sums(s1=s1, s2=s2, cnt=cnt, first=first, part_lo=first - ws.start, win=win)


def zscore_scores(ws: WindowSet, history: int) -> Scores:
    """Rolling z-score of each window's mean against the ``history`` samples before it."""
    if len(ws) == 0:
        return np.zeros(0, np.float64)
    return _zscore(_sums(ws), history)[0]


def _zscore(p: _Sums, history: int) -> tuple[Scores, npt.NDArray[np.bool_]]:
    """(scores, whether each window had enough history to be scored)."""
    first, win = p.first, p.win
    # the history stays in the window's own part: from max(part start, first - L)
    lo = np.maximum(p.part_lo, first - history)
    k = (p.cnt[first] - p.cnt[lo]).astype(np.float64)
    enough = k >= min(history, win)
    kk = np.where(enough, k, 1.0)[:, None]
    mu = (p.s1[first] - p.s1[lo]) / kk
    var = np.maximum((p.s2[first] - p.s2[lo]) / kk - mu * mu, 0.0)
    sd = np.maximum(np.sqrt(var), _TINY)
    wmean = (p.s1[first + win] - p.s1[first]) / win
    z = np.abs(wmean - mu) / sd
    out = np.where(enough, z.max(axis=1), 0.0)
    out[p.cnt[first + win] - p.cnt[first] < win] = np.nan  # a NaN sample: an invalid window
    return out, enough


def mad_scores(ws: WindowSet, median: npt.NDArray[np.float64], mad: npt.NDArray[np.float64]) -> Scores:
    """Largest |x - median| / MAD over each window's samples and channels."""
    if len(ws) == 0:
        return np.zeros(0, np.float64)
    hi = ws.values.max(axis=1).astype(np.float64) - median
    lo = median - ws.values.min(axis=1).astype(np.float64)
    dev = np.maximum(hi, lo) / np.maximum(mad, _TINY)
    out: Scores = dev.max(axis=1)  # NaN samples make NaN: an invalid window, as the model's
    return out


def _threshold(scores: Scores, far: float, params: dict[str, Any]) -> float:
    """The one rule; too few windows for the rate is said in ``params`` (the threshold is then the
    largest training score)."""
    n = int(np.isfinite(scores).sum())
    if not resolvable(n, far):
        params["threshold_note"] = (
            f"{n} normal training windows cannot resolve a rate of {far:g}: the threshold is their largest score"
        )
    return threshold_for(scores, far)


def fit_zscore(train: WindowSet, *, target_far: float) -> ZScoreBaseline:
    """Pick L on the training part (see the module doc) and set the threshold at ``target_far``."""
    _check_train(train, "zscore")
    win = train.values.shape[1]
    normal = _normal(train)
    labelled = train.labels is not None and normal.any() and (~normal).any()
    best: tuple[float, int, Scores, npt.NDArray[np.bool_]] | None = None
    tried: dict[str, float] = {}
    sums = _sums(train)
    for k in HISTORY_WINDOWS:
        s, enough = _zscore(sums, k * win)
        ok = np.isfinite(s)
        if labelled and (ok & normal).any() and (ok & ~normal).any():
            auc = roc_auc(s[ok & normal], s[ok & ~normal])
            tried[str(k)] = round(auc, 4)
        else:
            auc = float(k)  # no labels: the longest history wins
        if best is None or auc > best[0]:
            best = (auc, k, s, enough)
    assert best is not None
    _, k, s, enough = best
    history = k * win
    # windows scored 0 for want of history say nothing about normal variation
    usable = normal & np.isfinite(s) & enough
    params: dict[str, Any] = {
        "history_windows": k,
        "history_samples": history,
        "chosen_by": "roc_auc on the training part" if labelled else "longest history (no labels to compare)",
        "target_false_alarm_rate": target_far,
        "normal_windows": int(usable.sum()),
    }
    if tried:
        params["roc_auc_by_history_windows"] = tried
    th = _threshold(s[usable] if usable.any() else s[normal], target_far, params)
    return ZScoreBaseline(name="zscore", threshold=th, params=params, history=history)


def fit_mad(train: WindowSet, *, target_far: float) -> MadBaseline:
    """Median and MAD per channel from the training part's normal samples; threshold at ``target_far``."""
    _check_train(train, "mad")
    normal = _normal(train)
    stream, covered, _ = _stream(train.take(np.flatnonzero(normal)))
    x = stream[covered]
    x = x[np.isfinite(x).all(axis=1)]
    if x.size == 0:
        raise RecordingError("mad baseline: the training part's normal windows have no finite samples")
    med = np.median(x, axis=0)
    mad = MAD_TO_SIGMA * np.median(np.abs(x - med), axis=0)
    s = mad_scores(train, med, mad)
    params: dict[str, Any] = {
        "median": [float(v) for v in med],
        "mad": [float(v) for v in mad],
        "normal_samples": int(x.shape[0]),
        "target_false_alarm_rate": target_far,
    }
    th = _threshold(s[normal], target_far, params)
    return MadBaseline(
        name="mad",
        threshold=th,
        params=params,
        median=tuple(float(v) for v in med),
        mad=tuple(float(v) for v in mad),
    )


def fit_all(train: WindowSet, *, target_far: float) -> list[Baseline]:
    """Both baselines, fitted on ``train``."""
    return [fit_zscore(train, target_far=target_far), fit_mad(train, target_far=target_far)]
