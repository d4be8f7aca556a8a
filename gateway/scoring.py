"""Scoring stage: one model over one channel group of matching devices.

Holds a StreamWindower per device, feeds it decoded blocks, and scores every
window completed in a batch with one call to the model (features and
inference over many windows at once). The model is pluggable: anything with
``score(windows) -> scores`` and a manifest giving window length, hop,
channels, threshold and version (see ``ModelSpec.of``).
"""

from __future__ import annotations

import bisect
import fnmatch
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from numpy.typing import NDArray

from gateway.windows import StreamWindower, WindowSpec

if TYPE_CHECKING:
    from gateway.calibration import Calibrator

log = logging.getLogger(__name__)


class ModelLike(Protocol):
    def score(self, windows: NDArray[np.float32]) -> NDArray[Any]: ...


class ShadowLike(Protocol):
    """A candidate model scoring beside the current one (gateway/updates/shadow.py)."""

    def observe(self, windows: NDArray[np.float32], current: NDArray[Any], current_threshold: float) -> None: ...

    def status(self) -> dict[str, Any]: ...


def score_windows(model: ModelLike, windows: NDArray[np.float32]) -> NDArray[Any]:
    """model.score, with the batch padded to a power of two when the model splits
    features from inference: a TFLite interpreter is sized per batch size, and a
    handful of sizes keeps them all cached instead of rebuilding one per batch."""
    features = getattr(model, "features", None)
    n = int(windows.shape[0])
    if features is None or getattr(model, "score_features", None) is None or n & (n - 1) == 0:
        return np.asarray(model.score(windows)).reshape(-1)
    return score_features(model, np.asarray(features(windows)))


def score_features(model: Any, x: NDArray[Any]) -> NDArray[Any]:
    """model.score_features of normalised features (n, F), padded to a power of two (as above)."""
    n = int(x.shape[0])
    if n == 0 or n & (n - 1) == 0:
        return np.asarray(model.score_features(x)).reshape(-1)
    size = 1 << (n - 1).bit_length()
    padded = np.zeros((size, *x.shape[1:]), dtype=x.dtype)
    padded[:n] = x
    return np.asarray(model.score_features(padded)).reshape(-1)[:n]


def _get(obj: Any, *names: str) -> Any:
    """First present attribute or key among names (manifests may be objects or dicts)."""
    for name in names:
        if isinstance(obj, Mapping):
            if name in obj:
                return obj[name]
        elif hasattr(obj, name):
            return getattr(obj, name)
    return None


@dataclass(frozen=True)
class ModelSpec:
    window_len: int
    hop: int
    channels: tuple[str, ...]
    threshold: float
    version: str
    rate_hz: float | None = None

    @staticmethod
    def of(model: Any, *, threshold: float | None = None) -> ModelSpec:
        """Read the window geometry, channels, threshold and version from a model's manifest."""
        m = _get(model, "manifest") or {}
        inp = _get(m, "input")
        if inp is not None:  # gateway.manifest.Manifest
            window = _get(inp, "window")
            hop = _get(inp, "hop")
            chans = _get(inp, "channel_names")
            rate = _get(inp, "rate_hz")
            thr = threshold if threshold is not None else _get(_get(m, "output") or {}, "threshold")
        else:  # a plain mapping (tests, other model kinds)
            window = _get(m, "window_len", "window")
            hop = _get(m, "hop")
            chans = _get(m, "channels")
            rate = _get(m, "rate_hz")
            thr = threshold if threshold is not None else _get(m, "threshold")
        version = _get(model, "version") or _get(m, "version") or "unknown"
        missing = [
            n
            for n, v in (("window length", window), ("hop", hop), ("channels", chans), ("threshold", thr))
            if v is None
        ]
        if missing:
            raise ValueError(f"model manifest lacks {', '.join(missing)}")
        assert window is not None and hop is not None and chans is not None and thr is not None
        return ModelSpec(
            window_len=int(window),
            hop=int(hop),
            channels=tuple(str(c) for c in chans),
            threshold=float(thr),
            version=str(version),
            rate_hz=float(rate) if rate is not None else None,
        )


@dataclass
class PendingWindows:
    """Windows completed during one batch, waiting to be scored together."""

    values: list[NDArray[np.float32]] = field(default_factory=list)
    devices: list[str] = field(default_factory=list)
    end_time: list[NDArray[np.float64]] = field(default_factory=list)
    received: list[NDArray[np.float64]] = field(default_factory=list)
    frame: list[NDArray[np.int64]] = field(default_factory=list)
    boot: list[int] = field(default_factory=list)
    historical: list[bool] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Scored:
    pipeline: str
    devices: list[str]
    window_end: NDArray[np.float64]
    received: NDArray[np.float64]
    boot: NDArray[np.int64]
    seq: NDArray[np.int64]
    historical: NDArray[np.bool_]
    scores: NDArray[Any]
    threshold: float
    model_version: str


# Upper bounds of the inference time histogram (seconds per model call; /metrics exports it).
INFERENCE_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass
class ScoringStats:
    windows_scored: int = 0
    calls: int = 0
    seconds: float = 0.0
    unmatched_devices: dict[str, str] = field(default_factory=dict)
    # calls per INFERENCE_BUCKETS_S bucket (not cumulative), the last one over the largest bound
    call_buckets: list[int] = field(default_factory=lambda: [0] * (len(INFERENCE_BUCKETS_S) + 1))

    def observe(self, seconds: float) -> None:
        """One model call (a scored batch) that took ``seconds``."""
        self.calls += 1
        self.seconds += seconds
        self.call_buckets[bisect.bisect_left(INFERENCE_BUCKETS_S, seconds)] += 1


class ScoringStage:
    def __init__(
        self,
        name: str,
        model: ModelLike,
        spec: ModelSpec,
        devices: tuple[str, ...] = ("*",),
        select: tuple[str, ...] | None = None,
    ) -> None:
        """select: the device channels fed to the model, in the model's channel order
        (default: the model's own channel names)."""
        if select is not None and len(select) != len(spec.channels):
            raise ValueError(
                f"pipeline {name}: channels lists {len(select)} device channels, "
                f"the model takes {len(spec.channels)} ({', '.join(spec.channels)})"
            )
        self.name = name
        self.model = model
        self.spec = spec
        self.select = select or spec.channels
        self.device_patterns = devices
        self.window_spec = WindowSpec(spec.window_len, spec.hop)
        self._columns: dict[str, NDArray[np.intp] | None] = {}
        self._windowers: dict[str, StreamWindower] = {}
        self._identity: set[str] = set()
        self._pending = PendingWindows()
        self.stats = ScoringStats()
        # a candidate model in shadow evaluation, and the windows it has yet to score
        self.shadow: ShadowLike | None = None
        self._shadow_input: tuple[NDArray[np.float32], NDArray[Any], float] | None = None
        # per-device normalisation and thresholds ([[pipelines]] calibrate, gateway/calibration.py)
        self.calibration: Calibrator | None = None

    # ------------------------------------------------------------ device matching
    def bind(self, device: str, channels: list[Any] | tuple[Any, ...], rate_hz: float | None) -> bool:
        """(Re)bind a device after its BIRTH; False when the model does not fit it.

        channels: the device's BIRTH channel tuples (name, unit, scale, offset, type, rate_hz).
        The channels in ``select`` are picked out by name, in the model's order, and
        checked against the model under the model's names (units and rate must match).
        """
        self._windowers.pop(device, None)
        if not any(fnmatch.fnmatchcase(device, p) for p in self.device_patterns):
            self._columns[device] = None
            return False
        names = [str(c[0]) for c in channels]
        missing = [c for c in self.select if c not in names]
        reason = ""
        if missing:
            reason = f"device lacks channels {missing}"
        elif rate_hz is None:
            reason = "device channels sample at different rates"
        else:
            cols = [names.index(c) for c in self.select]
            check = getattr(self.model, "check_schema", None)
            if check is not None:
                try:
                    check(
                        [(m, *tuple(channels[i])[1:]) for m, i in zip(self.spec.channels, cols, strict=True)], rate_hz
                    )
                except Exception as exc:  # the model's own mismatch error, whatever its class
                    reason = str(exc)
            elif self.spec.rate_hz and abs(rate_hz - self.spec.rate_hz) > 1e-3 * self.spec.rate_hz:
                reason = f"device samples at {rate_hz:g} Hz, model expects {self.spec.rate_hz:g} Hz"
        if reason:
            if self.stats.unmatched_devices.get(device) != reason:
                log.warning("pipeline %s: device %s not scored: %s", self.name, device, reason)
            self.stats.unmatched_devices[device] = reason
            self._columns[device] = None
            return False
        self.stats.unmatched_devices.pop(device, None)
        cols = [names.index(c) for c in self.select]
        self._columns[device] = np.asarray(cols, dtype=np.intp)
        if cols == list(range(len(names))):
            self._identity.add(device)  # all channels, in order: no column copy
        else:
            self._identity.discard(device)
        return True

    def columns(self, device: str) -> NDArray[np.intp] | None:
        return self._columns.get(device)

    def windower(self, device: str) -> StreamWindower:
        w = self._windowers.get(device)
        if w is None:
            w = self._windowers[device] = StreamWindower(self.window_spec, len(self.spec.channels))
        return w

    # ------------------------------------------------------------ per batch
    def push(
        self,
        device: str,
        values: NDArray[np.float32],
        *,
        boot: int,
        period_s: float,
        dev_time: float,
        wall_time: float,
        received: NDArray[np.float64],
        seqs: NDArray[np.int64],
        historical: bool,
        missing_samples: int = 0,
    ) -> int:
        """Append a block of a device's samples (all its channels); returns windows completed.

        The block is one or more consecutive frames of equal size; received holds
        each frame's receive time and seqs its sequence number, so every window
        carries the frame that completed it (the start of its alert latency).
        """
        cols = self._columns.get(device)
        if cols is None:
            return 0
        sel = values if device in self._identity else values[:, cols]
        win = self.windower(device).push(
            sel,
            boot=boot,
            period_s=period_s,
            dev_time=dev_time,
            wall_time=wall_time,
            missing_samples=missing_samples,
        )
        if win is None:
            return 0
        p = self._pending
        n = len(win)
        p.values.append(win.values)
        p.devices.append(device)
        p.end_time.append(win.end_time)
        per_frame = values.shape[0] // len(received)
        frame_of = np.minimum((win.end_in_block - 1) // per_frame, len(received) - 1)
        p.received.append(received[frame_of])
        p.frame.append(seqs[frame_of])
        p.boot.append(boot)
        p.historical.append(historical)
        p.counts.append(n)
        return n

    def late_frame(self, device: str) -> None:
        if self._columns.get(device) is not None:
            self.windower(device).late_frame()

    def score_pending(self) -> Scored | None:
        """Score every window completed since the last call, in one model call."""
        p = self._pending
        if not p.values:
            return None
        self._pending = PendingWindows()
        windows = p.values[0] if len(p.values) == 1 else np.concatenate(p.values)
        t0 = time.perf_counter()
        if self.calibration is None:
            scores = score_windows(self.model, windows)
        else:  # each device's rows with its own normalisation while it learns them
            scores = self.calibration.score(self.model, windows, list(zip(p.devices, p.counts, strict=True)))
        self.stats.observe(time.perf_counter() - t0)
        if self.shadow is not None:
            self._shadow_input = (windows, scores, self.spec.threshold)
        self.stats.windows_scored += int(scores.shape[0])
        counts = np.asarray(p.counts)
        devices = [d for d, c in zip(p.devices, p.counts, strict=True) for _ in range(c)]
        return Scored(
            pipeline=self.name,
            devices=devices,
            window_end=np.concatenate(p.end_time),
            received=np.concatenate(p.received),
            boot=np.repeat(np.asarray(p.boot, dtype=np.int64), counts),
            seq=np.concatenate(p.frame),
            historical=np.repeat(np.asarray(p.historical, dtype=bool), counts),
            scores=scores,
            threshold=self.spec.threshold,
            model_version=self.spec.version,
        )

    def run_shadow(self) -> None:
        """The candidate scores the windows of the last ``score_pending`` (called once the
        batch's alerts are out, so only the candidate's own inference time is added)."""
        done, self._shadow_input = self._shadow_input, None
        if done is not None and self.shadow is not None:
            self.shadow.observe(*done)

    def swap_model(self, model: ModelLike, spec: ModelSpec) -> None:
        """Score with another model from the next batch on (between batches: nothing pending).
        Its windows, channels and rate must equal the current model's (gateway/updates/models.py
        checks that), so the windowers and device bindings stay as they are."""
        if (spec.window_len, spec.hop, spec.channels) != (self.spec.window_len, self.spec.hop, self.spec.channels):
            raise ValueError(f"pipeline {self.name}: a model with other windows or channels cannot be swapped in")
        self.model = model
        self.spec = spec
        self._shadow_input = None
        if self.calibration is not None:  # another model: its own calibration (a state file per sha256)
            self.calibration = self.calibration.for_model(model)

    def window_stats(self) -> dict[str, dict[str, int]]:
        return {
            d: {
                "samples": w.stats.samples,
                "windows": w.stats.windows,
                "skipped_windows": w.stats.skipped_windows,
                "gaps": w.stats.gaps,
                "late_frames": w.stats.late_frames,
            }
            for d, w in sorted(self._windowers.items())
        }
