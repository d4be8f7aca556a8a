"""edgeline-train evaluate: the metrics on cases worked out by hand, the report, the plot, and the
whole command on a recording of simulated vibration with the committed float32 model."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from gateway import scorecsv
from gateway.inference import load_model
from gateway.recording import Part, Recording, RecordingError, WindowSet, windows
from tools.train import sim_data
from tools.train.evaluate import evaluate, evaluate_recording, event_spans, report_markdown
from tools.train.plot import svg

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "vibration_anomaly_float32.json"
SVG = "{http://www.w3.org/2000/svg}"


def _hand_set() -> WindowSet:
    """10 windows of 10 samples at 10 Hz, no overlap: window i covers t = i .. i + 0.9 s."""
    n = 10
    start = np.arange(n, dtype=np.int64) * 10
    return WindowSet(
        values=np.zeros((n, 10, 1), np.float32),
        part=np.zeros(n, np.int32),
        start=start,
        t_end=(start + 9) / 10.0,
        labels=np.array([0, 0, 1, 1, 0, 0, 0, 1, 0, 0], np.int8),
        events=np.array([-1, -1, 0, 0, -1, -1, -1, 1, -1, -1], np.int32),
    )


SCORES = [0.0, 5.0, 0.0, 6.0, 5.0, 5.0, 0.0, 0.0, math.nan, 9.0]


def test_metrics_worked_out_by_hand() -> None:
    ws = _hand_set()
    r = evaluate(SCORES, 4.0, ws, spans={0: (2.5, 3.9), 1: (7.0, 7.2)})
    # over: windows 1, 3, 4, 5, 9; window 8 is NaN (invalid, neither over nor under)
    assert r["windows"] == {"total": 10, "invalid": 1, "over": 5, "normal": 6, "anomalous": 3}
    # TP = {3}, FP = {1, 4, 5, 9}, FN = {2, 7}
    assert r["precision"] == 0.2 and r["recall"] == round(1 / 3, 4) and r["f1"] == 0.25
    # P(anomalous > normal), ties half: (1 + 5 + 1) / 18
    assert r["roc_auc"] == round(7 / 18, 4)
    # alarm runs: [1], [3, 4, 5], [9]; [3..5] touches event 0, so two false-alarm events
    assert r["alarm_events"] == 3 and r["false_alarm_events"] == 2
    assert r["events"] == 2 and r["events_hit"] == 1
    # 6 valid normal windows of 1 s: 2 false alarms in 6 s
    assert r["normal_hours"] == round(6 / 3600, 4) and r["false_alarms_per_hour"] == 1200.0
    ev = {d["event"]: d for d in r["per_event"]}
    assert ev[0]["hit"] and ev[0]["delay_s"] == pytest.approx(3.9 - 2.5)  # window 3 ends at 3.9 s
    assert not ev[1]["hit"] and ev[1]["delay_s"] is None
    assert r["delay_s"] == {"median": 1.4, "max": 1.4}
    assert r["threshold"] == 4.0
    json.dumps(r, allow_nan=False)  # JSON-able, no NaN


def test_runs_end_at_a_part_boundary_and_at_a_nan() -> None:
    ws = _hand_set()
    part = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1], np.int32)
    ws2 = WindowSet(ws.values, part, ws.start, ws.t_end)  # unlabelled
    r = evaluate([5, 5, 0, 0, 5, 5, 5, math.nan, 5, 0], 4.0, ws2)
    assert r["alarm_events"] == 4  # [0,1], [4] | [5,6], [8]
    assert r["alert_rate"] == round(6 / 9, 6)
    assert "precision" not in r and "events" not in r and r["labelled"] is False


def test_one_class_only_and_no_alarm() -> None:
    ws = _hand_set()
    normal = ws.take(np.array([0, 1, 4, 5]))
    r = evaluate([1.0, 2.0, 3.0, 4.0], 10.0, normal)
    assert r["roc_auc"] is None and r["recall"] is None and r["precision"] is None and r["f1"] is None
    assert r["false_alarm_events"] == 0 and r["events"] == 0


def test_per_window_thresholds_and_baselines_evaluated_the_same_way() -> None:
    ws = _hand_set()
    th = np.array([4.0] * 5 + [100.0] * 5)
    r = evaluate(SCORES, th, ws, baselines={"b": (SCORES, 4.0)})
    assert r["threshold"] is None and r["threshold_range"] == [4.0, 100.0]
    assert r["windows"]["over"] == 3  # 5 and 9 are under their threshold of 100
    alone = evaluate(SCORES, 4.0, ws)
    del alone["labelled"]
    assert r["baselines"]["b"] == alone
    md = report_markdown(r)
    assert "| model | 4..100 |" in md and "| b | 4 | 0.200 | 0.333 | 0.250 | 0.389 | 1 / 2 | 2 |" in md


def test_event_spans_are_numbered_as_the_windows_number_events() -> None:
    lab1 = np.zeros(300, np.int8)
    lab1[[10, 11, 12, 200]] = 1
    lab2 = np.zeros(200, np.int8)
    lab2[150:] = 1
    z = np.zeros((300, 1), np.float32)
    rec = Recording((("x", "u"),), 10.0, (Part(0.0, z, lab1), Part(1000.0, z[:200], lab2)), "t", "0")
    assert event_spans(rec) == {0: (1.0, 1.2), 1: (20.0, 20.0), 2: (1015.0, 1019.9)}
    ws = windows(rec, 20, 10)
    assert ws.events is not None
    for e, (t0, _t1) in event_spans(rec).items():
        touching = np.flatnonzero(ws.events == e)
        # the first window touching an event ends at or after its first sample
        assert touching.size and ws.t_end[touching[0]] >= t0 and ws.t_end[touching[0]] - t0 < 2.0


def test_svg_is_valid_xml_with_every_series(tmp_path: Path) -> None:
    t = 1.7e9 + np.arange(5000) * 0.64
    rng = np.random.default_rng(0)
    a = rng.lognormal(0, 1, 5000)
    a[2000:2100] *= 1e4
    b = rng.normal(0, 1, 5000)
    b[100] = np.nan
    out = tmp_path / "s.svg"
    svg(t, {"model": (a, 30.0), "zscore": (b, np.full(5000, 2.0))}, [(t[2000], t[2100])], out)
    root = ET.parse(out).getroot()
    strips = root.findall(f"{SVG}g[@class='strip']")
    assert [g.get("id") for g in strips] == ["strip-model", "strip-zscore"]
    for g in strips:
        assert g.find(f"{SVG}path[@class='score']") is not None
        assert g.find("*[@class='threshold']") is not None
        assert len(g.findall(f"{SVG}rect[@class='anomaly']")) == 1
        assert g.find(f"{SVG}path[@class='alarm']") is not None
    assert "(log scale)" in "".join(strips[0].itertext())  # six decades: log by itself
    assert "(log scale)" not in "".join(strips[1].itertext())
    assert out.stat().st_size < 200_000  # one min/max pair per pixel column, not 5000 points


def _sim_recording(labelled: bool = True) -> Recording:
    """60 s healthy, 15 s bearing fault, 30 s healthy: the simulated MPU-6050 at 100 Hz."""
    x = np.concatenate(
        [sim_data.stream(6000, seed=3), sim_data.stream(1500, seed=4, fault="bearing"), sim_data.stream(3000, seed=5)]
    )
    lab = np.zeros(len(x), np.int8)
    lab[6000:7500] = 1
    part = Part(1.7e9, x, lab if labelled else None)
    return Recording(sim_data.CHANNELS, 100.0, (part,), "sim", "ab" * 32)


def test_evaluate_recording_end_to_end(tmp_path: Path) -> None:
    rec = _sim_recording()
    r = evaluate_recording(MODEL, rec, out=tmp_path / "a")
    # the model's scores are Model.score's on the recording's windows
    model = load_model(MODEL)
    ws = windows(rec, 128, 64)
    rows = list(scorecsv.read(tmp_path / "a" / "scores.csv"))
    assert [(x.part, x.start) for x in rows] == list(zip(ws.part.tolist(), ws.start.tolist(), strict=True))
    np.testing.assert_array_equal(np.array([x.score for x in rows], np.float32), model.score(ws.values))
    assert {np.float32(x.threshold) for x in rows} == {np.float32(model.threshold)}
    assert [x.label for x in rows] == ws.labels.tolist()  # type: ignore[union-attr]
    # default: baselines on the first 60 %, everything evaluated on the rest
    assert "first 60 %" in r["info"]["baselines_trained_on"]
    assert r["windows"]["total"] < 0.45 * len(ws)
    assert r["events"] == 1 and r["events_hit"] == 1 and r["recall"] == 1.0 and r["false_alarm_events"] == 0
    assert set(r["baselines"]) == {"zscore", "mad"}
    assert json.loads((tmp_path / "a" / "evaluation.json").read_text()) == json.loads(json.dumps(r))
    md = (tmp_path / "a" / "evaluation.md").read_text()
    assert "| model |" in md and "| zscore |" in md and "| mad |" in md
    ET.parse(tmp_path / "a" / "scores.svg")

    # the scores of a replay export give the same evaluation
    r2 = evaluate_recording(MODEL, rec, out=tmp_path / "b", scores_csv=tmp_path / "a" / "scores.csv")
    for key in ("precision", "recall", "f1", "roc_auc", "events_hit", "false_alarm_events", "baselines"):
        assert r2[key] == r[key]

    # the baselines are tuned on the first 60 % only: another end changes nothing of them
    other = rec.parts[0].values.copy()
    other[8000:] *= 2.0
    rec3 = Recording(rec.channels, rec.rate_hz, (Part(rec.parts[0].t0, other, rec.parts[0].labels),), "sim", "cd" * 32)
    r3 = evaluate_recording(MODEL, rec3, out=tmp_path / "c")
    assert r3["info"]["baseline_params"] == r["info"]["baseline_params"]


def test_baselines_from_another_recording_and_unlabelled(tmp_path: Path) -> None:
    train = Recording(sim_data.CHANNELS, 100.0, (Part(0.0, sim_data.stream(4000, seed=9)),), "train", "0")
    r = evaluate_recording(MODEL, _sim_recording(labelled=False), out=tmp_path, baselines_from=train)
    assert r["labelled"] is False and r["windows"]["total"] == 163
    assert r["info"]["evaluated_on"] == "the whole recording"
    assert r["alarm_events"] >= 1 and "precision" not in r
    assert "alert rate" in (tmp_path / "evaluation.md").read_text()


def test_scores_of_another_recording_are_refused(tmp_path: Path) -> None:
    rec = _sim_recording()
    evaluate_recording(MODEL, rec, out=tmp_path / "a")
    lines = (tmp_path / "a" / "scores.csv").read_text().splitlines()
    (tmp_path / "short.csv").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(RecordingError, match="163 windows"):
        evaluate_recording(MODEL, rec, out=tmp_path / "b", scores_csv=tmp_path / "short.csv")
    lines[5] = lines[5].replace("0,256,", "0,250,", 1)
    (tmp_path / "shifted.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(RecordingError, match=r"shifted.csv line 6: window \(part 0, start 250\)"):
        evaluate_recording(MODEL, rec, out=tmp_path / "b", scores_csv=tmp_path / "shifted.csv")


def test_a_recording_of_other_channels_is_refused(tmp_path: Path) -> None:
    rec = _sim_recording()
    bad = Recording(rec.channels[:5], 100.0, (Part(0.0, rec.parts[0].values[:, :5]),), "five.csv", "0")
    with pytest.raises(Exception, match="channels"):
        evaluate_recording(MODEL, bad, out=tmp_path)


def _write_csv(path: Path, rec: Recording) -> None:
    p = rec.parts[0]
    head = "time," + ",".join(f"{n} [{u}]" for n, u in rec.channels) + ",label"
    t = p.t0 + np.arange(p.n) / rec.rate_hz
    lab = p.labels if p.labels is not None else np.zeros(p.n, np.int8)
    cols = np.column_stack([t, p.values.astype(np.float64), lab])
    np.savetxt(path, cols, delimiter=",", header=head, comments="", fmt=["%.2f"] + ["%.9g"] * 6 + ["%d"])


def test_the_command_on_csv_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from tools.train.evaluate import add_evaluate_arguments, run_evaluate

    rec = _sim_recording()
    _write_csv(tmp_path / "week.csv", rec)
    train = Recording(sim_data.CHANNELS, 100.0, (Part(1.6e9, sim_data.stream(4000, seed=9)),), "train", "0")
    _write_csv(tmp_path / "train.csv", train)
    p = argparse.ArgumentParser()
    add_evaluate_arguments(p)
    week, train_csv = str(tmp_path / "week.csv"), str(tmp_path / "train.csv")
    args = p.parse_args(["--model", str(MODEL), week, "--baselines-from", train_csv, "--out", str(tmp_path / "out")])
    assert run_evaluate(args) == 0
    md = capsys.readouterr().out
    assert md == (tmp_path / "out" / "evaluation.md").read_text()
    assert "week.csv" in md and "train.csv" in md and "| model |" in md
    r = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    assert r["windows"]["total"] == 163 and r["events_hit"] == 1 and r["info"]["evaluated_on"] == "the whole recording"
    ws = windows(rec, 128, 64)
    rows = list(scorecsv.read(tmp_path / "out" / "scores.csv"))
    # the CSV holds the float32 samples to 9 digits: the scores are Model.score's on the windows
    np.testing.assert_array_equal(np.array([x.score for x in rows], np.float32), load_model(MODEL).score(ws.values))
    # a replay export of the same recording is taken instead of scoring
    replayed = str(tmp_path / "out" / "scores.csv")
    args = p.parse_args(
        [
            "--model",
            str(MODEL),
            week,
            "--scores",
            replayed,
            "--baselines-from",
            train_csv,
            "--out",
            str(tmp_path / "again"),
        ]
    )
    run_evaluate(args)
    r2 = json.loads((tmp_path / "again" / "evaluation.json").read_text())
    assert r2["info"]["scores_from"].endswith("scores.csv")
    assert {k: v for k, v in r2.items() if k != "info"} == {k: v for k, v in r.items() if k != "info"}


def test_plot_time_lays_parts_end_to_end_when_their_clocks_restart() -> None:
    from tools.train.evaluate import _plot_time, _shade_spans

    lab = np.zeros(100, np.int8)
    lab[50:60] = 1
    z = np.zeros((100, 1), np.float32)
    rec = Recording((("x", "u"),), 10.0, (Part(0.0, z, lab), Part(0.0, z, lab)), "two files, no time column", "0")
    ws = windows(rec, 20, 10)
    x, label = _plot_time(ws)
    assert "end to end" in label and np.all(np.diff(x) > 0)
    spans = event_spans(rec)
    assert spans == {0: (5.0, 5.9), 1: (5.0, 5.9)}
    shaded = _shade_spans(spans, ws, x)
    # the second part's event is drawn where the second part is on the axis
    assert shaded[0] == pytest.approx((5.0, 5.9)) and shaded[1][0] > x[ws.part == 0].max()
    # one clock across the parts: the times as they are
    rec2 = Recording((("x", "u"),), 10.0, (Part(0.0, z, lab), Part(100.0, z, lab)), "t", "0")
    x2, label2 = _plot_time(windows(rec2, 20, 10))
    assert label2 == "time (s)" and np.array_equal(x2, windows(rec2, 20, 10).t_end)
