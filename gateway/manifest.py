"""Model manifests: the JSON file beside each ``.tflite`` that says how to use it.

A manifest names its model file and pins it by sha256, and states what the model expects
(channels with units, sample rate, window and hop), how features are computed
(:class:`gateway.features.FeatureSpec`), how they are normalised, and what the output means
(anomaly score with a threshold, or class probabilities with labels). Format: docs/models.md.

Errors form one small hierarchy so callers can catch :class:`ModelError`:

``ManifestError``     the manifest itself is unreadable or has a missing / invalid field
``ManifestMismatch``  the manifest disagrees with something real (its model file, the model's
                      tensors, a device's channel schema); ``.field``, ``.expected``, ``.found``
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.errors import GatewayError
from gateway.features import FeatureError, FeatureSpec

FORMAT = "edgeline-model"
FORMAT_VERSION = 1
TASKS = ("anomaly", "classification")
QUANTIZATIONS = ("float32", "int8")
# Anomaly scores: "reconstruction_mse" (autoencoder: output = reconstructed features, score = mean
# squared error) or "probability" (classifier: one output, P(anomalous), which is the score).
SCORES = ("reconstruction_mse", "probability")
RATE_REL_TOL = 1e-3


class ModelError(GatewayError):
    """Any failure to load or use a model; the message says what to do."""


class ManifestError(ModelError):
    """A manifest that cannot be read or has a missing / invalid field."""

    def __init__(self, path: Path | str, field_name: str, problem: str) -> None:
        self.path = str(path)
        self.field = field_name
        self.problem = problem
        super().__init__(f"model manifest {self.path}: field {field_name!r}: {problem}")


class ManifestMismatchError(ModelError):
    """The manifest disagrees with its model file, the model, or a device schema."""

    def __init__(self, field_name: str, expected: object, found: object, *, context: str = "") -> None:
        self.field = field_name
        self.expected = expected
        self.found = found
        where = f"{context}: " if context else ""
        super().__init__(f"{where}{field_name}: expected {expected!r}, found {found!r}")


ManifestMismatch = ManifestMismatchError  # the name the gateway docs use


@dataclass(frozen=True)
class ChannelSpec:
    name: str
    unit: str


@dataclass(frozen=True)
class InputSpec:
    channels: tuple[ChannelSpec, ...]
    rate_hz: float
    window: int
    hop: int

    @property
    def channel_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.channels)


@dataclass(frozen=True)
class Normalisation:
    """Model input = (feature - mean) / std, per feature column."""

    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass(frozen=True)
class OutputSpec:
    kind: str  # "anomaly_score" | "class_probabilities"
    threshold: float | None = None  # anomaly: score > threshold means anomalous
    score: str | None = None  # anomaly: how the score is computed from the model output
    labels: tuple[str, ...] = ()  # classification: one per output column

    def width(self, n_features: int) -> int:
        """Values the model outputs per window."""
        if self.kind == "class_probabilities":
            return len(self.labels)
        return 1 if self.score == "probability" else n_features


@dataclass(frozen=True)
class SelfTest:
    """Known model inputs (normalised features) and the outputs training measured for them.

    Run after loading (``Model.self_test``) to catch a backend that computes something else.
    """

    inputs: tuple[tuple[float, ...], ...]
    outputs: tuple[tuple[float, ...], ...]
    atol: float
    rtol: float


@dataclass(frozen=True)
class Manifest:
    path: Path
    name: str
    version: str
    task: str
    model_file: str
    sha256: str
    quantization: str
    input: InputSpec
    features: FeatureSpec
    normalisation: Normalisation | None
    output: OutputSpec
    metrics: Mapping[str, Any] = field(default_factory=dict)
    tolerance: Mapping[str, Any] = field(default_factory=dict)
    training: Mapping[str, Any] = field(default_factory=dict)
    selftest: SelfTest | None = None

    @property
    def model_path(self) -> Path:
        return self.path.parent / self.model_file

    @property
    def n_features(self) -> int:
        return self.features.n_features(len(self.input.channels))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


class _Reader:
    """Typed field access with errors that name the field."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, name: str, problem: str) -> ManifestError:
        return ManifestError(self.path, name, problem)

    def get(self, d: Mapping[str, Any], key: str, kind: type | tuple[type, ...], prefix: str = "") -> Any:
        name = prefix + key
        if key not in d:
            raise self.fail(name, "missing")
        v = d[key]
        if kind is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if not isinstance(v, kind) or (isinstance(v, bool) and kind is not bool):
            want = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            raise self.fail(name, f"must be {want}, got {type(v).__name__} {v!r}")
        return v

    def obj(self, d: Mapping[str, Any], key: str, prefix: str = "") -> Mapping[str, Any]:
        v: Mapping[str, Any] = self.get(d, key, dict, prefix)
        return v

    def floats(self, d: Mapping[str, Any], key: str, n: int, prefix: str = "") -> tuple[float, ...]:
        v = self.get(d, key, list, prefix)
        if len(v) != n:
            raise self.fail(prefix + key, f"must have {n} values (one per feature), has {len(v)}")
        try:
            out = tuple(float(x) for x in v)
        except (TypeError, ValueError) as exc:
            raise self.fail(prefix + key, f"must be numbers: {exc}") from exc
        if not all(math.isfinite(x) for x in out):
            raise self.fail(prefix + key, "must be finite numbers")
        return out


def parse_manifest(data: Mapping[str, Any], path: Path | str) -> Manifest:
    """Validate a manifest's JSON object (every field checked; errors name the field)."""
    path = Path(path)
    r = _Reader(path)
    if not isinstance(data, Mapping):
        raise r.fail("<root>", "must be a JSON object")
    name, version, task, model_file, sha, quant = _identity(r, data)
    input_spec = _input(r, data)
    feats = _features(r, data, input_spec)
    n_feat = feats.n_features(len(input_spec.channels))
    norm = _normalisation(r, data, n_feat)
    output = _output(r, data, task)
    n_out = output.width(n_feat)
    selftest = _selftest(r, data, n_feat, n_out) if data.get("selftest") is not None else None

    def opt_obj(key: str) -> Mapping[str, Any]:
        return r.obj(data, key) if key in data else {}

    return Manifest(
        path=path,
        name=name,
        version=version,
        task=task,
        model_file=model_file,
        sha256=sha,
        quantization=quant,
        input=input_spec,
        features=feats,
        normalisation=norm,
        output=output,
        metrics=opt_obj("metrics"),
        tolerance=opt_obj("tolerance"),
        training=opt_obj("training"),
        selftest=selftest,
    )


def _identity(r: _Reader, data: Mapping[str, Any]) -> tuple[str, str, str, str, str, str]:
    """(name, version, task, model_file, sha256, quantization), after the format checks."""
    if data.get("format") != FORMAT:
        raise r.fail("format", f"must be {FORMAT!r}, got {data.get('format')!r}")
    fv = r.get(data, "format_version", int)
    if fv != FORMAT_VERSION:
        raise r.fail("format_version", f"this gateway reads version {FORMAT_VERSION}, got {fv}")
    name = r.get(data, "name", str)
    version = r.get(data, "version", str)
    task = r.get(data, "task", str)
    if task not in TASKS:
        raise r.fail("task", f"must be one of {TASKS}, got {task!r}")
    model_file = r.get(data, "model_file", str)
    if "/" in model_file or "\\" in model_file or model_file in ("", ".", ".."):
        raise r.fail("model_file", f"must be a file name beside the manifest, got {model_file!r}")
    sha = r.get(data, "sha256", str).lower()
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise r.fail("sha256", f"must be 64 hex digits, got {sha!r}")
    quant = r.get(data, "quantization", str)
    if quant not in QUANTIZATIONS:
        raise r.fail("quantization", f"must be one of {QUANTIZATIONS}, got {quant!r}")
    return name, version, task, model_file, sha, quant


def _input(r: _Reader, data: Mapping[str, Any]) -> InputSpec:
    inp = r.obj(data, "input")
    chans_raw = r.get(inp, "channels", list, "input.")
    if not chans_raw:
        raise r.fail("input.channels", "must list at least one channel")
    chans = []
    for i, c in enumerate(chans_raw):
        p = f"input.channels[{i}]."
        if not isinstance(c, dict):
            raise r.fail(f"input.channels[{i}]", "must be an object with name and unit")
        chans.append(ChannelSpec(r.get(c, "name", str, p), r.get(c, "unit", str, p)))
    rate = r.get(inp, "rate_hz", float, "input.")
    window = r.get(inp, "window", int, "input.")
    hop = r.get(inp, "hop", int, "input.")
    if not rate > 0:
        raise r.fail("input.rate_hz", f"must be > 0, got {rate}")
    if window < 2 or hop < 1:
        raise r.fail("input.window", f"window must be >= 2 and hop >= 1, got {window}, {hop}")
    return InputSpec(tuple(chans), rate, window, hop)


def _features(r: _Reader, data: Mapping[str, Any], inp: InputSpec) -> FeatureSpec:
    try:
        feats = FeatureSpec.from_dict(r.obj(data, "features"))
    except FeatureError as exc:
        raise r.fail("features", str(exc)) from exc
    if feats.window != inp.window:
        raise r.fail("features.window", f"must equal input.window {inp.window}, got {feats.window}")
    if abs(feats.rate_hz - inp.rate_hz) > RATE_REL_TOL * inp.rate_hz:
        raise r.fail("features.rate_hz", f"must equal input.rate_hz {inp.rate_hz}, got {feats.rate_hz}")
    return feats


def _normalisation(r: _Reader, data: Mapping[str, Any], n_feat: int) -> Normalisation | None:
    if data.get("normalisation") is None:
        return None
    nd = r.obj(data, "normalisation")
    mean = r.floats(nd, "mean", n_feat, "normalisation.")
    std = r.floats(nd, "std", n_feat, "normalisation.")
    if any(s <= 0 for s in std):
        raise r.fail("normalisation.std", "must be > 0 everywhere")
    return Normalisation(mean, std)


def _output(r: _Reader, data: Mapping[str, Any], task: str) -> OutputSpec:
    out = r.obj(data, "output")
    kind = r.get(out, "kind", str, "output.")
    if task == "anomaly":
        if kind != "anomaly_score":
            raise r.fail("output.kind", f"task anomaly needs 'anomaly_score', got {kind!r}")
        thr = r.get(out, "threshold", float, "output.")
        if not math.isfinite(thr):
            raise r.fail("output.threshold", f"must be finite, got {thr}")
        score = r.get(out, "score", str, "output.")
        if score not in SCORES:
            raise r.fail("output.score", f"must be one of {SCORES}, got {score!r}")
        return OutputSpec(kind, threshold=thr, score=score)
    if kind != "class_probabilities":
        raise r.fail("output.kind", f"task classification needs 'class_probabilities', got {kind!r}")
    labels = r.get(out, "labels", list, "output.")
    if len(labels) < 2 or not all(isinstance(x, str) for x in labels):
        raise r.fail("output.labels", "must list at least two label strings")
    return OutputSpec(kind, labels=tuple(labels))


def _selftest(r: _Reader, data: Mapping[str, Any], n_feat: int, n_out: int) -> SelfTest:
    st = r.obj(data, "selftest")
    rows_in = r.get(st, "inputs", list, "selftest.")
    rows_out = r.get(st, "outputs", list, "selftest.")
    if not rows_in or len(rows_in) != len(rows_out):
        raise r.fail("selftest.outputs", "must have one row per input row (at least one)")
    ins = tuple(r.floats({"row": row}, "row", n_feat, f"selftest.inputs[{i}].") for i, row in enumerate(rows_in))
    outs = tuple(r.floats({"row": row}, "row", n_out, f"selftest.outputs[{i}].") for i, row in enumerate(rows_out))
    atol = r.get(st, "atol", float, "selftest.")
    rtol = r.get(st, "rtol", float, "selftest.")
    if not (atol >= 0 and rtol >= 0):
        raise r.fail("selftest.atol", "atol and rtol must be >= 0")
    return SelfTest(ins, outs, atol, rtol)


def load_manifest(path: Path | str) -> Manifest:
    """Read and validate a manifest file (does not open the model; see verify_file)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ManifestError(p, "<file>", f"cannot read: {exc.strerror or exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestError(p, "<file>", f"not valid JSON: {exc}") from exc
    return parse_manifest(data, p)


def verify_file(manifest: Manifest) -> bytes:
    """Read the model file and check it against the manifest's sha256; return its bytes."""
    try:
        content = manifest.model_path.read_bytes()
    except OSError as exc:
        raise ManifestError(
            manifest.path, "model_file", f"cannot read {manifest.model_path}: {exc.strerror or exc}"
        ) from exc
    found = hashlib.sha256(content).hexdigest()
    if found != manifest.sha256:
        raise ManifestMismatchError(
            "sha256",
            manifest.sha256,
            found,
            context=f"model file {manifest.model_path} does not match manifest {manifest.path}",
        )
    return content


def _channel_name_unit(ch: object) -> tuple[str, str | None]:
    if isinstance(ch, str):
        return ch, None
    if isinstance(ch, ChannelSpec):
        return ch.name, ch.unit
    if isinstance(ch, Sequence) and len(ch) >= 1 and isinstance(ch[0], str):
        unit = ch[1] if len(ch) >= 2 and isinstance(ch[1], str) else None
        return ch[0], unit
    name = getattr(ch, "name", None)
    if isinstance(name, str):
        unit = getattr(ch, "unit", None)
        return name, unit if isinstance(unit, str) else None
    raise ModelError(f"cannot read a channel name from {ch!r}; pass names or (name, unit, ...) tuples")


def check_schema(manifest: Manifest, channels: Sequence[object], rate_hz: float, *, device: str = "") -> None:
    """Refuse a device whose channels (count, names, units) or rate differ from the manifest.

    ``channels``: names, or BIRTH channel tuples ``(name, unit, scale, offset, type, rate_hz)``,
    or objects with ``.name`` / ``.unit``. A unit of None (names only) is not compared.
    """
    ctx = f"model {manifest.name} {manifest.version} vs device {device}".rstrip()
    want = manifest.input.channels
    if len(channels) != len(want):
        raise ManifestMismatchError("channels.count", len(want), len(channels), context=ctx)
    for i, (w, ch) in enumerate(zip(want, channels, strict=True)):
        name, unit = _channel_name_unit(ch)
        if name != w.name:
            raise ManifestMismatchError(f"channels[{i}].name", w.name, name, context=ctx)
        if unit is not None and unit != w.unit:
            raise ManifestMismatchError(f"channels[{i}].unit ({w.name})", w.unit, unit, context=ctx)
    rate = float(rate_hz)
    if not abs(rate - manifest.input.rate_hz) <= RATE_REL_TOL * manifest.input.rate_hz:
        raise ManifestMismatchError("rate_hz", manifest.input.rate_hz, rate, context=ctx)
