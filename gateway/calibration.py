"""Per-device calibration: each device's own input normalisation and threshold, learned on the
gateway from its first windows (numpy only, no TensorFlow).

For a pipeline with ``calibrate = { windows = N, false_alarm_rate = F, normalise = true }``,
every device it scores goes through:

  normalise   its first N windows: the running mean and std (float64 sums, std floored at
              1e-6 as the training code does) of the model's input features before any
              normalisation; they replace the manifest's normalisation for this device
              (skipped with normalise = false)
  threshold   its next N windows, scored with the device's normalisation:
              threshold = gateway.thresholds.threshold_for(scores, F)
  calibrated  from the next batch on, the device's windows are scored with its normalisation
              and judged against its threshold

Until then the manifest's normalisation and threshold apply, so a device alerts as before
while it calibrates. A threshold set by an operator (``edgeline-gateway device-config
--threshold``) wins over the calibrated one (gateway/alertstate.py).

State: ``data_dir/calibration/<pipeline>-<model sha256>.json``, written durably at every phase
change and reset, read at start. A model with another sha256 (a promoted update, a new file)
has its own file, so it calibrates afresh, and a rollback finds the old model's calibration
again. A restart resumes each device at the start of its phase: the windows counted within
a phase are not saved. Changed calibrate settings start every device again.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from gateway import features as feat
from gateway.config import CalibrateSection, ConfigError, PipelineSection
from gateway.durable import write_json_durably
from gateway.scoring import score_features
from gateway.thresholds import threshold_for

log = logging.getLogger(__name__)

DIR_NAME = "calibration"
FORMAT = "edgeline-calibration"
STD_FLOOR = 1e-6  # as the training code (tools/train/vibration.py): a constant feature stays finite
NORMALISE, THRESHOLD, CALIBRATED = "normalise", "threshold", "calibrated"
PHASES = (NORMALISE, THRESHOLD, CALIBRATED)

FloatArray = NDArray[np.float32]
# (device, pipeline, threshold or None): where a learned threshold goes (AlertStates.set_calibrated)
ThresholdSink = Callable[[str, str, float | None], None]


def check_model(pipeline: PipelineSection, model: Any, where: str) -> None:
    """ConfigError unless ``model`` can be calibrated as ``pipeline.calibrate`` asks: an anomaly
    model with a manifest's features (and its normalisation, for normalise = true)."""
    c = pipeline.calibrate
    if c is None:
        return
    manifest = getattr(model, "manifest", None)
    spec = getattr(manifest, "features", None)
    if not isinstance(spec, feat.FeatureSpec) or not hasattr(model, "score_features"):
        raise ConfigError(
            f"{where}: pipeline {pipeline.name}'s model has no feature spec in its manifest, so it cannot be "
            "calibrated per device: remove calibrate"
        )
    if getattr(manifest, "task", None) != "anomaly":
        raise ConfigError(
            f"{where}: pipeline {pipeline.name}'s model is a {getattr(manifest, 'task', '?')} model; only anomaly "
            "models (a score against a threshold) are calibrated: remove calibrate"
        )
    if c.normalise and getattr(manifest, "normalisation", None) is None:
        raise ConfigError(
            f"{where}.normalise: pipeline {pipeline.name}'s model takes features without normalisation (its "
            "manifest has none), so a device's own cannot replace it: set normalise = false"
        )


def state_path(data_dir: Path, pipeline: str, sha256: str) -> Path:
    return data_dir / DIR_NAME / f"{pipeline}-{sha256}.json"


@dataclass
class DeviceState:
    """One device's calibration in one pipeline."""

    phase: str
    started: float  # when the device's calibration (its first phase) began
    windows: int = 0  # windows counted in the current phase (not saved: a restart counts again)
    mean: NDArray[np.float64] | None = None  # the device's normalisation, once learned
    std: NDArray[np.float64] | None = None
    threshold: float | None = None
    calibrated_at: float | None = None
    # phase "normalise": float64 sums of (features - shift), shift = the device's first window's
    shift: NDArray[np.float64] | None = None
    s1: NDArray[np.float64] | None = None
    s2: NDArray[np.float64] | None = None
    scores: list[NDArray[np.float64]] = field(default_factory=list)  # phase "threshold"
    # the normalisation as float32 (x - mean) * inv_std, as gateway.inference.Model applies its own
    mean32: FloatArray | None = None
    inv32: FloatArray | None = None

    def set_normalisation(self, mean: NDArray[np.float64], std: NDArray[np.float64]) -> None:
        self.mean, self.std = mean, std
        self.mean32 = mean.astype(np.float32)
        self.inv32 = (1.0 / std).astype(np.float32)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"phase": self.phase, "started": self.started}
        if self.mean is not None and self.std is not None:
            out["normalisation"] = {"mean": self.mean.tolist(), "std": self.std.tolist()}
        if self.threshold is not None:
            out["threshold"] = self.threshold
            out["calibrated_at"] = self.calibrated_at
        return out

    @staticmethod
    def from_json(d: Mapping[str, Any], n_features: int, normalise: bool) -> DeviceState:
        phase = d["phase"]
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}")
        st = DeviceState(phase=str(phase), started=float(d["started"]))
        norm = d.get("normalisation")
        if norm is not None:
            mean = np.asarray(norm["mean"], dtype=np.float64)
            std = np.asarray(norm["std"], dtype=np.float64)
            if mean.shape != (n_features,) or std.shape != (n_features,) or not (std > 0).all():
                raise ValueError(f"normalisation of {mean.shape[0]} features, the model takes {n_features}")
            st.set_normalisation(mean, std)
        elif normalise and phase != NORMALISE:
            raise ValueError(f"phase {phase} without the normalisation learned before it")
        if phase == CALIBRATED:
            st.threshold = float(d["threshold"])
            st.calibrated_at = float(d["calibrated_at"])
        return st


class Calibrator:
    """Per-device calibration of one pipeline's model (processing thread only).

    ``score(windows, runs)`` replaces ``score_windows(model, windows)`` in the scoring stage: it
    computes the features once, learns from them, normalises each device's rows with its own
    normalisation (or the manifest's) and scores them in one model call."""

    def __init__(
        self,
        pipeline: str,
        settings: CalibrateSection,
        model: Any,
        data_dir: Path,
        *,
        sink: ThresholdSink | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.pipeline = pipeline
        self.settings = settings
        self.model = model
        self.clock = clock
        self.sink = sink
        m = model.manifest
        self.spec: feat.FeatureSpec = m.features
        self.sha256: str = m.sha256
        self.model_version: str = str(m.version)
        self.model_threshold: float = float(m.output.threshold)
        self.n_features = int(m.n_features)
        if m.normalisation is not None:  # the manifest's, exactly as gateway.inference.Model applies it
            self._mean32: FloatArray | None = np.asarray(m.normalisation.mean, np.float32)
            self._inv32: FloatArray | None = (1.0 / np.asarray(m.normalisation.std, np.float64)).astype(np.float32)
        else:
            self._mean32 = self._inv32 = None
        self.data_dir = data_dir
        self.path = state_path(data_dir, pipeline, self.sha256)
        self.devices: dict[str, DeviceState] = {}
        self._activate: set[str] = set()  # calibrated in the last batch: threshold from the next one on
        self._load()

    # ------------------------------------------------------------------ state file
    def _settings_json(self) -> dict[str, Any]:
        s = self.settings
        return {"windows": s.windows, "false_alarm_rate": s.false_alarm_rate, "normalise": s.normalise}

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.error("%s cannot be read (%s): pipeline %s calibrates its devices again", self.path, exc, self.pipeline)
            return
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            log.error("%s is not a calibration file: pipeline %s calibrates again", self.path, self.pipeline)
            return
        if data.get("settings") != self._settings_json():
            log.warning(
                "pipeline %s: calibrate settings changed (%s, were %s): every device calibrates again",
                self.pipeline,
                self._settings_json(),
                data.get("settings"),
            )
            return
        for device, d in (data.get("devices") or {}).items():
            try:
                st = DeviceState.from_json(d, self.n_features, self.settings.normalise)
            except (KeyError, TypeError, ValueError) as exc:
                log.error("%s: device %s: %s; it calibrates again", self.path, device, exc)
                continue
            self.devices[str(device)] = st
            if st.phase == CALIBRATED:
                self._activate.add(str(device))
        log.info(
            "pipeline %s: calibration of %d device(s) read from %s (%d calibrated)",
            self.pipeline,
            len(self.devices),
            self.path,
            len(self._activate),
        )

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        m = self.model.manifest
        write_json_durably(
            self.path,
            {
                "format": FORMAT,
                "pipeline": self.pipeline,
                "model": {"name": m.name, "version": self.model_version, "sha256": self.sha256},
                "settings": self._settings_json(),
                "devices": {d: st.to_json() for d, st in sorted(self.devices.items())},
            },
        )

    def activate(self) -> None:
        """Hand the thresholds of devices calibrated since the last call to the sink."""
        if self.sink is not None:
            for device in sorted(self._activate):
                st = self.devices.get(device)
                if st is not None and st.phase == CALIBRATED:
                    self.sink(device, self.pipeline, st.threshold)
        self._activate.clear()

    def for_model(self, model: Any) -> Calibrator | None:
        """The calibrator of another model of this pipeline (a promoted update, a rollback): its
        own state file; this one's thresholds are taken back. None when it cannot be calibrated."""
        self.release()
        try:
            check_model(PipelineSection(self.pipeline, self.path, calibrate=self.settings), model, "calibrate")
        except ConfigError as exc:
            log.error("pipeline %s: the new model is scored without per-device calibration: %s", self.pipeline, exc)
            return None
        return Calibrator(self.pipeline, self.settings, model, self.data_dir, sink=self.sink, clock=self.clock)

    def release(self) -> None:
        """This model is no longer scored (another was swapped in): take back its thresholds."""
        if self.sink is not None:
            for device, st in self.devices.items():
                if st.phase == CALIBRATED:
                    self.sink(device, self.pipeline, None)

    def reset(self, device: str) -> bool:
        """Start one device's calibration again; False when it had none."""
        st = self.devices.pop(device, None)
        self._activate.discard(device)
        if st is None:
            return False
        if st.phase == CALIBRATED and self.sink is not None:
            self.sink(device, self.pipeline, None)
        self.save()
        log.info("pipeline %s: device %s calibrates again (reset)", self.pipeline, device)
        return True

    # ------------------------------------------------------------------ scoring
    def _new_device(self) -> DeviceState:
        phase = NORMALISE if self.settings.normalise else THRESHOLD
        return DeviceState(phase=phase, started=self.clock())

    def score(self, model: Any, windows: FloatArray, runs: Sequence[tuple[str, int]]) -> NDArray[Any]:
        """Scores of ``windows`` (n, window, channels), whose rows belong to devices in runs of
        (device, count); learns from them on the way."""
        self.activate()
        x = feat.compute(windows, self.spec)
        extra: list[FloatArray] = []  # phase "threshold": the rows again, with the device's normalisation
        learning: list[tuple[str, DeviceState, int, int]] = []  # (device, state, first row of its extra, count)
        n_extra = 0
        start = 0
        changed = False
        segments: list[tuple[int, int, FloatArray | None, FloatArray | None]] = []
        for device, count in runs:
            stop = start + count
            st = self.devices.get(device)
            if st is None:
                st = self.devices[device] = self._new_device()
            rows = x[start:stop]
            if st.phase == NORMALISE:
                changed |= self._observe_features(device, st, rows)
            elif st.phase == THRESHOLD:
                if st.mean32 is not None and st.inv32 is not None:
                    own = rows - st.mean32
                    own *= st.inv32
                elif self._mean32 is not None and self._inv32 is not None:
                    own = rows - self._mean32
                    own *= self._inv32
                else:
                    own = rows.copy()
                extra.append(own)
                learning.append((device, st, x.shape[0] + n_extra, count))
                n_extra += count
            if st.phase == CALIBRATED and st.mean32 is not None:
                segments.append((start, stop, st.mean32, st.inv32))
            else:
                segments.append((start, stop, self._mean32, self._inv32))
            start = stop
        for a, b, mean, inv in segments:
            if mean is not None and inv is not None:
                x[a:b] -= mean
                x[a:b] *= inv
        if extra:
            x = np.concatenate([x, *extra])
        scores = score_features(model, x)
        for device, st, at, count in learning:
            changed |= self._observe_scores(device, st, scores[at : at + count])
        if changed:
            self.save()
        return scores[: windows.shape[0]]

    def _observe_features(self, device: str, st: DeviceState, rows: FloatArray) -> bool:
        r = rows.astype(np.float64)
        r = r[np.isfinite(r).all(axis=1)]  # windows with NaN / inf samples teach nothing
        if not r.shape[0]:
            return False
        need = self.settings.windows - st.windows
        r = r[:need]
        if st.shift is None or st.s1 is None or st.s2 is None:
            st.shift = r[0].copy()
            st.s1 = np.zeros(self.n_features)
            st.s2 = np.zeros(self.n_features)
        d = r - st.shift
        st.s1 += d.sum(axis=0)
        st.s2 += (d * d).sum(axis=0)
        st.windows += r.shape[0]
        if st.windows < self.settings.windows:
            return False
        n = st.windows
        m1 = st.s1 / n
        std = np.maximum(np.sqrt(np.maximum(st.s2 / n - m1 * m1, 0.0)), STD_FLOOR)
        st.set_normalisation(st.shift + m1, std)
        st.shift = st.s1 = st.s2 = None
        st.phase, st.windows = THRESHOLD, 0
        log.info("pipeline %s: device %s: input normalisation learned from %d windows", self.pipeline, device, n)
        return True

    def _observe_scores(self, device: str, st: DeviceState, scores: NDArray[Any]) -> bool:
        s = np.asarray(scores, dtype=np.float64)
        s = s[np.isfinite(s)][: self.settings.windows - st.windows]
        if not s.size:
            return False
        st.scores.append(s)
        st.windows += int(s.size)
        if st.windows < self.settings.windows:
            return False
        st.threshold = threshold_for(np.concatenate(st.scores), self.settings.false_alarm_rate)
        st.scores = []
        st.phase, st.calibrated_at = CALIBRATED, self.clock()
        self._activate.add(device)
        log.info(
            "pipeline %s: device %s calibrated: threshold %.6g (the model's %.6g) from %d windows",
            self.pipeline,
            device,
            st.threshold,
            self.model_threshold,
            st.windows,
        )
        return True

    # ------------------------------------------------------------------ status
    def status(self, limit: int | None = None) -> dict[str, Any]:
        """Settings, devices per phase and, up to ``limit`` devices, each one's progress."""
        phases = dict.fromkeys(PHASES, 0)
        for st in self.devices.values():
            phases[st.phase] += 1
        names = sorted(self.devices)
        shown = names if limit is None else names[:limit]
        return {
            **self._settings_json(),
            "model_version": self.model_version,
            "model_sha256": self.sha256,
            "model_threshold": self.model_threshold,
            "file": str(self.path),
            "phases": phases,
            "devices": {d: self.device_status(d) for d in shown},
            "devices_omitted": len(names) - len(shown),
        }

    def device_status(self, device: str) -> dict[str, Any]:
        st = self.devices[device]
        done = st.phase == CALIBRATED
        return {
            "phase": st.phase,
            "windows": self.settings.windows if done else st.windows,
            "needed": self.settings.windows,
            "threshold": st.threshold,
            "model_threshold": self.model_threshold,
            "normalised": st.mean is not None,
            "started": st.started,
            "calibrated_at": st.calibrated_at,
        }


# ---------------------------------------------------------------------- control socket
@dataclass
class _Request:
    body: dict[str, Any]
    done: threading.Event = field(default_factory=threading.Event)
    response: dict[str, Any] = field(default_factory=dict)


ANSWER_S = 10.0


class CalibrationControl:
    """``edgeline-gateway calibration status|reset`` through the control socket: a request is
    taken by the socket thread and answered by the processing thread, which owns the
    calibrators (``serve`` on every turn of its loop)."""

    def __init__(self, calibrators: Callable[[], dict[str, Calibrator]]) -> None:
        self.calibrators = calibrators
        self._requests: queue.SimpleQueue[_Request] = queue.SimpleQueue()

    def handle(self, body: dict[str, Any]) -> dict[str, Any]:
        """Socket thread: queue the request, wait for its answer."""
        req = _Request(body)
        self._requests.put(req)
        if not req.done.wait(ANSWER_S):
            return {"ok": False, "reason": "busy", "message": "the gateway did not answer in time"}
        return req.response

    def serve(self) -> None:
        """Processing thread: answer the requests waiting (cheap when none)."""
        while True:
            try:
                req = self._requests.get_nowait()
            except queue.Empty:
                return
            req.response = self.answer(req.body)
            req.done.set()

    def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        op = body.get("op")
        cals = self.calibrators()
        pipeline = body.get("pipeline")
        device = body.get("device")
        if pipeline is not None and pipeline not in cals:
            have = ", ".join(sorted(cals)) or "none"
            return {
                "ok": False,
                "reason": "unknown_pipeline",
                "message": f"pipeline {pipeline!r} does not calibrate (pipelines with calibrate: {have})",
            }
        chosen = {n: c for n, c in cals.items() if pipeline is None or n == pipeline}
        if op == "calibration.status":
            out = {}
            for name, c in sorted(chosen.items()):
                st = c.status()
                if device is not None:
                    st["devices"] = {d: v for d, v in st["devices"].items() if d == device}
                out[name] = st
            return {"ok": True, "pipelines": out}
        if op == "calibration.reset":
            if not isinstance(device, str) or not device:
                return {"ok": False, "reason": "bad_request", "message": "a device id is needed"}
            reset = [name for name, c in sorted(chosen.items()) if c.reset(device)]
            if not reset:
                return {
                    "ok": False,
                    "reason": "unknown_device",
                    "message": f"device {device} has no calibration in "
                    + (f"pipeline {pipeline}" if pipeline else "any pipeline")
                    + " (`edgeline-gateway calibration status` lists the devices)",
                }
            return {"ok": True, "device": device, "pipelines": reset}
        return {"ok": False, "reason": "bad_request", "message": f"unknown op {op!r}"}
