"""The second backend: the committed models through gateway.inference on tflite-runtime 2.14.

Runs tests/inference/tflite_backend_check.py under .venv-tflite/bin/python (tflite-runtime
2.14.0, numpy 1.26; made by tools/setup_tflite_env.sh) and compares its outputs with LiteRT's
in this process.

Inputs: simulated healthy and faulty windows, windows at the fault severities where detection
is partial (0.05 and 0.1), and, for each vibration model, normalised features interpolated
between a healthy and a clearly faulty window so that LiteRT's score lies within +-5 % of
that model's threshold (40 pairs x 16 points).

What holds (and is asserted):
* features: numpy 1.26 there and numpy 2 here give the same float32 features.
* float32 models: the same scores to 1e-5 relative (measured: bit-identical), so the same
  decisions except for a score within 1e-5 (relative) of the threshold (measured: none).
* int8 models: the score is the mean over the 72 outputs of (feature - output)**2, the
  outputs being multiples of the output quantisation step s (0.2407 for
  vibration_anomaly_int8, threshold 1.4296). Where the two runtimes' int8 kernels round a
  hidden activation one step apart, outputs move by whole steps (measured: at most 1 step
  per output here, 2 in a run with 64 pairs; up to 30 outputs of a row, L2 norm 5.5 steps),
  which moves the score by at most 2 * sqrt(score / 72) * |dy| + |dy|**2 / 72
  (Cauchy-Schwarz). Measured: |score difference| <= 0.89 s on every row, <= 0.26 s within
  10 % of the threshold. Asserted: at most one step s, so a decision can differ only for a
  score within s of the threshold; measured: 5 of the 595 rows within +-5 % decided
  differently, all within 0.8 % of the threshold (14 of 911, all within 5.3 % = 0.32 s, in
  the run with 64 pairs); asserted: at most 5 % of the rows within +-5 %.
* classifier int8: probabilities within 1.5 output quantisation steps.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import numpy as np
import pytest

from gateway.inference import Model, load_model
from tests.inference.data import ALL_MANIFESTS, VIBRATION
from tests.support.upy import ROOT
from tools.train import sim_data

TFLITE_PY = ROOT / ".venv-tflite" / "bin" / "python"
CHECK = ROOT / "tests" / "inference" / "tflite_backend_check.py"
NEAR = 0.05  # interpolated rows: LiteRT score within +-5 % of the threshold
PAIRS, POINTS = 40, 16  # with the 384 partial-detection rows: 1024 rows, one batch


def _bisect(model: Model, h: np.ndarray, f: np.ndarray, target: float, iters: int = 24) -> np.ndarray:
    """Per pair, the t in [0, 1] where the score of (1 - t) h + t f crosses target (LiteRT)."""
    lo, hi = np.zeros(h.shape[0]), np.ones(h.shape[0])
    for _ in range(iters):
        mid = (lo + hi) / 2
        above = model.score_features(((1 - mid)[:, None] * h + mid[:, None] * f).astype(np.float32)) > target
        hi, lo = np.where(above, mid, hi), np.where(above, lo, mid)
    out: np.ndarray = (lo + hi) / 2
    return out


def near_threshold_features(model: Model, healthy: np.ndarray, faulty: np.ndarray) -> np.ndarray:
    """Normalised features between healthy and faulty windows, scoring within +-NEAR of the threshold."""
    assert model.threshold is not None
    rng = np.random.default_rng(0)
    xh, xf = model.features(healthy), model.features(faulty)
    h = xh[rng.integers(0, xh.shape[0], PAIRS)]
    f = xf[rng.integers(0, xf.shape[0], PAIRS)]
    thr = model.threshold
    assert (model.score_features(h) < (1 - NEAR) * thr).all() and (model.score_features(f) > (1 + NEAR) * thr).all()
    t_lo, t_hi = _bisect(model, h, f, (1 - NEAR) * thr), _bisect(model, h, f, (1 + NEAR) * thr)
    t = t_lo[:, None] + (t_hi - t_lo)[:, None] * np.linspace(0, 1, POINTS)[None, :]
    x = (1 - t)[:, :, None] * h[:, None, :] + t[:, :, None] * f[:, None, :]
    rows: np.ndarray = x.reshape(PAIRS * POINTS, -1).astype(np.float32)
    return rows


@pytest.fixture(scope="module")
def partial_detection_windows() -> np.ndarray:
    """Faults at the severities where the vibration detector finds some windows, not all."""
    return np.concatenate(
        [
            sim_data.machine_set(range(601, 605), 16, seed=12, fault=kind, severity=sev)
            for kind in ("bearing", "imbalance", "noise")
            for sev in (0.05, 0.1)
        ]
    )


@pytest.fixture(scope="module")
def runtimes(
    tmp_path_factory: pytest.TempPathFactory,
    healthy_windows: np.ndarray,
    fault_windows: dict[Any, np.ndarray],
    motion_windows: np.ndarray,
    partial_detection_windows: np.ndarray,
) -> dict[str, Any]:
    """Run every input through tflite-runtime once (subprocess); LiteRT models here."""
    if not TFLITE_PY.exists():
        pytest.fail(
            f"{TFLITE_PY} is missing: run `bash tools/setup_tflite_env.sh` first "
            "(creates .venv-tflite with tflite-runtime==2.14.0 and numpy==1.26.4)"
        )
    vib = np.concatenate(
        [
            healthy_windows[:24],
            fault_windows[("bearing", 0.5)],
            fault_windows[("noise", 0.1)],
            partial_detection_windows,
        ]
    )
    strong = np.concatenate([fault_windows[(k, 0.5)] for k in ("bearing", "imbalance", "noise")])
    tmp = tmp_path_factory.mktemp("tflite")
    in_dir, out_dir = tmp / "in", tmp / "out"
    in_dir.mkdir()
    out_dir.mkdir()
    models = {m.stem: load_model(m) for m in ALL_MANIFESTS}  # LiteRT here
    windows, features = {}, {}
    for manifest in ALL_MANIFESTS:
        stem = manifest.stem
        windows[stem] = vib if manifest in VIBRATION.values() else motion_windows
        np.save(in_dir / f"{stem}.npy", windows[stem])
        if manifest in VIBRATION.values():
            model = models[stem]
            features[stem] = np.concatenate(
                [model.features(partial_detection_windows), near_threshold_features(model, healthy_windows, strong)]
            )
            np.save(in_dir / f"{stem}.x.npy", features[stem])
    proc = subprocess.run(
        [str(TFLITE_PY), str(CHECK), str(in_dir), str(out_dir), *map(str, ALL_MANIFESTS)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    facts = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return {"models": models, "windows": windows, "features": features, "out": out_dir, "facts": facts}


def test_tflite_runtime_backend_matches_litert(runtimes: dict[str, Any]) -> None:
    facts = runtimes["facts"]
    assert [f["manifest"] for f in facts] == [m.stem for m in ALL_MANIFESTS]
    for f in facts:
        assert f["backend"] == "tflite-runtime"
        assert f["tflite_runtime"] == "2.14.0"
        assert f["numpy"].startswith("1.")
        # self-test rows at load + the windows' batch size (+ the features' batch size)
        assert f["resizes"] == (3 if f["manifest"] in runtimes["features"] else 2)

    for manifest in ALL_MANIFESTS:
        model = runtimes["models"][manifest.stem]
        assert model.backend == "litert"
        ours = model.score(runtimes["windows"][manifest.stem])
        theirs = np.load(runtimes["out"] / f"{manifest.stem}.npy")
        assert theirs.shape == ours.shape
        if model.manifest.quantization == "float32":
            np.testing.assert_allclose(theirs, ours, rtol=1e-5, atol=1e-6)
        elif model.task == "anomaly":
            step = model.runner.output_quant[0]
            np.testing.assert_allclose(theirs, ours, rtol=0, atol=step)
        else:
            step = model.runner.output_quant[0]
            np.testing.assert_allclose(theirs, ours, rtol=0, atol=1.5 * step)


def test_features_are_the_same_under_numpy_1_and_2(runtimes: dict[str, Any]) -> None:
    for manifest in ALL_MANIFESTS:
        model = runtimes["models"][manifest.stem]
        ours = model.features(runtimes["windows"][manifest.stem])
        theirs = np.load(runtimes["out"] / f"{manifest.stem}.features.npy")
        # Normalised features: a one-ulp tie in a raw feature stays tiny after (x - mean) / std.
        assert np.count_nonzero(theirs != ours) <= ours.size * 1e-4, manifest.stem
        np.testing.assert_allclose(theirs, ours, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("quant", ["float32", "int8"])
def test_decisions_near_the_threshold(runtimes: dict[str, Any], quant: str) -> None:
    manifest = VIBRATION[quant]
    model = runtimes["models"][manifest.stem]
    x = runtimes["features"][manifest.stem]
    ours = model.score_features(x)
    theirs = np.load(runtimes["out"] / f"{manifest.stem}.x.npy")
    thr = np.float32(model.threshold)
    rel = np.abs(ours / thr - 1)
    near = rel <= NEAR
    assert near.sum() >= 0.8 * PAIRS * POINTS  # the rows really lie at the threshold
    differ = model.decide(ours) != model.decide(theirs)
    if quant == "float32":
        np.testing.assert_allclose(theirs, ours, rtol=1e-5, atol=1e-6)
        assert not (differ & (rel > 1e-5)).any()
        return
    step = model.runner.output_quant[0]
    assert float(np.abs(theirs - ours).max()) <= step  # measured 0.89 steps
    assert not (differ & (np.abs(ours - thr) > step)).any()  # so: decisions differ only within s
    assert differ.sum() <= 0.05 * near.sum()  # measured 5 of 595
    y_ours = model.runner.run(x)
    y_theirs = np.load(runtimes["out"] / f"{manifest.stem}.y.npy")
    steps = np.abs(y_theirs - y_ours) / step
    assert float(steps.max()) <= 2.0 + 1e-3  # a hidden activation one step apart moves outputs by <= 2 steps
