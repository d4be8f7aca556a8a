"""What ``edgeline-train`` writes besides the models: manifest blocks (output, metrics), the
test-split evaluation beside the naive baselines, and the report files.

    <out>/<name>_report.json        everything below, JSON (sorted keys, no timestamps)
    <out>/<name>_report.md          the same for people (tools.train.evaluate.report_markdown)
    <out>/<name>_scores.svg         the int8 model's and the baselines' scores on the test split
    <out>/<name>_test_scores.csv    the int8 model's per-window test scores (gateway/scorecsv.py),
                                    comparable row by row with ``edgeline-gateway replay``

The int8 model is the one the report leads with: it is what a Raspberry Pi runs
(docs/gateway.md); the float32 model's evaluation is in the JSON and the markdown too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from gateway import scorecsv
from gateway.recording import WindowSet
from tools.train.common import FloatArray, log, rounded

if TYPE_CHECKING:
    from tools.train.baselines import Baseline
    from tools.train.evaluate import BaselineResult
    from tools.train.user import Prepared, Scored, TrainOptions

LEAD = "int8"
MEANING = {
    "reconstruction_mse": "mean squared error between the normalised features and the autoencoder's "
    "reconstruction; score > threshold = anomalous window",
    "probability": "the classifier's probability that the window is anomalous; score > threshold = anomalous window",
}


def output_block(score_kind: str, threshold: float) -> dict[str, Any]:
    return {"kind": "anomaly_score", "score": score_kind, "threshold": float(threshold), "meaning": MEANING[score_kind]}


def _counts(ws: WindowSet) -> dict[str, int]:
    out = {"windows": len(ws)}
    if ws.labels is not None:
        out["anomalous"] = int((ws.labels > 0).sum())
        out["normal"] = len(ws) - out["anomalous"]
    return out


def split_sizes(prep: Prepared, fractions: tuple[float, ...]) -> dict[str, Any]:
    return {
        "fractions": [float(f) for f in fractions],
        "train": _counts(prep.train),
        "validation": _counts(prep.val),
        "test": _counts(prep.test),
    }


def _normal(ws: WindowSet) -> npt.NDArray[np.bool_]:
    return np.ones(len(ws), bool) if ws.labels is None else np.asarray(ws.labels == 0)


def model_metrics(
    prep: Prepared, opts: TrainOptions, threshold: float, s_val_normal: FloatArray, s_test: FloatArray
) -> dict[str, Any]:
    """The manifest's ``metrics``: how the threshold was set and what it gives on the test split."""
    normal = _normal(prep.test)
    ok = np.isfinite(s_test)
    over = s_test > np.float32(threshold)
    m: dict[str, Any] = {
        "threshold_from": f"the {1 - opts.far:g} quantile (numpy method 'higher') of the scores of "
        f"{s_val_normal.size} normal windows of the validation split (target false-alarm rate {opts.far:g})",
        "validation_false_alarm_rate": rounded(float(np.mean(s_val_normal > np.float32(threshold)))),
        "test_windows": len(prep.test),
        "test_false_alarm_rate": rounded(float(np.mean(over[normal & ok]))) if (normal & ok).any() else None,
    }
    if prep.test.labels is not None and (~normal & ok).any():
        m["test_detection_rate"] = rounded(float(np.mean(over[~normal & ok])))
    return m


def agreement(f32: Scored, thr8: float, s8: FloatArray) -> dict[str, Any]:
    """int8 against float32 on the test windows: score differences, same decision."""
    s32 = f32.test_scores
    ok = np.isfinite(s32) & np.isfinite(s8)
    d = np.abs(s8[ok] - s32[ok])
    same = (s8[ok] > np.float32(thr8)) == (s32[ok] > np.float32(f32.threshold))
    return {
        "test_windows": int(ok.sum()),
        "max_abs_score_diff": rounded(float(d.max()), 6) if d.size else None,
        "decision_agreement": rounded(float(np.mean(same))) if same.size else None,
    }


def _evaluations(
    prep: Prepared,
    opts: TrainOptions,
    scored: dict[str, Scored],
    fitted: list[Baseline],
    base: dict[str, BaselineResult],
) -> dict[str, dict[str, Any]]:
    from tools.train.evaluate import evaluate, event_spans

    spans = event_spans(prep.rec)
    out = {}
    for quant, s in scored.items():
        res = evaluate(s.test_scores.astype(np.float64), s.threshold, prep.test, baselines=base, spans=spans)
        res["info"] = {
            "model": f"{opts.name} {opts.version} {quant} ({s.manifest_path.name})",
            "recording": f"{prep.rec.source}, sha256 {prep.rec.fingerprint[:16]}",
            "windows": f"{prep.spec.window} samples every {prep.hop}",
            "evaluated_on": f"the test split: the last {opts.split[2]:g} of the windows by time ({len(prep.test)})",
            "baselines_trained_on": f"the train split ({len(prep.train)} windows)",
            "baseline_params": {b.name: {"threshold": b.threshold, **b.params} for b in fitted},
        }
        out[quant] = res
    return out


def _write_scores_csv(path: Path, ws: WindowSet, scores: FloatArray, threshold: float) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        scorecsv.write(
            (
                scorecsv.ScoreRow(
                    part=int(ws.part[i]),
                    start=int(ws.start[i]),
                    t_end=float(ws.t_end[i]),
                    score=float(scores[i]),
                    threshold=float(threshold),
                    label=None if ws.labels is None else int(ws.labels[i]),
                )
                for i in range(len(ws))
            ),
            f,
        )


def _plot(path: Path, prep: Prepared, lead: Scored, base: dict[str, BaselineResult]) -> None:
    from tools.train.evaluate import event_spans, plot_windows

    series: dict[str, tuple[npt.ArrayLike, float | npt.ArrayLike]] = {
        f"model ({lead.quant})": (lead.test_scores.astype(np.float64), lead.threshold)
    }
    series.update(base)
    plot_windows(path, prep.test, series, event_spans(prep.rec))


def _markdown(report: dict[str, Any], evaluations: dict[str, dict[str, Any]]) -> str:
    from tools.train.evaluate import report_markdown

    t = report["training"]
    lines = [
        f"# {report['name']} {report['version']}: training report",
        "",
        f"- Command: `{report['command']}`",
        f"- Data: {t['data']} (sha256 {t['data_sha256']})",
        f"- Mode: {t['mode']} ({t['mode_reason']})",
        f"- Windows: {report['input']['window']} samples every {report['input']['hop']} at "
        f"{report['input']['rate_hz']:g} Hz; split {t['split']['fractions']} by time: train "
        f"{t['split']['train']['windows']}, validation {t['split']['validation']['windows']}, "
        f"test {t['split']['test']['windows']}",
        f"- Model: {t['architecture']}; {t['epochs_run']} epochs (best {t['best_epoch']}"
        + (", by the training loss: no anomalous validation window" if t.get("early_stopping_on") == "loss" else "")
        + ")",
        f"- Thresholds at a false-alarm rate of {t['false_alarm_rate']:g} on the validation split's normal "
        + "windows: "
        + ", ".join(f"{q} {m['threshold']:.6g}" for q, m in report["models"].items()),
        "",
    ]
    for quant in (LEAD, *(q for q in evaluations if q != LEAD)):
        ev = evaluations[quant]
        if quant != LEAD:  # the same baselines: their parameters once, under the lead model
            ev = {**ev, "info": {k: v for k, v in ev["info"].items() if k != "baseline_params"}}
        body = report_markdown(ev).replace("# Evaluation", f"## Test split: {quant} model", 1)
        lines.append(body)
    return "\n".join(lines)


def write_reports(prep: Prepared, opts: TrainOptions, scored: dict[str, Scored], *, command: str) -> dict[str, Any]:
    """Evaluate both models on the test split and write the report files; return the report."""
    from tools.train import baselines as bl

    log("[edgeline-train] evaluating on the test split beside the baselines (fitted on the train split)")
    fitted = bl.fit_all(prep.train, target_far=opts.far)
    base: dict[str, BaselineResult] = {b.name: (b.score(prep.test), b.threshold) for b in fitted}
    evaluations = _evaluations(prep, opts, scored, fitted, base)
    lead = scored[LEAD]
    m = lead.manifest
    report: dict[str, Any] = {
        "name": opts.name,
        "version": opts.version,
        "command": command,
        "input": m["input"],
        "features": m["features"],
        "training": m["training"],
        "models": {
            q: {
                "manifest": s.manifest_path.name,
                "model_file": s.manifest["model_file"],
                "threshold": s.threshold,
                "metrics": s.manifest["metrics"],
                "test": evaluations[q],
            }
            for q, s in scored.items()
        },
    }
    out, name = opts.out, opts.name
    (out / f"{name}_report.json").write_text(json.dumps(report, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    (out / f"{name}_report.md").write_text(_markdown(report, evaluations), encoding="utf-8")
    _write_scores_csv(out / f"{name}_test_scores.csv", prep.test, lead.test_scores, lead.threshold)
    _plot(out / f"{name}_scores.svg", prep, lead, base)
    log(
        f"[edgeline-train] wrote {name}_float32/int8 .tflite + .json, {name}_report.json/.md, {name}_scores.svg, {name}_test_scores.csv in {out}"
    )
    return report
