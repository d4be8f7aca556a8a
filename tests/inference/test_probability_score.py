"""Anomaly models whose score is a probability (``output.score = "probability"``, what
``edgeline-train`` writes in supervised mode): one model output per window, the score itself.

The model is a real .tflite built here with the TFLite flatbuffer schema that LiteRT ships
(FULLY_CONNECTED then LOGISTIC), so the test needs no TensorFlow and knows the exact answer:
P = sigmoid(w . x + b) of the normalised features.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import flatbuffers  # type: ignore[import-untyped]
import numpy as np
import pytest

from gateway import features as feat
from gateway.inference import ManifestMismatch, load_model
from gateway.manifest import ManifestError

schema: Any = pytest.importorskip("ai_edge_litert.schema_py_generated")

SPEC = feat.FeatureSpec(window=32, rate_hz=50.0, features=("rms", "peak"), bands_hz=())
CHANNELS = [{"name": "a", "unit": "g"}, {"name": "b", "unit": "g"}]
N_FEAT = SPEC.n_features(len(CHANNELS))
W = np.array([[1.5, -0.5, 2.0, 0.25]], np.float32)[:, :N_FEAT]
B = np.array([-1.0], np.float32)
MEAN = np.array([0.5, 0.4, 1.0, 0.9])[:N_FEAT]
STD = np.array([0.2, 0.3, 0.5, 0.25])[:N_FEAT]


def _tflite(weights: np.ndarray, bias: np.ndarray) -> bytes:
    """A float32 model: input (-1, F) -> FULLY_CONNECTED(weights, bias) -> LOGISTIC -> (-1, K)."""
    k, f = weights.shape

    def tensor(shape: list[int], buffer: int, name: str) -> Any:
        t = schema.TensorT()
        t.shape, t.shapeSignature = [1 if d == -1 else d for d in shape], shape
        t.type, t.buffer, t.name = schema.TensorType.FLOAT32, buffer, name
        return t

    def op(code: int, inputs: list[int], outputs: list[int]) -> Any:
        o = schema.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = code, inputs, outputs
        return o

    sub = schema.SubGraphT()
    sub.tensors = [
        tensor([-1, f], 0, "features"),
        tensor([k, f], 1, "w"),
        tensor([k], 2, "b"),
        tensor([-1, k], 0, "logit"),
        tensor([-1, k], 0, "p_anomaly"),
    ]
    fc = op(0, [0, 1, 2], [3])
    fc.builtinOptionsType = schema.BuiltinOptions.FullyConnectedOptions
    fc.builtinOptions = schema.FullyConnectedOptionsT()
    sub.operators = [fc, op(1, [3], [4])]
    sub.inputs, sub.outputs = [0], [4]
    codes = []
    for c in (schema.BuiltinOperator.FULLY_CONNECTED, schema.BuiltinOperator.LOGISTIC):
        oc = schema.OperatorCodeT()
        oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = c, c, 1
        codes.append(oc)
    bufs = [schema.BufferT(), schema.BufferT(), schema.BufferT()]
    bufs[1].data = list(weights.astype("<f4").tobytes())
    bufs[2].data = list(bias.astype("<f4").tobytes())
    model = schema.ModelT()
    model.version, model.operatorCodes, model.subgraphs, model.buffers = 3, codes, [sub], bufs
    b = flatbuffers.Builder(1024)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def _write(tmp: Path, content: bytes, *, score: str = "probability", threshold: float = 0.5, **extra: Any) -> Path:
    (tmp / "p.tflite").write_bytes(content)
    m = {
        "format": "edgeline-model",
        "format_version": 1,
        "name": "p",
        "version": "1.0.0",
        "task": "anomaly",
        "model_file": "p.tflite",
        "sha256": hashlib.sha256(content).hexdigest(),
        "quantization": "float32",
        "input": {"channels": CHANNELS, "rate_hz": SPEC.rate_hz, "window": SPEC.window, "hop": 16},
        "features": SPEC.to_dict(),
        "normalisation": {"mean": list(MEAN), "std": list(STD)},
        "output": {"kind": "anomaly_score", "score": score, "threshold": threshold},
        **extra,
    }
    path = tmp / "p.json"
    path.write_text(json.dumps(m))
    return path


def _windows(n: int) -> np.ndarray:
    rng = np.random.default_rng(3)
    scale = np.linspace(0.2, 2.0, n)[:, None, None]
    return (rng.standard_normal((n, SPEC.window, 2)) * scale).astype(np.float32)


def _expected(windows: np.ndarray) -> np.ndarray:
    x = (feat.compute(windows, SPEC).astype(np.float64) - MEAN) / STD
    p: np.ndarray = 1.0 / (1.0 + np.exp(-(x @ W[0].astype(np.float64) + float(B[0]))))
    return p


def test_probability_model_loads_scores_and_decides(tmp_path: Path) -> None:
    content = _tflite(W, B)
    w = _windows(40)
    want = _expected(w)
    st_in = ((feat.compute(w[:3], SPEC) - MEAN) / STD).tolist()
    path = _write(
        tmp_path,
        content,
        threshold=0.7,
        selftest={"inputs": st_in, "outputs": [[float(v)] for v in want[:3]], "atol": 1e-4, "rtol": 1e-4},
    )
    model = load_model(path, channels=[("a", "g"), ("b", "g")], rate_hz=50.0)  # self-test runs too
    scores = model.score(w)
    assert scores.shape == (40,) and scores.dtype == np.float32
    np.testing.assert_allclose(scores, want, atol=1e-5)
    assert ((scores >= 0) & (scores <= 1)).all() and scores.min() < 0.7 < scores.max()
    np.testing.assert_array_equal(model.decide(scores), scores > np.float32(0.7))
    # a window with a NaN sample is not scored: NaN, counted
    bad = w[:2].copy()
    bad[1, 5, 0] = np.nan
    s = model.score(bad)
    assert np.isfinite(s[0]) and np.isnan(s[1]) and model.invalid_windows == 1


def test_probability_needs_one_output(tmp_path: Path) -> None:
    """A probability manifest over a model with two outputs is refused by shape."""
    two = np.concatenate([W, W])
    path = _write(tmp_path, _tflite(two, np.concatenate([B, B])))
    with pytest.raises(ManifestMismatch) as e:
        load_model(path)
    assert e.value.field == "output shape" and e.value.expected == (1,) and e.value.found == (2,)


def test_probability_selftest_rows_are_one_wide(tmp_path: Path) -> None:
    st = {"inputs": [[0.0] * N_FEAT], "outputs": [[0.5] * N_FEAT], "atol": 1e-4, "rtol": 1e-4}
    path = _write(tmp_path, _tflite(W, B), selftest=st)
    with pytest.raises(ManifestError, match=r"selftest.outputs\[0\].row.*must have 1 values"):
        load_model(path)


def test_unknown_score_kind_names_the_choices(tmp_path: Path) -> None:
    path = _write(tmp_path, _tflite(W, B), score="logit")
    with pytest.raises(ManifestError, match="'reconstruction_mse', 'probability'"):
        load_model(path)
