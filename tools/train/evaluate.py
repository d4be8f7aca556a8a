"""Evaluate a model's per-window scores on a recording, beside naive baselines on the same windows.

``edgeline-train evaluate --model M.json FILE... --out DIR`` reads the recording, cuts it into the
model's windows, scores them offline (or takes the scores of an ``edgeline-gateway replay``
export with ``--scores``), fits the baselines of tools/train/baselines.py on a training part and
writes ``evaluation.json``, ``evaluation.md``, ``scores.svg`` and ``scores.csv``.

Definitions (window level, positive = anomalous, a window being anomalous when any of its
samples is; NaN scores -- windows with missing samples -- are counted apart, never compared):

- precision, recall, F1 of "score > threshold"; None when undefined (no alarm, no anomaly);
- ROC-AUC of the scores, anomalous against normal windows (None when a class is missing);
- events: runs of anomalous samples. An event is *hit* when a window touching it is over the
  threshold; its detection delay is from the event's first sample to the end of the first such
  window (needs the recording's sample labels, see :func:`event_spans`);
- alarm events: runs of consecutive over-threshold windows within a part; a *false-alarm event*
  is one touching no anomalous sample; per hour of normal data (normal windows x hop).

An unlabelled recording gets the alert rate and alarm events only.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.recording import Recording, RecordingError, WindowSet, time_split, windows
from tools.train.common import roc_auc

Scores = npt.NDArray[np.float64]
# a baseline's (scores on the same windows, threshold)
BaselineResult = tuple[npt.ArrayLike, float | npt.ArrayLike]

DEFAULT_TRAIN_FRACTION = 0.6  # without --baselines-from: the first 60 % by time trains the baselines
DEFAULT_FAR = 0.001  # the baselines' target false-alarm rate when neither the user nor the manifest gives one


def event_spans(rec: Recording) -> dict[int, tuple[float, float]]:
    """Event id -> (time of its first, of its last sample), numbered as gateway.recording.windows
    numbers them: runs of anomalous samples, in order, across the parts."""
    spans: dict[int, tuple[float, float]] = {}
    for p in rec.parts:
        if p.labels is None:
            continue
        on = np.concatenate([[False], p.labels > 0, [False]]).astype(np.int8)
        d = np.diff(on)
        for a, b in zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1), strict=True):
            spans[len(spans)] = (p.t0 + a / rec.rate_hz, p.t0 + (b - 1) / rec.rate_hz)
    return spans


def _ratio(num: int, den: int) -> float | None:
    return None if den == 0 else num / den


def _runs(over: npt.NDArray[np.bool_], part: npt.NDArray[np.int32]) -> list[tuple[int, int]]:
    """[a, b) index ranges of consecutive over-threshold windows within one part."""
    if over.size == 0:
        return []
    same = part[1:] == part[:-1]
    starts = np.flatnonzero(over & np.concatenate([[True], ~(over[:-1] & same)]))
    ends = np.flatnonzero(over & np.concatenate([~(over[1:] & same), [True]])) + 1
    return [(int(x), int(y)) for x, y in zip(starts, ends, strict=True)]


def _hop_s(ws: WindowSet) -> float | None:
    """Seconds between consecutive windows (the most common step within a part)."""
    if len(ws) < 2:
        return None
    same = ws.part[1:] == ws.part[:-1]
    d = np.diff(ws.t_end)[same]
    d = d[d > 0]
    if d.size == 0:
        return None
    vals, counts = np.unique(np.round(d, 9), return_counts=True)
    return float(vals[counts.argmax()])


def _rounded(x: float | None, digits: int = 4) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), digits)


def _metrics(
    scores: npt.ArrayLike,
    threshold: float | npt.ArrayLike,
    ws: WindowSet,
    spans: Mapping[int, tuple[float, float]] | None,
) -> dict[str, Any]:
    s = np.asarray(scores, np.float64).ravel()
    if s.shape[0] != len(ws):
        raise ValueError(f"{s.shape[0]} scores for {len(ws)} windows")
    th = np.broadcast_to(np.asarray(threshold, np.float64), s.shape)
    valid = ~np.isnan(s)
    over = valid & (s > th)
    hop_s = _hop_s(ws)
    runs = _runs(over, ws.part)
    out: dict[str, Any] = {
        "threshold": float(f"{th[0]:.9g}") if th.size and np.all(th == th[0]) else None,  # as scores.csv writes it
        "windows": {"total": len(ws), "invalid": int((~valid).sum()), "over": int(over.sum())},
        "alert_rate": _rounded(_ratio(int(over.sum()), int(valid.sum())), 6),
        "alarm_events": len(runs),
    }
    if th.size and not np.all(th == th[0]):
        out["threshold_range"] = [float(th.min()), float(th.max())]
    if ws.labels is None:
        return out
    pos = ws.labels.astype(bool)
    tp = int((over & pos).sum())
    fp = int((over & ~pos).sum())
    fn = int((valid & ~over & pos).sum())
    out["windows"].update(normal=int((valid & ~pos).sum()), anomalous=int((valid & pos).sum()))
    out["precision"] = _rounded(_ratio(tp, tp + fp))
    out["recall"] = _rounded(_ratio(tp, tp + fn))
    out["f1"] = _rounded(_ratio(2 * tp, 2 * tp + fp + fn))
    neg_s, pos_s = s[valid & ~pos], s[valid & pos]
    out["roc_auc"] = _rounded(roc_auc(neg_s, pos_s)) if neg_s.size and pos_s.size else None
    # events
    ev = ws.events if ws.events is not None else np.full(len(ws), -1, np.int32)
    ids = np.unique(ev[ev >= 0])
    delays: list[dict[str, Any]] = []
    hit = 0
    for e in ids:
        touching = np.flatnonzero(ev == e)
        detected = touching[over[touching]]
        if detected.size:
            hit += 1
        d: dict[str, Any] = {"event": int(e), "windows": int(touching.size), "hit": bool(detected.size)}
        if spans is not None and int(e) in spans:
            t0, t1 = spans[int(e)]
            d["t_start"] = round(t0, 6)
            d["duration_s"] = round(t1 - t0, 6)
            d["delay_s"] = _rounded(float(ws.t_end[detected[0]]) - t0, 6) if detected.size else None
        delays.append(d)
    out["events"] = int(ids.size)
    out["events_hit"] = hit
    false_runs = [(a, b) for a, b in runs if not pos[a:b].any()]
    out["false_alarm_events"] = len(false_runs)
    normal_h = None if hop_s is None else out["windows"]["normal"] * hop_s / 3600.0
    out["normal_hours"] = _rounded(normal_h)
    out["false_alarms_per_hour"] = _rounded(len(false_runs) / normal_h) if normal_h else None
    got = [d["delay_s"] for d in delays if d.get("delay_s") is not None]
    out["delay_s"] = {"median": _rounded(float(np.median(got))), "max": _rounded(max(got))} if got else None
    out["per_event"] = delays
    return out


def evaluate(
    scores: npt.ArrayLike,
    threshold: float | npt.ArrayLike,
    ws: WindowSet,
    *,
    baselines: Mapping[str, BaselineResult] | None = None,
    spans: Mapping[int, tuple[float, float]] | None = None,
) -> dict[str, Any]:
    """Metrics of ``scores`` (one per window of ``ws``) against ``threshold`` (a number, or one per
    window), and of each baseline's (scores, threshold) on the same windows, as a JSON-able dict:
    the model's metrics at the top level, the baselines' under ``"baselines"``. ``spans``
    (:func:`event_spans` of the recording) gives the events' start times, for the delays."""
    out = _metrics(scores, threshold, ws, spans)
    out["labelled"] = ws.labels is not None
    if baselines:
        out["baselines"] = {name: _metrics(s, th, ws, spans) for name, (s, th) in baselines.items()}
    return out


# -- the markdown report ------------------------------------------------------------------------


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def report_markdown(result: Mapping[str, Any]) -> str:
    """The evaluation as markdown: what was evaluated, then a table of the model beside the baselines."""
    lines = ["# Evaluation", ""]
    info = result.get("info", {})
    for key, label in (
        ("model", "Model"),
        ("recording", "Recording"),
        ("windows", "Windows"),
        ("scores_from", "Scores"),
        ("gateway_alerts", "Gateway alerts"),
        ("evaluated_on", "Evaluated on"),
        ("baselines_trained_on", "Baselines trained on"),
        ("baselines_false_alarm_rate", "Baselines' thresholds: target false-alarm rate"),
    ):
        if key in info:
            lines.append(f"- {label}: {info[key]}")
    if info:
        lines.append("")
    rows = [("model", result), *result.get("baselines", {}).items()]
    w = result["windows"]
    if result.get("labelled"):
        lines.append(
            f"{w['total']} windows: {w.get('normal', 0)} normal, {w.get('anomalous', 0)} anomalous, "
            f"{w['invalid']} invalid (NaN, not counted); {result.get('events', 0)} anomalous events."
        )
        lines += [
            "",
            "| detector | threshold | precision | recall | F1 | ROC-AUC | events hit | false-alarm events | "
            "false alarms / h | median delay (s) |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, m in rows:
            delay = (m.get("delay_s") or {}).get("median")
            lines.append(
                f"| {name} | {_fmt_th(m)} | {_fmt(m['precision'])} | {_fmt(m['recall'])} | {_fmt(m['f1'])} | "
                f"{_fmt(m['roc_auc'])} | {m['events_hit']} / {m['events']} | {m['false_alarm_events']} | "
                f"{_fmt(m['false_alarms_per_hour'])} | {_fmt(delay)} |"
            )
    else:
        lines.append(f"{w['total']} windows, {w['invalid']} invalid (NaN, not counted); no labels.")
        lines += ["", "| detector | threshold | alert rate | alarm events |", "|---|---|---|---|"]
        for name, m in rows:
            lines.append(f"| {name} | {_fmt_th(m)} | {_fmt(m['alert_rate'])} | {m['alarm_events']} |")
    for name, b in info.get("baseline_params", {}).items():
        lines.append("")
        lines.append(f"Baseline `{name}`: {json.dumps(b, sort_keys=True)}")
    return "\n".join(lines) + "\n"


def _fmt_th(m: Mapping[str, Any]) -> str:
    if m.get("threshold") is not None:
        return f"{m['threshold']:.6g}"
    lo, hi = m.get("threshold_range", (None, None))
    return f"{lo:.6g}..{hi:.6g}" if lo is not None else "-"


# -- the command --------------------------------------------------------------------------------


def add_evaluate_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``edgeline-train evaluate``."""
    from gateway.csvrec import add_csv_arguments

    p.add_argument("files", nargs="+", type=Path, metavar="FILE", help="the recording to evaluate on (CSV)")
    p.add_argument("--model", required=True, type=Path, help="the model's manifest (.json)")
    add_csv_arguments(p)
    p.add_argument(
        "--scores",
        type=Path,
        help="take the per-window scores from this file (edgeline-gateway replay --out) instead of scoring offline",
    )
    p.add_argument(
        "--baselines-from",
        action="append",
        type=Path,
        metavar="TRAIN",
        help="a CSV file to fit the baselines on (same columns; repeat for several); default: the first 60%% of "
        "the recording by time, and every detector is then evaluated on the remaining 40%%",
    )
    p.add_argument(
        "--false-alarm-rate",
        type=float,
        help="the baselines' target false-alarm rate on their training part's normal windows (default: the "
        f"model's, from its manifest's training block, else {DEFAULT_FAR:g})",
    )
    p.add_argument("--log-scale", action="store_true", help="plot scores on a log scale")
    p.add_argument("--out", required=True, type=Path, help="directory for evaluation.json/.md, scores.svg/.csv")


def run_evaluate(args: argparse.Namespace) -> int:
    """``edgeline-train evaluate``: read, score, compare, write; prints the markdown report."""
    from gateway.csvrec import csv_options, read_csv

    opts = csv_options(args)
    rec = read_csv(args.files, **opts)
    train_rec = read_csv(args.baselines_from, **opts) if args.baselines_from else None
    result = evaluate_recording(
        args.model,
        rec,
        out=args.out,
        scores_csv=args.scores,
        baselines_from=train_rec,
        far=args.false_alarm_rate,
        log_scale=True if args.log_scale else None,
    )
    print(report_markdown(result), end="")
    return 0


def _scores_from_csv(path: Path, ws: WindowSet) -> tuple[Scores, Scores, list[bool | None]]:
    """(scores, thresholds, alerts) of a scores file, checked window by window against ``ws``."""
    from gateway import scorecsv

    rows = list(scorecsv.read(path))
    if len(rows) != len(ws):
        raise RecordingError(
            f"{path}: {len(rows)} score rows, but the recording cut with the model's window/hop has "
            f"{len(ws)} windows: score and evaluate the same recording with the same model"
        )
    for i, r in enumerate(rows):
        if r.part != int(ws.part[i]) or r.start != int(ws.start[i]):
            raise RecordingError(
                f"{path} line {i + 2}: window (part {r.part}, start {r.start}) where the recording's window {i} "
                f"is (part {int(ws.part[i])}, start {int(ws.start[i])}): these scores were not made from this "
                "recording with this model's window/hop (same files, same options, same model)"
            )
    return (
        np.array([r.score for r in rows], np.float64),
        np.array([r.threshold for r in rows], np.float64),
        [r.alert for r in rows],
    )


def _plot_time(ws: WindowSet) -> tuple[Scores, str]:
    """x axis of the plot: the windows' end times, or, when parts restart the clock (files without
    a time column), the parts laid end to end."""
    t = ws.t_end.astype(np.float64)
    if len(t) < 2 or np.all(np.diff(t) >= 0):
        return t, "time (s)"
    x = t.copy()
    gap = _hop_s(ws) or 1.0
    end: float | None = None  # where the previous part ends on the axis
    for p in np.unique(ws.part):
        sel = ws.part == p
        if end is not None:
            x[sel] = t[sel] - t[sel].min() + end + gap
        end = float(x[sel].max())
    return x, "time (s, parts laid end to end)"


def evaluate_recording(
    model_path: Path,
    rec: Recording,
    *,
    out: Path,
    scores_csv: Path | None = None,
    baselines_from: Recording | None = None,
    far: float | None = None,
    log_scale: bool | None = None,
) -> dict[str, Any]:
    """Everything ``edgeline-train evaluate`` does after reading the files: returns the result
    written to ``out/evaluation.json``."""
    from gateway import scorecsv
    from gateway.inference import load_model
    from tools.train import baselines as bl

    model = load_model(model_path)
    if model.task != "anomaly":
        raise RecordingError(
            f"{model_path}: a {model.task} model; evaluate takes anomaly models (one score per window)"
        )
    model.check_schema(rec.channels, rec.rate_hz, device=rec.source)
    inp = model.manifest.input
    if far is None:
        far = float(model.manifest.training.get("false_alarm_rate", DEFAULT_FAR))
    ws_all = windows(rec, inp.window, inp.hop)
    if len(ws_all) == 0:
        raise RecordingError(
            f"{rec.source}: {rec.n_samples} samples, shorter than one window of {inp.window}: nothing to evaluate"
        )
    info: dict[str, Any] = {
        "model": f"{model.name} {model.version} ({model_path})",
        "recording": f"{rec.source}, {rec.n_samples} samples at {rec.rate_hz:g} Hz in {len(rec.parts)} part(s), "
        f"sha256 {rec.fingerprint[:16]}",
        "windows": f"{inp.window} samples every {inp.hop}",
    }
    if scores_csv is not None:
        s_all, th_all, alerts_all = _scores_from_csv(scores_csv, ws_all)
        info["scores_from"] = str(scores_csv)
        if all(a is not None for a in alerts_all):
            on = np.array(alerts_all, bool)
            new_part = np.concatenate([[True], ws_all.part[1:] != ws_all.part[:-1]])
            raised = on & (new_part | ~np.concatenate([[False], on[:-1]]))
            info["gateway_alerts"] = f"{int(raised.sum())} raised during the replay (rising edges of the alert column)"
    else:
        if model.threshold is None:
            raise RecordingError(f"{model_path}: the manifest has no output.threshold to evaluate against")
        s_all = model.score(ws_all.values).astype(np.float64)
        th_all = np.full(len(ws_all), float(np.float32(model.threshold)))
        alerts_all = [None] * len(ws_all)
        info["scores_from"] = f"scored offline ({model.backend})"
    if baselines_from is not None:
        if baselines_from.channels != rec.channels or baselines_from.rate_hz != rec.rate_hz:
            raise RecordingError(
                f"{baselines_from.source}: channels {baselines_from.channel_names} at {baselines_from.rate_hz:g} Hz, "
                f"but the evaluated recording has {rec.channel_names} at {rec.rate_hz:g} Hz: give the baselines "
                "a recording of the same columns"
            )
        train = windows(baselines_from, inp.window, inp.hop)
        idx = np.arange(len(ws_all))
        info["baselines_trained_on"] = f"{baselines_from.source} ({len(train)} windows)"
        info["evaluated_on"] = "the whole recording"
    else:
        train, test = time_split(ws_all, (DEFAULT_TRAIN_FRACTION, 1.0 - DEFAULT_TRAIN_FRACTION))
        # the test windows' places in ws_all (both in (part, start) order)
        span = int(ws_all.start.max()) + 1
        idx = np.searchsorted(
            ws_all.part.astype(np.int64) * span + ws_all.start, test.part.astype(np.int64) * span + test.start
        )
        pct = round(100 * DEFAULT_TRAIN_FRACTION)
        info["baselines_trained_on"] = f"the first {pct} % of the recording by time ({len(train)} windows)"
        info["evaluated_on"] = (
            f"the last {100 - pct} % by time ({len(idx)} windows), for the model too, so no detector is "
            "scored on the data its baseline was tuned on (give --baselines-from to evaluate on all of it)"
        )
    ws = ws_all.take(idx)
    fitted = bl.fit_all(train, target_far=far)
    base_res: dict[str, BaselineResult] = {b.name: (b.score(ws), b.threshold) for b in fitted}
    info["baselines_false_alarm_rate"] = far
    info["baseline_params"] = {b.name: {"threshold": b.threshold, **b.params} for b in fitted}
    spans = event_spans(rec)
    result = evaluate(s_all[idx], th_all[idx], ws, baselines=base_res, spans=spans)
    result["info"] = info

    out.mkdir(parents=True, exist_ok=True)
    (out / "evaluation.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    (out / "evaluation.md").write_text(report_markdown(result), encoding="utf-8")
    with (out / "scores.csv").open("w", encoding="utf-8", newline="") as f:
        scorecsv.write(
            (
                scorecsv.ScoreRow(
                    part=int(ws_all.part[i]),
                    start=int(ws_all.start[i]),
                    t_end=float(ws_all.t_end[i]),
                    score=float(s_all[i]),
                    threshold=float(th_all[i]),
                    alert=alerts_all[i],
                    label=None if ws_all.labels is None else int(ws_all.labels[i]),
                )
                for i in range(len(ws_all))
            ),
            f,
        )
    series: dict[str, BaselineResult] = {"model": (s_all[idx], th_all[idx]), **base_res}
    plot_windows(out / "scores.svg", ws, series, spans, log_scale=log_scale)
    return result


def plot_windows(
    path: Path,
    ws: WindowSet,
    series: Mapping[str, tuple[npt.ArrayLike, float | npt.ArrayLike]],
    spans: Mapping[int, tuple[float, float]],
    *,
    log_scale: bool | None = None,
) -> None:
    """scores.svg for detectors scored on ``ws``: time on x (parts laid end to end when their
    clocks restart), the labelled events (:func:`event_spans`) shaded."""
    from tools.train.plot import svg

    x, xlabel = _plot_time(ws)
    svg(x, series, _shade_spans(spans, ws, x), path, xlabel=xlabel, log_scale=log_scale, alarms=True)


def _shade_spans(spans: Mapping[int, tuple[float, float]], ws: WindowSet, x: Scores) -> list[tuple[float, float]]:
    """The labelled events on the plot's x axis (shifted as the windows are)."""
    if not spans or ws.events is None:
        return []
    shift = x - ws.t_end
    out = []
    for e, (t0, t1) in spans.items():
        sel = np.flatnonzero(ws.events == e)
        if sel.size:
            d = float(shift[sel[0]])
            out.append((t0 + d, t1 + d))
    return out
