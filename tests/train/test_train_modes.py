"""edgeline-train end to end: the real trainer (TensorFlow, in .venv-train) on small synthetic
CSV recordings, its models loaded and scored by the gateway's own code in this process.

- no labels -> an unsupervised autoencoder (reconstruction_mse) whose threshold keeps held-out
  normal data near the target false-alarm rate; default options (200 epochs, early stopping);
  the same command twice writes the same bytes;
- labels with anomalies -> a supervised classifier (probability score) that finds them;
- a recording too short, or supervised without labels: a clear error, exit 1, nothing written;
- no TensorFlow (.venv): the data is checked, then exit 2 naming .venv-train.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gateway import scorecsv
from gateway.config import from_dict
from gateway.csvrec import read_csv
from gateway.inference import load_model
from gateway.ingest import RawFrame
from gateway.pipeline import Gateway
from gateway.recording import time_split, windows
from gateway.replay import replay
from tests.gateway.doubles import Published
from tests.support.simdevice import SimDevice
from tests.support.upy import ROOT
from tools.train.user import rename_channels

TRAIN_PY = ROOT / ".venv-train" / "bin" / "python"
RATE = 50.0


def _recording(path: Path, seconds: float, seed: int, *, anomalies: bool, labels: bool) -> Path:
    """Two channels at 50 Hz: a 5 Hz sine and a 12 Hz cosine on an offset, with noise; with
    ``anomalies`` a 3 s burst every 30 s (an 18 Hz tone on a, noise on b), labelled is_anomaly."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    a = np.sin(2 * np.pi * 5 * t) + 0.2 * rng.standard_normal(n)
    b = 0.5 * np.cos(2 * np.pi * 12 * t) + 0.1 * rng.standard_normal(n) + 2.0
    lab = np.zeros(n, np.int64)
    if anomalies:
        for start in np.arange(20.0, seconds - 5, 30.0):
            i0, i1 = int(start * RATE), int((start + 3) * RATE)
            a[i0:i1] += 1.5 * np.sin(2 * np.pi * 18 * t[i0:i1])
            b[i0:i1] += 0.8 * rng.standard_normal(i1 - i0)
            lab[i0:i1] = 1
    cols = [t, a, b] + ([lab] if labels else [])
    header = "time,a,b" + (",is_anomaly" if labels else "")
    fmt = ["%.2f", "%.5f", "%.5f"] + (["%d"] if labels else [])
    np.savetxt(path, np.column_stack(cols), fmt=fmt, delimiter=",", header=header, comments="")
    return path


def _run(python: Path, args: list[str]) -> subprocess.CompletedProcess[str]:
    if not python.exists():
        pytest.fail(f"{python} is missing: run tools/setup.sh --test (it makes .venv-train with TensorFlow)")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [str(python), "-m", "tools.train", *args],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _hashes(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.iterdir())}


@pytest.fixture(scope="module")
def unsupervised(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], Path]:
    """Default options on 4 min of normal data without labels: (out dir, argv, CSV)."""
    tmp = tmp_path_factory.mktemp("unsup")
    csv = _recording(tmp / "normal.csv", 240, seed=1, anomalies=False, labels=False)
    out = tmp / "model"
    argv = ["csv", str(csv), "--name", "pump", "--out", str(out), "--false-alarm-rate", "0.05"]
    r = _run(TRAIN_PY, argv)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "mode: unsupervised (no labels)" in r.stderr
    assert "# pump 1.0.0: training report" in r.stdout
    return out, argv, csv


def test_label_free_data_trains_an_autoencoder_calibrated_on_held_out_normal_data(
    unsupervised: tuple[Path, list[str], Path], tmp_path: Path
) -> None:
    out, argv, csv = unsupervised
    rec = read_csv([csv])
    held_out = read_csv([_recording(tmp_path / "later.csv", 240, seed=7, anomalies=False, labels=False)])
    for quant in ("float32", "int8"):
        path = out / f"pump_{quant}.json"
        m = json.loads(path.read_text())
        assert m["output"]["score"] == "reconstruction_mse" and m["quantization"] == quant
        t = m["training"]
        assert t["command"] == "edgeline-train " + shlex.join(argv)
        assert (t["mode"], t["data"], t["data_sha256"]) == ("unsupervised", rec.source, rec.fingerprint)
        assert t["false_alarm_rate"] == 0.05 and t["seed"] == 1 and t["epochs_max"] == 200
        assert [c["name"] for c in m["input"]["channels"]] == ["a", "b"]
        model = load_model(path, channels=["a", "b"], rate_hz=RATE)  # sha256, tensors, self-test
        ws = windows(held_out, model.manifest.input.window, model.manifest.input.hop)
        far = float(np.mean(model.decide(model.score(ws.values))))
        # the threshold is the 0.95 quantile of ~75 normal validation windows: new normal data
        # lands near 5 %, not at 0 (threshold far too high) nor far above (too low)
        assert 0.0 < far <= 0.13, f"{quant}: {far:.3f} of {len(ws)} held-out normal windows over the threshold"
        assert m["metrics"]["validation_false_alarm_rate"] <= 0.05
    # the report and the per-window test scores, which match the int8 model's own scoring
    report = json.loads((out / "pump_report.json").read_text())
    assert set(report["models"]) == {"float32", "int8"}
    assert set(report["models"]["int8"]["test"]["baselines"]) == {"zscore", "mad"}
    rows = list(scorecsv.read(out / "pump_test_scores.csv"))
    model = load_model(out / "pump_int8.json")
    inp = model.manifest.input
    test = time_split(windows(rec, inp.window, inp.hop), tuple(report["training"]["split"]["fractions"]))[2]
    assert [(r.part, r.start) for r in rows] == list(zip(test.part.tolist(), test.start.tolist(), strict=True))
    np.testing.assert_array_equal(
        np.array([r.score for r in rows], np.float32), model.score(test.values)
    )  # 9 significant digits: float32 exactly
    assert all(np.float32(r.threshold) == np.float32(model.threshold) and r.label is None for r in rows)
    assert (out / "pump_scores.svg").read_text().lstrip().startswith("<svg")
    assert "## Test split: int8 model" in (out / "pump_report.md").read_text()


def test_same_command_twice_writes_the_same_bytes(unsupervised: tuple[Path, list[str], Path]) -> None:
    out, argv, _ = unsupervised
    before = _hashes(out)
    assert len(before) == 8
    r = _run(TRAIN_PY, argv)
    assert r.returncode == 0, r.stderr[-3000:]
    assert _hashes(out) == before


def test_labelled_data_trains_a_supervised_probability_model(tmp_path: Path) -> None:
    csv = _recording(tmp_path / "labelled.csv", 300, seed=2, anomalies=True, labels=True)
    out = tmp_path / "model"
    argv = ["csv", str(csv), "--name", "fan", "--out", str(out), "--epochs", "60"]
    argv += ["--channels-as", "ax,ay", "--version", "2.1.0", "--seed", "3"]
    r = _run(TRAIN_PY, argv)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "mode: supervised (labels mark" in r.stderr
    m = json.loads((out / "fan_int8.json").read_text())
    assert m["output"]["score"] == "probability" and m["version"] == "2.1.0"
    assert m["training"]["mode"] == "supervised" and m["training"]["seed"] == 3
    assert m["training"]["split"]["train"]["anomalous"] > 0
    # anomalies in the validation split too: early stopping watches its loss
    assert m["training"]["split"]["validation"]["anomalous"] > 0 and m["training"]["early_stopping_on"] == "val_loss"
    assert [c["name"] for c in m["input"]["channels"]] == ["ax", "ay"]
    model = load_model(out / "fan_int8.json", channels=["ax", "ay"], rate_hz=RATE)
    rec = read_csv([csv])
    ws = windows(rec, m["input"]["window"], m["input"]["hop"])
    p = model.score(ws.values)
    assert p.shape == (len(ws),) and ((p >= 0) & (p <= 1)).all()
    assert ws.labels is not None
    assert p[ws.labels == 1].mean() > 0.5 > p[ws.labels == 0].mean()
    test = json.loads((out / "fan_report.json").read_text())["models"]["int8"]["test"]
    assert test["labelled"] and test["recall"] >= 0.5 and test["events_hit"] >= 1
    assert m["metrics"]["vs_float32"]["decision_agreement"] >= 0.9
    # deployed: the gateway's replay of the same CSV scores the test windows exactly as training did
    cfg = from_dict(
        {
            "gateway": {"id": "gw1", "site": "s1", "data_dir": str(tmp_path / "gw")},
            "pipelines": [{"name": "fan", "model": str(out / "fan_int8.json")}],
        },
        base_dir=tmp_path,
    )
    with (tmp_path / "replay.csv").open("w", encoding="utf-8") as f:
        replay(cfg, rename_channels(rec, ["ax", "ay"]), device="fan-1", out=f)
    replayed = {(r.part, r.start): r for r in scorecsv.read(tmp_path / "replay.csv")}
    trained = list(scorecsv.read(out / "fan_test_scores.csv"))
    assert trained and all(
        (replayed[r.part, r.start].score, replayed[r.part, r.start].over) == (r.score, r.over) for r in trained
    )


def test_too_short_recording_is_refused_before_tensorflow_and_writes_nothing(tmp_path: Path) -> None:
    csv = _recording(tmp_path / "short.csv", 30, seed=3, anomalies=False, labels=False)
    out = tmp_path / "model"
    # the main .venv has no TensorFlow: the data error comes first all the same
    r = _run(Path(sys.executable), ["csv", str(csv), "--name", "x", "--out", str(out)])
    assert r.returncode == 1, r.stderr
    assert "too short" in r.stderr and "1500 samples" in r.stderr and "needs TensorFlow" not in r.stderr
    assert not out.exists()


def test_supervised_without_labels_says_which_option(tmp_path: Path) -> None:
    csv = _recording(tmp_path / "normal.csv", 120, seed=4, anomalies=False, labels=False)
    out = tmp_path / "model"
    r = _run(TRAIN_PY, ["csv", str(csv), "--name", "x", "--out", str(out), "--mode", "supervised"])
    assert r.returncode == 1
    assert "--mode supervised needs labels" in r.stderr and "--label-column" in r.stderr
    assert not out.exists()


def test_without_tensorflow_the_message_names_the_training_venv(tmp_path: Path) -> None:
    csv = _recording(tmp_path / "normal.csv", 120, seed=5, anomalies=False, labels=False)
    out = tmp_path / "model"
    r = _run(Path(sys.executable), ["csv", str(csv), "--name", "x", "--out", str(out)])
    assert r.returncode == 2
    assert "windows: train" in r.stderr  # read and checked first
    assert (
        "edgeline-train needs TensorFlow: run tools/setup.sh --train, then .venv-train/bin/edgeline-train ..."
        in r.stderr
    )
    assert not out.exists()
    legacy = _run(Path(sys.executable), ["vibration", "--out", str(out)])
    assert legacy.returncode == 2 and "needs TensorFlow" in legacy.stderr


def test_raw_log_is_read_with_the_gateways_configuration(tmp_path: Path) -> None:
    """raw: a device's stream as a live gateway stored it, read and checked (then, in .venv,
    the missing TensorFlow); a range given neither way is a usage error."""
    cfg = {"gateway": {"id": "gw1", "site": "s1", "data_dir": str(tmp_path / "data")}}
    gw = Gateway(from_dict(cfg, base_dir=tmp_path), Published())
    dev = SimDevice("pump-1")
    t0 = 1_700_000_000.0
    gw.process([RawFrame(dev.topic("birth"), dev.birth(), t0)])
    gw.process([RawFrame(dev.topic("data"), dev.data(), t0 + 1 + i * 0.32) for i in range(300)])
    gw.close()
    toml = tmp_path / "gateway.toml"
    toml.write_text(f'[gateway]\nid = "gw1"\nsite = "s1"\ndata_dir = "{tmp_path / "data"}"\n')
    out = tmp_path / "model"
    base = ["raw", "--config", str(toml), "--device", "pump-1", "--name", "p", "--out", str(out)]
    r = _run(Path(sys.executable), [*base, "--since", "2023-11-14T22:13:00Z", "--to", str(t0 + 200)])
    assert r.returncode == 2, r.stderr
    assert "read rawlog: pump-1" in r.stderr and "9600 samples x 3 channels (ax, ay, temp) at 100 Hz" in r.stderr
    assert "needs TensorFlow" in r.stderr and not out.exists()
    r = _run(Path(sys.executable), base)
    assert r.returncode == 2 and "give the time range as --since T [--to T] or as --last SECONDS" in r.stderr
