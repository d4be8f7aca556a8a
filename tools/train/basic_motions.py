"""(b) Activity classifier on real sensor data: the BasicMotions data set.

BasicMotions (UEA multivariate time-series archive) ships inside the ``sktime`` wheel
(``sktime/datasets/data/BasicMotions``): a smart watch's 3-axis accelerometer and 3-axis
gyroscope, 10 Hz, 10 s cases (100 samples), four activities (standing, walking, running,
badminton), 40 training and 40 test cases recorded by four people. The accelerometer is
gravity-removed (a standing watch reads ~0.2 in norm), consistent with m/s^2; the gyroscope
magnitudes are consistent with rad/s. The archive does not state units: the manifest
records these as the best reading.

Model: small dense classifier (60 -> 16 -> 4 softmax) on window features (mean, RMS, peak,
crest, kurtosis, 5 log band energies per channel). Trained on the archive's TRAIN split,
accuracy reported on its TEST split (held out, different recordings).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from gateway import features as feat
from gateway.inference import Runner
from tools.train.common import (
    FloatArray,
    export_tflite,
    log,
    rounded,
    seed_everything,
    selftest_block,
    training_info,
    write_manifest,
)

NAME = "basic_motions"
VERSION = "1.0.0"
RATE_HZ = 10.0
WINDOW = 100
HOP = 50
LABELS = ("standing", "walking", "running", "badminton")
CHANNELS = (
    ("accel_x", "m/s2"),
    ("accel_y", "m/s2"),
    ("accel_z", "m/s2"),
    ("gyro_x", "rad/s"),
    ("gyro_y", "rad/s"),
    ("gyro_z", "rad/s"),
)
FEATURE_SPEC = feat.FeatureSpec(
    window=WINDOW,
    rate_hz=RATE_HZ,
    features=("mean", "rms", "peak", "crest", "kurtosis", "band_energy"),
    bands_hz=((0.0, 0.5), (0.5, 1.0), (1.0, 2.0), (2.0, 3.0), (3.0, 5.0)),
    detrend=True,
    taper="hann",
    log_bands=True,
)
EPOCHS = 300
TOLERANCE = {
    "prob_abs": 0.1,
    "argmax_agreement_min": 0.95,
    "note": "int8 class probabilities within prob_abs of float32 per class and window; "
    "the same predicted class for >= 95% of windows",
}


def load_split(split: str) -> tuple[FloatArray, np.ndarray]:
    """(n, 100, 6) float32 windows and integer labels (index into LABELS)."""
    from sktime.datasets import load_basic_motions

    x, y = load_basic_motions(split=split, return_type="numpy3D")
    windows = np.ascontiguousarray(np.transpose(x, (0, 2, 1)), dtype=np.float32)
    labels = np.array([LABELS.index(str(v).lower()) for v in y], dtype=np.int64)
    return windows, labels


def _build(n_features: int) -> Any:
    import keras

    inp = keras.Input((n_features,), name="features")
    h = keras.layers.Dense(16, activation="relu")(inp)
    h = keras.layers.Dropout(0.2)(h)
    out = keras.layers.Dense(len(LABELS), activation="softmax", name="probabilities")(h)
    model = keras.Model(inp, out, name=NAME)
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def train(seed: int, out_dir: Path) -> dict[str, Any]:
    seed_everything(seed)
    w_train, y_train = load_split("train")
    w_test, y_test = load_split("test")
    f_train = feat.compute(w_train, FEATURE_SPEC)
    mean = f_train.mean(axis=0)
    std = np.maximum(f_train.std(axis=0), 1e-6)
    x_train = ((f_train - mean) / std).astype(np.float32)
    x_test = ((feat.compute(w_test, FEATURE_SPEC) - mean) / std).astype(np.float32)

    log(f"[basic_motions] training on {x_train.shape[0]} cases x {x_train.shape[1]} features")
    model = _build(x_train.shape[1])
    model.fit(x_train, y_train, epochs=EPOCHS, batch_size=8, shuffle=True, verbose=0)

    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    probs: dict[str, FloatArray] = {}
    for quant in ("float32", "int8"):
        fname = f"{NAME}_{quant}.tflite"
        content = export_tflite(model, out_dir / fname, representative=x_train if quant == "int8" else None)
        runner = Runner(content)
        p_test = runner.run(x_test)
        p_train = runner.run(x_train)
        probs[quant] = p_test
        pred = np.argmax(p_test, axis=1)
        confusion = np.zeros((len(LABELS), len(LABELS)), dtype=int)
        for t, p in zip(y_test, pred, strict=True):
            confusion[t, p] += 1
        metrics: dict[str, Any] = {
            "test_cases": int(x_test.shape[0]),
            "test_accuracy": rounded(float(np.mean(pred == y_test))),
            "train_accuracy": rounded(float(np.mean(np.argmax(p_train, axis=1) == y_train))),
            "confusion_rows_true_cols_pred": confusion.tolist(),
        }
        if quant == "int8":
            metrics["vs_float32"] = {
                "max_abs_prob_diff": rounded(float(np.max(np.abs(p_test - probs["float32"])))),
                "argmax_agreement": rounded(float(np.mean(pred == np.argmax(probs["float32"], axis=1)))),
            }
        manifest = {
            "name": NAME,
            "version": VERSION,
            "task": "classification",
            "description": "activity classifier on the BasicMotions smart-watch data set "
            "(accelerometer + gyroscope, 10 Hz, 10 s windows)",
            "model_file": fname,
            "quantization": quant,
            "input": {
                "channels": [{"name": n, "unit": u} for n, u in CHANNELS],
                "rate_hz": RATE_HZ,
                "window": WINDOW,
                "hop": HOP,
            },
            "features": FEATURE_SPEC.to_dict(),
            "feature_names": feat.feature_names(FEATURE_SPEC, [n for n, _ in CHANNELS]),
            "normalisation": {"mean": [float(v) for v in mean], "std": [float(v) for v in std]},
            "output": {
                "kind": "class_probabilities",
                "labels": list(LABELS),
                "meaning": "softmax probability per label; the predicted activity is the argmax",
            },
            "metrics": metrics,
            "tolerance": TOLERANCE,
            "selftest": selftest_block(runner, x_test[[int(np.argmax(y_test == k)) for k in range(len(LABELS))]]),
            "training": training_info(
                seed,
                "BasicMotions (UEA archive) from the sktime wheel: "
                "TRAIN split (40 cases) for training, TEST split (40 cases) held out",
                {"epochs": EPOCHS, "batch_size": 8, "architecture": "60-16-4 dense relu/softmax"},
            ),
        }
        results[quant] = write_manifest(out_dir / f"{NAME}_{quant}.json", manifest, content)
        log(f"[basic_motions] {quant}: {len(content)} B, test accuracy {metrics['test_accuracy']:.3f}")
    return results
