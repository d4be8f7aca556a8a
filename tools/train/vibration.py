"""(a) Vibration anomaly detector for the MPU-6050 stream (6 channels, 100 Hz).

Trained only on healthy machines simulated by ``sim_signals.Vibration`` (shaft speed
varying 23.5..26 Hz between machines), evaluated on held-out healthy machines and on the
injected faults (imbalance, bearing, noise) at several severities.

Model: dense autoencoder 72 -> 32 -> 8 -> 32 -> 72 on window features (RMS, peak, crest
factor, kurtosis and 8 log band energies per channel), normalised with the training mean /
std. Anomaly score = mean squared reconstruction error of the normalised features;
threshold = the 99.5th percentile of held-out healthy scores times 1.25.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from gateway import features as feat
from gateway.inference import Runner
from tools.train import sim_data
from tools.train.common import (
    FloatArray,
    export_tflite,
    log,
    roc_auc,
    rounded,
    seed_everything,
    selftest_block,
    training_info,
    write_manifest,
)

NAME = "vibration_anomaly"
VERSION = "1.0.0"
RATE_HZ = 100.0
WINDOW = 128
HOP = 64
FEATURE_SPEC = feat.FeatureSpec(
    window=WINDOW,
    rate_hz=RATE_HZ,
    features=("rms", "peak", "crest", "kurtosis", "band_energy"),
    bands_hz=(
        (0.0, 6.0),
        (6.0, 12.0),
        (12.0, 18.0),
        (18.0, 23.0),
        (23.0, 28.0),
        (28.0, 36.0),
        (36.0, 44.0),
        (44.0, 50.0),
    ),
    detrend=True,
    taper="hann",
    log_bands=True,
)
# int8 calibration: healthy rows plus 100 of them scaled by this factor (see train()).
CALIBRATION_WIDEN = 8
THRESHOLD_QUANTILE = 0.995
THRESHOLD_MARGIN = 1.25
SEVERITIES = (0.05, 0.1, 0.25, 0.5, 1.0)
FAULT_KINDS = ("imbalance", "bearing", "noise")
# Data set sizes (windows of 128 samples, hop 64, each machine one continuous stream).
TRAIN_MACHINES = 48
VAL_MACHINES = 16
TEST_MACHINES = 16
WINDOWS_PER_MACHINE = 40
FAULT_MACHINES = 8
FAULT_WINDOWS = 20
# int8 vs float32 on the same windows (tests/inference check these, docs/models.md lists them).
SCORE_REL_TOL = 0.25
SCORE_ABS_TOL = 0.05
TOLERANCE: dict[str, Any] = {
    "score_rel": SCORE_REL_TOL,
    "score_abs": SCORE_ABS_TOL,
    "decision_agreement_min": 0.97,
    "note": "per window |int8 - float32| <= score_abs + score_rel * float32 score; "
    "the same decision (above / below each model's threshold) for >= 97% of windows",
}


def _build(n_features: int) -> Any:
    import keras

    inp = keras.Input((n_features,), name="features")
    h = keras.layers.Dense(32, activation="relu")(inp)
    h = keras.layers.Dense(8, activation="relu")(h)
    h = keras.layers.Dense(32, activation="relu")(h)
    out = keras.layers.Dense(n_features, name="reconstruction")(h)
    model = keras.Model(inp, out, name=NAME)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    return model


def _scores(runner: Runner, x: FloatArray) -> FloatArray:
    y = runner.run(x)
    s: FloatArray = np.mean((x - y) ** 2, axis=1).astype(np.float32)
    return s


def train(seed: int, out_dir: Path) -> dict[str, Any]:
    seed_everything(seed)
    base = seed * 10_000
    log(f"[vibration] simulating data (seed {seed})")
    w_train = sim_data.machine_set(range(base, base + TRAIN_MACHINES), WINDOWS_PER_MACHINE, seed=seed)
    w_val = sim_data.machine_set(range(base + 1000, base + 1000 + VAL_MACHINES), WINDOWS_PER_MACHINE, seed=seed + 1)
    w_test = sim_data.machine_set(range(base + 2000, base + 2000 + TEST_MACHINES), WINDOWS_PER_MACHINE, seed=seed + 2)
    faults: dict[tuple[str, float], FloatArray] = {}
    for k, kind in enumerate(FAULT_KINDS):
        for sv in SEVERITIES:
            faults[(kind, sv)] = sim_data.machine_set(
                range(base + 3000 + 100 * k, base + 3000 + 100 * k + FAULT_MACHINES),
                FAULT_WINDOWS,
                seed=seed + 3 + k,
                fault=kind,
                severity=sv,
            )

    f_train = feat.compute(w_train, FEATURE_SPEC)
    mean = f_train.mean(axis=0)
    std = np.maximum(f_train.std(axis=0), 1e-6)

    def norm(w: FloatArray) -> FloatArray:
        x: FloatArray = ((feat.compute(w, FEATURE_SPEC) - mean) / std).astype(np.float32)
        return x

    x_train = ((f_train - mean) / std).astype(np.float32)
    x_val, x_test = norm(w_val), norm(w_test)
    x_faults = {key: norm(w) for key, w in faults.items()}

    log(f"[vibration] training autoencoder on {x_train.shape[0]} healthy windows x {x_train.shape[1]} features")
    model = _build(x_train.shape[1])
    import keras

    model.fit(
        x_train,
        x_train,
        epochs=120,
        batch_size=64,
        shuffle=True,
        verbose=0,
        validation_data=(x_val, x_val),
        callbacks=[keras.callbacks.EarlyStopping(patience=15, restore_best_weights=True)],
    )

    out_dir.mkdir(parents=True, exist_ok=True)
    # Representative set for int8 calibration: healthy training windows only (as the cloud
    # would have); anomalous inputs then saturate the input range, which still scores high.
    rng = np.random.default_rng(seed)
    rep = x_train[rng.choice(x_train.shape[0], size=400, replace=False)]
    if CALIBRATION_WIDEN > 1:
        # Widen the int8 ranges beyond healthy data so that faulty windows (features far
        # outside the healthy spread) are not clipped at the model input; healthy inputs
        # lose a little resolution, which costs far less than the clipping.
        rep = np.concatenate([rep, rep[:100] * CALIBRATION_WIDEN]).astype(np.float32)
    # Self-test vectors: two healthy windows, one bearing and one imbalance fault window.
    selftest_inputs = np.concatenate([x_test[:2], x_faults[("bearing", 1.0)][:1], x_faults[("imbalance", 1.0)][:1]])
    results: dict[str, Any] = {}
    float_scores: dict[str, FloatArray] = {}
    for quant in ("float32", "int8"):
        fname = f"{NAME}_{quant}.tflite"
        content = export_tflite(model, out_dir / fname, representative=rep if quant == "int8" else None)
        runner = Runner(content)
        s_val = _scores(runner, x_val)
        threshold = float(np.quantile(s_val, THRESHOLD_QUANTILE) * THRESHOLD_MARGIN)
        s_test = _scores(runner, x_test)
        metrics: dict[str, Any] = {
            "threshold_from": f"{THRESHOLD_QUANTILE:.1%} quantile x {THRESHOLD_MARGIN} of "
            f"{x_val.shape[0]} held-out healthy windows ({VAL_MACHINES} machines)",
            "healthy_test_windows": int(x_test.shape[0]),
            "false_alarm_rate": rounded(float(np.mean(s_test > threshold))),
            "faults": {},
        }
        all_pos = []
        for (kind, sv), x in x_faults.items():
            s = _scores(runner, x)
            all_pos.append(s)
            metrics["faults"].setdefault(kind, {})[f"severity_{sv:g}"] = {
                "windows": int(x.shape[0]),
                "detection_rate": rounded(float(np.mean(s > threshold))),
                "roc_auc": rounded(roc_auc(s_test, s)),
            }
        metrics["roc_auc_all_faults"] = rounded(roc_auc(s_test, np.concatenate(all_pos)))
        metrics["healthy_score_p50"] = rounded(float(np.median(s_test)), 5)
        float_scores[quant] = np.concatenate([s_test, *all_pos])
        if quant == "int8":
            f32 = float_scores["float32"]
            i8 = float_scores["int8"]
            thr32 = results["float32"]["output"]["threshold"]
            metrics["vs_float32"] = {
                "max_abs_score_diff": rounded(float(np.max(np.abs(i8 - f32))), 5),
                "max_rel_score_diff": rounded(float(np.max(np.abs(i8 - f32) / np.maximum(f32, 1e-6)))),
                "within_tolerance": rounded(float(np.mean(np.abs(i8 - f32) <= SCORE_ABS_TOL + SCORE_REL_TOL * f32))),
                "decision_agreement": rounded(float(np.mean((i8 > threshold) == (f32 > thr32)))),
            }
        manifest = {
            "name": NAME,
            "version": VERSION,
            "task": "anomaly",
            "description": "MPU-6050 vibration anomaly detector (dense autoencoder on window "
            "features); trained on healthy simulated machines only",
            "model_file": fname,
            "quantization": quant,
            "input": {
                "channels": [{"name": n, "unit": u} for n, u in sim_data.CHANNELS],
                "rate_hz": RATE_HZ,
                "window": WINDOW,
                "hop": HOP,
            },
            "features": FEATURE_SPEC.to_dict(),
            "feature_names": feat.feature_names(FEATURE_SPEC, [n for n, _ in sim_data.CHANNELS]),
            "normalisation": {
                "mean": [float(v) for v in mean],
                "std": [float(v) for v in std],
            },
            "output": {
                "kind": "anomaly_score",
                "score": "reconstruction_mse",
                "threshold": float(np.float32(threshold)),
                "meaning": "mean squared error between the normalised features and the "
                "model's reconstruction; score > threshold = anomalous window",
            },
            "metrics": metrics,
            "tolerance": TOLERANCE,
            "selftest": selftest_block(runner, selftest_inputs),
            "training": training_info(
                seed,
                "firmware/sensorfw/boards/sim_signals.py Vibration: "
                f"{TRAIN_MACHINES}x{WINDOWS_PER_MACHINE} healthy windows (train), "
                f"{VAL_MACHINES}x{WINDOWS_PER_MACHINE} (threshold), "
                f"{TEST_MACHINES}x{WINDOWS_PER_MACHINE} healthy + "
                f"{FAULT_MACHINES}x{FAULT_WINDOWS} per fault kind and severity (test)",
                {"epochs_max": 120, "batch_size": 64, "architecture": "72-32-8-32-72 dense relu"},
            ),
        }
        results[quant] = write_manifest(out_dir / f"{NAME}_{quant}.json", manifest, content)
        log(
            f"[vibration] {quant}: {len(content)} B, threshold {threshold:.4f}, "
            f"false alarms {metrics['false_alarm_rate']:.3f}, AUC {metrics['roc_auc_all_faults']:.4f}"
        )
    return results
