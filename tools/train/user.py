"""The recipe of ``edgeline-train``: a model from a user's own recording.

    rec = read_csv([...]) or read_rawlog(...)             # gateway.csvrec / gateway.rawrec
    prep = prepare(rec, opts)                             # data checks only: no TensorFlow
    report = train(prep, opts, command="edgeline-train csv ...")

:func:`prepare` picks the window, hop and bands (tools.train.autospec), cuts windows as the
gateway does (gateway.recording.windows), splits them by time (train / validation / test),
refuses a recording too short for that, and picks the mode: *supervised* (a classifier, score
= P(anomalous)) when labels mark anomalous windows in the training split, else *unsupervised*
(an autoencoder trained on the normal windows, score = reconstruction error).

:func:`train` fits the model (tools.train.user_models), exports float32 and int8 (.tflite), and
scores every split with the gateway's own :class:`gateway.inference.Model` on the written file:
the threshold of each is the one rule (gateway.thresholds.threshold_for) over the validation
split's normal windows at the target false-alarm rate; the test split is evaluated beside the
naive baselines (tools.train.user_report writes the manifests' metrics and the report files).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gateway import features as feat
from gateway.features import FeatureSpec
from gateway.inference import Model, Runner, load_model
from gateway.manifest import FORMAT, FORMAT_VERSION, parse_manifest
from gateway.recording import Recording, RecordingError, WindowSet, time_split, windows
from gateway.thresholds import resolvable, threshold_for
from tools.train.common import (
    FloatArray,
    export_tflite,
    log,
    seed_everything,
    selftest_block,
    training_info,
    write_manifest,
)

MODES = ("auto", "unsupervised", "supervised")
QUANTS = ("float32", "int8")
# int8 calibration: up to REP_WINDOWS training windows plus REP_WIDENED of them scaled by
# CALIBRATION_WIDEN (as tools/train/vibration.py: anomalies must not clip at the model input).
REP_WINDOWS = 400
REP_WIDENED = 100
CALIBRATION_WIDEN = 8
# Supervised mode needs at least this many anomalous windows in the training split.
MIN_TRAIN_ANOMALOUS = 3


@dataclass(frozen=True)
class TrainOptions:
    name: str
    out: Path
    window: int | None = None
    hop: int | None = None
    bands: int | None = None
    mode: str = "auto"
    far: float = 0.001
    split: tuple[float, float, float] = (0.6, 0.2, 0.2)
    seed: int = 1
    epochs: int = 200
    version: str = "1.0.0"


@dataclass(frozen=True)
class Prepared:
    rec: Recording
    spec: FeatureSpec
    hop: int
    train: WindowSet
    val: WindowSet
    test: WindowSet
    mode: str  # "unsupervised" | "supervised"
    mode_reason: str


def normal_mask(ws: WindowSet) -> npt.NDArray[np.bool_]:
    """Windows that count as normal: all of an unlabelled set."""
    if ws.labels is None:
        return np.ones(len(ws), bool)
    return np.asarray(ws.labels == 0)


def rename_channels(rec: Recording, names: list[str]) -> Recording:
    """--channels-as: the recording's channels under the device's names (units kept)."""
    if len(names) != len(rec.channels):
        raise RecordingError(
            f"--channels-as gives {len(names)} names ({','.join(names)}) for {len(rec.channels)} channels "
            f"({','.join(rec.channel_names)}): give one name per channel, in that order"
        )
    if len(set(names)) != len(names) or any(not n for n in names):
        raise RecordingError(f"--channels-as: names must be distinct and non-empty, got {','.join(names)}")
    return dataclasses.replace(rec, channels=tuple((n, u) for n, (_, u) in zip(names, rec.channels, strict=True)))


def _split_line(tag: str, ws: WindowSet) -> str:
    n_norm = int(normal_mask(ws).sum())
    lab = "" if ws.labels is None else f" ({n_norm} normal, {len(ws) - n_norm} anomalous)"
    return f"{tag} {len(ws)}{lab}"


def _pick_mode(mode: str, rec: Recording, train: WindowSet) -> tuple[str, str]:
    if mode not in MODES:
        raise ValueError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    n_anom = 0 if train.labels is None else int((train.labels > 0).sum())
    if mode == "unsupervised":
        return mode, "asked for (--mode unsupervised)"
    if mode == "supervised":
        if train.labels is None:
            raise RecordingError(
                f"{rec.source}: --mode supervised needs labels: name the label column with --label-column"
            )
        if n_anom < MIN_TRAIN_ANOMALOUS:
            raise RecordingError(
                f"{rec.source}: --mode supervised needs at least {MIN_TRAIN_ANOMALOUS} anomalous windows in the "
                f"training split, it has {n_anom}: put labelled anomalies early in the data, change --split, "
                "or use --mode unsupervised"
            )
        return mode, "asked for (--mode supervised)"
    if train.labels is None:
        return "unsupervised", "no labels"
    if n_anom >= MIN_TRAIN_ANOMALOUS:
        return "supervised", f"labels mark {n_anom} anomalous windows in the training split"
    return "unsupervised", (
        f"labels mark {n_anom} anomalous windows in the training split; supervised needs {MIN_TRAIN_ANOMALOUS}"
    )


def prepare(rec: Recording, opts: TrainOptions) -> Prepared:
    """Everything short of training: spec, windows, split, size and mode checks (no TensorFlow)."""
    from tools.train import autospec

    labelled = f", labelled ({', '.join(rec.label_names)})" if rec.labelled else ", no labels"
    log(
        f"[edgeline-train] read {rec.source}: {rec.n_samples} samples x {len(rec.channels)} "
        f"channel{'s' if len(rec.channels) > 1 else ''} "
        f"({', '.join(rec.channel_names)}) at {rec.rate_hz:g} Hz, {rec.duration_s:.1f} s in {len(rec.parts)} part(s){labelled}"
    )
    spec, hop = autospec.choose(rec.rate_hz, len(rec.channels), window=opts.window, hop=opts.hop, bands=opts.bands)
    bands = ", ".join(f"{lo:g}-{hi:g}" for lo, hi in spec.bands_hz)
    log(
        f"[edgeline-train] window {spec.window} samples ({spec.window / rec.rate_hz:.3g} s), hop {hop}, "
        f"features {', '.join(spec.features)}; bands (Hz) {bands or 'none'}"
    )
    autospec.check_enough(rec, spec.window, hop, split=opts.split)
    ws = windows(rec, spec.window, hop)
    train, val, test = time_split(ws, opts.split)
    log(
        f"[edgeline-train] windows: {_split_line('train', train)}, {_split_line('validation', val)}, {_split_line('test', test)}"
    )
    mode, reason = _pick_mode(opts.mode, rec, train)
    # what each mode learns from: all train windows (supervised) or the normal ones; the
    # threshold from the validation split's normal windows
    n_fit = len(train) if mode == "supervised" else int(normal_mask(train).sum())
    counts = {"train": n_fit, "held-out": int(normal_mask(val).sum()), "test": len(test)}
    autospec.check_splits(counts, spec.window, hop, rec.rate_hz)
    log(f"[edgeline-train] mode: {mode} ({reason})")
    if not resolvable(int(normal_mask(val).sum()), opts.far):
        log(
            f"[edgeline-train] note: {int(normal_mask(val).sum())} normal validation windows cannot resolve a "
            f"false-alarm rate of {opts.far:g} (needs {int(np.ceil(1 / opts.far))}): the threshold is their largest score"
        )
    return Prepared(rec, spec, hop, train, val, test, mode, reason)


@dataclass(frozen=True)
class Scored:
    """One exported model scored on the splits."""

    quant: str
    manifest_path: Path
    threshold: float
    val_normal_scores: FloatArray
    test_scores: FloatArray
    manifest: dict[str, Any]


class _Norm:
    """Model input = (feature - mean) / std, computed exactly as gateway.inference.Model does."""

    def __init__(self, f_normal: FloatArray) -> None:
        f64 = f_normal.astype(np.float64)
        self.mean = f64.mean(axis=0)
        self.std = np.maximum(f64.std(axis=0), 1e-6)
        self._mean32 = self.mean.astype(np.float32)
        self._inv32 = (1.0 / self.std).astype(np.float32)

    def __call__(self, f: FloatArray) -> FloatArray:
        x: FloatArray = (f - self._mean32) * self._inv32
        return x.astype(np.float32)


def _representative(x: FloatArray, seed: int) -> FloatArray:
    rng = np.random.default_rng(seed)
    rep = x[rng.choice(x.shape[0], size=min(REP_WINDOWS, x.shape[0]), replace=False)]
    return np.concatenate([rep, rep[:REP_WIDENED] * CALIBRATION_WIDEN]).astype(np.float32)


def _selftest_inputs(x_test: FloatArray, test: WindowSet) -> FloatArray:
    """Two normal test windows and two anomalous ones when labelled, else the first four."""
    normal = normal_mask(test)
    idx = list(np.flatnonzero(normal)[:2]) + list(np.flatnonzero(~normal)[:2])
    if len(idx) < 4:
        idx = sorted(set(idx) | set(range(min(4, len(test)))))[:4]
    return x_test[np.asarray(idx, dtype=np.intp)]


def _versions() -> dict[str, str]:
    out = {}
    for dist in ("ai-edge-litert", "keras"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[dist.replace("-", "_")] = importlib.metadata.version(dist)
    return out


def train(prep: Prepared, opts: TrainOptions, *, command: str) -> dict[str, Any]:
    """Fit, export float32 + int8, calibrate, evaluate, write everything into opts.out."""
    from tools.train import user_models, user_report

    seed_everything(opts.seed)
    rec, spec = prep.rec, prep.spec
    log("[edgeline-train] computing features")
    f = {k: feat.compute(ws.values, spec) for k, ws in (("train", prep.train), ("val", prep.val), ("test", prep.test))}
    n_train, n_val = normal_mask(prep.train), normal_mask(prep.val)
    norm = _Norm(f["train"][n_train])
    x = {k: norm(v) for k, v in f.items()}
    if prep.mode == "supervised":
        assert prep.train.labels is not None and prep.val.labels is not None
        fitted = user_models.fit_classifier(
            x["train"],
            prep.train.labels.astype(np.float32),
            x["val"],
            prep.val.labels.astype(np.float32),
            epochs=opts.epochs,
            name=opts.name,
        )
        rep = _representative(x["train"], opts.seed)
    else:
        fitted = user_models.fit_autoencoder(x["train"][n_train], x["val"][n_val], epochs=opts.epochs, name=opts.name)
        rep = _representative(x["train"][n_train], opts.seed)

    opts.out.mkdir(parents=True, exist_ok=True)
    names = feat.feature_names(spec, list(rec.channel_names))
    info = training_info(
        opts.seed,
        rec.source,
        {
            "data_sha256": rec.fingerprint,
            "mode": prep.mode,
            "mode_reason": prep.mode_reason,
            "false_alarm_rate": opts.far,
            "split": user_report.split_sizes(prep, opts.split),
            "epochs_max": opts.epochs,
            "epochs_run": fitted.epochs_run,
            "best_epoch": fitted.best_epoch,
            "early_stopping_on": fitted.stopped_on,
            "batch_size": user_models.BATCH_SIZE,
            "architecture": fitted.architecture,
            **_versions(),
        },
    )
    info["command"] = command
    base: dict[str, Any] = {
        "name": opts.name,
        "version": opts.version,
        "task": "anomaly",
        "description": f"{prep.mode} anomaly model trained by edgeline-train on {rec.source}",
        "input": {
            "channels": [{"name": n, "unit": u} for n, u in rec.channels],
            "rate_hz": rec.rate_hz,
            "window": spec.window,
            "hop": prep.hop,
        },
        "features": spec.to_dict(),
        "feature_names": names,
        "normalisation": {"mean": [float(v) for v in norm.mean], "std": [float(v) for v in norm.std]},
        "training": info,
    }
    score_kind = "probability" if prep.mode == "supervised" else "reconstruction_mse"
    x_self = _selftest_inputs(x["test"], prep.test)
    scored: dict[str, Scored] = {}
    for quant in QUANTS:
        log(f"[edgeline-train] converting to {quant} TFLite")
        fname = f"{opts.name}_{quant}.tflite"
        content = export_tflite(fitted.model, opts.out / fname, representative=rep if quant == "int8" else None)
        manifest: dict[str, Any] = {
            **base,
            "model_file": fname,
            "quantization": quant,
            "output": user_report.output_block(score_kind, 0.0),
        }
        path = opts.out / f"{opts.name}_{quant}.json"
        # The gateway's own Model on the written file scores the splits (features included).
        model = Model(
            parse_manifest({"format": FORMAT, "format_version": FORMAT_VERSION, "sha256": "0" * 64, **manifest}, path),
            Runner(content),
        )
        s_val = model.score(prep.val.values)[n_val]
        thr = threshold_for(s_val, opts.far)
        s_test = model.score(prep.test.values)
        manifest["output"] = user_report.output_block(score_kind, thr)
        manifest["metrics"] = user_report.model_metrics(prep, opts, thr, s_val, s_test)
        if quant == "int8":
            manifest["metrics"]["vs_float32"] = user_report.agreement(scored["float32"], thr, s_test)
        manifest["selftest"] = selftest_block(model.runner, x_self)
        written = write_manifest(path, manifest, content)
        load_model(path)  # what the gateway will do: sha256, tensors, self-test
        scored[quant] = Scored(quant, path, thr, s_val, s_test, written)
        log(
            f"[edgeline-train] {quant}: {len(content)} B, threshold {thr:.6g} (from {s_val.size} normal "
            f"validation windows at a false-alarm rate of {opts.far:g})"
        )
    return user_report.write_reports(prep, opts, scored, command=command)
