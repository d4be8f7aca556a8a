"""Inference stage: windows -> features -> TFLite model -> anomaly scores / class probabilities.

Backends (the same ``Interpreter`` API): LiteRT (``ai_edge_litert``, preferred), the legacy
``tflite_runtime`` (older Raspberry Pi OS images), or TensorFlow's own ``tf.lite`` (training
machines only). ``EDGELINE_TFLITE_BACKEND`` = ``litert`` | ``tflite-runtime`` | ``tensorflow``
forces one; otherwise the first installed in that order is used.

Many windows go through one ``invoke()``: the input tensor is resized to the batch size once
per distinct size (a small LRU of interpreters, one per size), and batches above
``max_batch`` are split. For int8 models the input is quantised and the output dequantised
with the scale / zero point from the tensor details. Before a model is used its file is
checked against the manifest's sha256 and its tensors against the manifest's shapes; a
device is checked against the manifest's channels and rate with :meth:`Model.check_schema`.

    model = load_model("models/vibration_anomaly_int8.json")
    model.check_schema(birth_channels, rate_hz)        # ManifestMismatch names the field
    scores = model.score(windows)                      # (n,) for anomaly models
    alarms = model.decide(scores)                      # scores > manifest threshold

Over 400 lines on purpose: the three backends, the interpreter cache and the checks of a
model against its manifest share the one interpreter wrapper; the features are apart
(gateway/features.py).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gateway import features as feat
from gateway.manifest import (
    Manifest,
    ManifestError,
    ManifestMismatch,
    ManifestMismatchError,
    ModelError,
    check_schema,
    load_manifest,
    verify_file,
)

__all__ = [
    "BACKENDS",
    "BACKEND_ENV",
    "Manifest",
    "ManifestError",
    "ManifestMismatch",
    "ManifestMismatchError",
    "Model",
    "ModelError",
    "Runner",
    "available_backends",
    "load_model",
    "resolve_backend",
]

BACKEND_ENV = "EDGELINE_TFLITE_BACKEND"
# name -> (module, attribute); preference order.
BACKENDS: dict[str, tuple[str, str]] = {
    "litert": ("ai_edge_litert.interpreter", "Interpreter"),
    "tflite-runtime": ("tflite_runtime.interpreter", "Interpreter"),
    "tensorflow": ("tensorflow", "lite.Interpreter"),
}
_ALIASES = {
    "ai-edge-litert": "litert",
    "ai_edge_litert": "litert",
    "tflite_runtime": "tflite-runtime",
    "tflite": "tflite-runtime",
    "tf": "tensorflow",
}

FloatArray = npt.NDArray[np.float32]
_interpreter_classes: dict[str, Any] = {}


def _import_backend(name: str) -> Any:
    cls = _interpreter_classes.get(name)
    if cls is None:
        module, attr = BACKENDS[name]
        cls = importlib.import_module(module)
        try:
            for part in attr.split("."):
                cls = getattr(cls, part)
        except AttributeError as exc:
            raise ImportError(f"{module} has no {attr}") from exc
        _interpreter_classes[name] = cls
    return cls


def available_backends() -> list[str]:
    """Installed backends, in preference order."""
    found = []
    for name in BACKENDS:
        try:
            if name == "tensorflow":
                # Importing TensorFlow costs seconds: only look for it, load on use.
                if importlib.util.find_spec("tensorflow") is None:
                    continue
            else:
                _import_backend(name)
        except ImportError:
            continue
        found.append(name)
    return found


def resolve_backend(backend: str | None = None) -> str:
    """Explicit name > $EDGELINE_TFLITE_BACKEND > first installed of BACKENDS."""
    requested = backend or os.environ.get(BACKEND_ENV, "").strip() or None
    if requested is not None:
        name = _ALIASES.get(requested.lower(), requested.lower())
        if name not in BACKENDS:
            raise ModelError(
                f"unknown TFLite backend {requested!r} (from "
                f"{'argument' if backend else BACKEND_ENV}); use one of {', '.join(BACKENDS)}"
            )
        try:
            _import_backend(name)
        except ImportError as exc:
            raise ModelError(
                f"TFLite backend {name!r} requested but not installed ({exc}); "
                f"install {'ai-edge-litert' if name == 'litert' else name} or unset {BACKEND_ENV}"
            ) from exc
        return name
    for name in ("litert", "tflite-runtime", "tensorflow"):
        try:
            _import_backend(name)
        except ImportError:
            continue
        return name
    raise ModelError("no TFLite interpreter installed: pip install ai-edge-litert (or tflite-runtime)")


class Runner:
    """One .tflite model behind batched, quantisation-aware ``run()``.

    The first input and first output tensor are used. Input ``x`` has shape
    ``(n, *per_sample_shape)`` in float; the result is float32 ``(n, *output_shape)``.
    """

    def __init__(
        self,
        content: bytes,
        *,
        backend: str | None = None,
        num_threads: int | None = 1,
        max_batch: int = 1024,
        cached_sizes: int = 16,
    ) -> None:
        if max_batch < 1 or cached_sizes < 1:
            raise ValueError("max_batch and cached_sizes must be >= 1")
        self.backend = resolve_backend(backend)
        self._cls = _import_backend(self.backend)
        self._content = content
        self._num_threads = num_threads
        self.max_batch = max_batch
        self._cached_sizes = cached_sizes
        self._interps: OrderedDict[int, tuple[Any, int, int]] = OrderedDict()
        self.resizes = 0  # how many interpreters were built for a new batch size

        probe = self._new_interpreter()
        probe.allocate_tensors()
        inp = probe.get_input_details()[0]
        out = probe.get_output_details()[0]
        sig = inp.get("shape_signature", inp["shape"])
        self.input_shape: tuple[int, ...] = tuple(int(d) for d in inp["shape"][1:])
        self.output_shape: tuple[int, ...] = tuple(int(d) for d in out["shape"][1:])
        self.dynamic_batch = int(sig[0]) == -1
        self.input_dtype = np.dtype(inp["dtype"])
        self.output_dtype = np.dtype(out["dtype"])
        self.input_quant: tuple[float, int] = (float(inp["quantization"][0]), int(inp["quantization"][1]))
        self.output_quant: tuple[float, int] = (float(out["quantization"][0]), int(out["quantization"][1]))
        self._in_q = self.input_dtype in (np.dtype(np.int8), np.dtype(np.uint8))
        self._out_q = self.output_dtype in (np.dtype(np.int8), np.dtype(np.uint8))
        if self._in_q:
            if self.input_quant[0] <= 0:
                raise ModelError("quantised model input has no scale in its tensor details")
            info = np.iinfo(self.input_dtype)
            self._in_lo, self._in_hi = float(info.min), float(info.max)
            self._in_inv_scale = np.float32(1.0 / self.input_quant[0])
            self._in_zp = np.float32(self.input_quant[1])
        if self._out_q and self.output_quant[0] <= 0:
            raise ModelError("quantised model output has no scale in its tensor details")
        self._out_scale = np.float32(self.output_quant[0])
        self._out_zp = np.float32(self.output_quant[1])
        batch0 = int(inp["shape"][0])
        self._interps[batch0] = (probe, int(inp["index"]), int(out["index"]))
        self._resizable = True

    def _new_interpreter(self) -> Any:
        kwargs: dict[str, Any] = {"model_content": self._content}
        if self._num_threads is not None:
            kwargs["num_threads"] = self._num_threads
        try:
            return self._cls(**kwargs)
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{self.backend} cannot load the model: {exc}") from exc

    def _interpreter(self, n: int) -> tuple[Any, int, int]:
        entry = self._interps.get(n)
        if entry is not None:
            self._interps.move_to_end(n)
            return entry
        interp = self._new_interpreter()
        inp = interp.get_input_details()[0]
        interp.resize_tensor_input(inp["index"], [n, *self.input_shape], strict=False)
        interp.allocate_tensors()
        entry = (interp, int(inp["index"]), int(interp.get_output_details()[0]["index"]))
        self.resizes += 1
        self._interps[n] = entry
        if len(self._interps) > self._cached_sizes:
            self._interps.popitem(last=False)
        return entry

    def _quantise(self, x: FloatArray) -> npt.NDArray[Any]:
        buf = x * self._in_inv_scale
        np.rint(buf, out=buf)
        buf += self._in_zp
        np.clip(buf, self._in_lo, self._in_hi, out=buf)
        return buf.astype(self.input_dtype)

    def _invoke(self, x: FloatArray) -> FloatArray:
        n = x.shape[0]
        interp, i_in, i_out = self._interpreter(n)
        interp.set_tensor(i_in, self._quantise(x) if self._in_q else x)
        interp.invoke()
        y = interp.get_tensor(i_out)
        if self._out_q:
            r: FloatArray = y.astype(np.float32)
            r -= self._out_zp
            r *= self._out_scale
            return r
        out: FloatArray = y if y.dtype == np.float32 else y.astype(np.float32)
        return out

    def run(self, x: npt.ArrayLike) -> FloatArray:
        a = np.ascontiguousarray(x, dtype=np.float32)
        if a.shape[1:] != self.input_shape:
            raise ModelError(f"model input: expected per-sample shape {self.input_shape}, got {a.shape[1:]}")
        n = a.shape[0]
        if n == 0:
            return np.zeros((0, *self.output_shape), dtype=np.float32)
        if self._resizable:
            try:
                if n <= self.max_batch:
                    return self._invoke(a)
                parts = [self._invoke(a[i : i + self.max_batch]) for i in range(0, n, self.max_batch)]
                return np.concatenate(parts, axis=0)
            except (RuntimeError, ValueError):
                if self.dynamic_batch:
                    raise
                # A fixed-batch model that cannot be resized: fall back to its own batch size.
                self._resizable = False
        size = next(iter(self._interps))
        return np.concatenate([self._invoke_padded(a[i : i + size], size) for i in range(0, n, size)], axis=0)

    def _invoke_padded(self, chunk: FloatArray, size: int) -> FloatArray:
        k = chunk.shape[0]
        if k < size:
            chunk = np.concatenate([chunk, np.zeros((size - k, *self.input_shape), np.float32)])
        return self._invoke(chunk)[:k]


class Model:
    """A verified model plus its manifest: features, normalisation, invoke, output meaning."""

    def __init__(self, manifest: Manifest, runner: Runner) -> None:
        self.manifest = manifest
        self.runner = runner
        m = manifest
        ctx = f"model {m.model_path.name} vs manifest {m.path}"
        n_feat = m.n_features
        if runner.input_shape != (n_feat,):
            raise ManifestMismatchError("input shape (features per window)", (n_feat,), runner.input_shape, context=ctx)
        want_out = (m.output.width(n_feat),)
        if runner.output_shape != want_out:
            raise ManifestMismatchError("output shape", want_out, runner.output_shape, context=ctx)
        quantised = runner.input_dtype == np.dtype(np.int8)
        if quantised != (m.quantization == "int8"):
            raise ManifestMismatchError("quantization", m.quantization, str(runner.input_dtype), context=ctx)
        if m.normalisation is not None:
            self._mean: FloatArray | None = np.asarray(m.normalisation.mean, np.float32)
            self._inv_std: FloatArray | None = (1.0 / np.asarray(m.normalisation.std, np.float64)).astype(np.float32)
        else:
            self._mean = self._inv_std = None
        self._threshold = m.output.threshold
        self.windows_scored = 0
        self.invalid_windows = 0  # windows with NaN / inf samples, scored NaN

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def backend(self) -> str:
        return self.runner.backend

    @property
    def task(self) -> str:
        return self.manifest.task

    @property
    def threshold(self) -> float | None:
        return self._threshold

    @property
    def labels(self) -> tuple[str, ...]:
        return self.manifest.output.labels

    def check_schema(self, channels: Sequence[object], rate_hz: float, *, device: str = "") -> None:
        """Raise ManifestMismatch unless the device's channels and rate match the manifest."""
        check_schema(self.manifest, channels, rate_hz, device=device)

    def self_test(self) -> float:
        """Run the manifest's self-test vectors; raise ModelError on a mismatch.

        Returns the largest absolute deviation found (0.0 when the manifest has no self-test).
        """
        st = self.manifest.selftest
        if st is None:
            return 0.0
        got = self.runner.run(np.asarray(st.inputs, dtype=np.float32))
        want = np.asarray(st.outputs, dtype=np.float32)
        dev = np.abs(got - want)
        bad = dev > st.atol + st.rtol * np.abs(want)
        if bad.any():
            row, col = (int(v) for v in np.argwhere(bad)[0])
            raise ModelError(
                f"{self.name} {self.version}: self-test failed on backend {self.backend}: "
                f"selftest.outputs[{row}][{col}] expected {want[row, col]:.6g}, got {got[row, col]:.6g} "
                f"(atol {st.atol:g}, rtol {st.rtol:g}); {int(bad.sum())} of {bad.size} values off"
            )
        return float(dev.max())

    def features(self, windows: npt.ArrayLike) -> FloatArray:
        """Normalised model inputs for (n, window, channels) windows."""
        w = np.asarray(windows)
        nch = len(self.manifest.input.channels)
        if w.ndim != 3 or w.shape[2] != nch:
            raise ModelError(
                f"{self.name}: windows must have shape (n, {self.manifest.input.window}, {nch}), got {w.shape}"
            )
        x = feat.compute(w, self.manifest.features)
        if self._mean is not None and self._inv_std is not None:
            x -= self._mean
            x *= self._inv_std
        return x

    def score_features(self, x: npt.ArrayLike) -> FloatArray:
        """Scores from normalised features: (n,) anomaly scores or (n, classes) probabilities.

        A window with non-finite features (NaN / inf in its samples) is not fed to the model:
        its score (or every probability) is NaN and it is counted in ``invalid_windows``.
        """
        xf = np.ascontiguousarray(x, dtype=np.float32)
        finite = np.isfinite(xf).all(axis=1) if xf.ndim == 2 else None
        bad = None
        if finite is not None and not finite.all():
            bad = ~finite
            xf = xf.copy()
            xf[bad] = 0.0
            self.invalid_windows += int(bad.sum())
        y = self.runner.run(xf)
        self.windows_scored += xf.shape[0]
        if self.manifest.output.score == "probability":
            p: FloatArray = np.ascontiguousarray(y[:, 0])
            if bad is not None:
                p[bad] = np.nan
            return p
        if self.manifest.task == "anomaly":
            d = xf - y
            d *= d
            scores: FloatArray = d.mean(axis=1, dtype=np.float32)
            if bad is not None:
                scores[bad] = np.nan
            return scores
        if bad is not None:
            y[bad] = np.nan
        return y

    def score(self, windows: npt.ArrayLike) -> FloatArray:
        """Windows (n, window, channels) in physical units -> scores or probabilities."""
        return self.score_features(self.features(windows))

    def decide(self, scores: npt.ArrayLike) -> npt.NDArray[Any]:
        """Anomaly models: bool mask score > threshold. Classifiers: label index per window."""
        s = np.asarray(scores)
        if self.manifest.task == "anomaly":
            mask: npt.NDArray[np.bool_] = s > np.float32(self._threshold)
            return mask
        idx: npt.NDArray[np.intp] = np.argmax(s, axis=1)
        return idx


def load_model(
    manifest_path: Path | str,
    *,
    backend: str | None = None,
    channels: Sequence[object] | None = None,
    rate_hz: float | None = None,
    num_threads: int | None = 1,
    max_batch: int = 1024,
    self_test: bool = True,
) -> Model:
    """Load a manifest, verify its model file (sha256), tensors and self-test; optionally a device schema."""
    manifest = load_manifest(manifest_path)
    content = verify_file(manifest)
    runner = Runner(content, backend=backend, num_threads=num_threads, max_batch=max_batch)
    model = Model(manifest, runner)
    if self_test:
        model.self_test()
    if channels is not None:
        if rate_hz is None:
            raise ModelError("load_model: pass rate_hz together with channels")
        model.check_schema(channels, rate_hz)
    return model
