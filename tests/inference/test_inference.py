"""gateway.inference with the committed models on LiteRT: batching, int8, manifest checks, faults."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gateway import inference
from gateway.inference import ManifestError, ManifestMismatch, ModelError, load_model
from tests.inference.data import ALL_MANIFESTS, MOTIONS, VIBRATION, copy_model, mpu_channels


def windows_for(manifest: Path, healthy: np.ndarray, faults: dict[Any, np.ndarray], motion: np.ndarray) -> np.ndarray:
    if manifest in VIBRATION.values():
        return np.concatenate([healthy[:20], faults[("bearing", 1.0)][:6], faults[("imbalance", 0.1)][:6]])
    return motion


@pytest.mark.parametrize("manifest", ALL_MANIFESTS, ids=lambda p: p.stem)
def test_committed_model_loads_verified_and_passes_self_test(manifest: Path) -> None:
    model = load_model(manifest)
    assert model.backend == "litert"
    assert model.version == "1.0.0"
    assert model.manifest.selftest is not None
    assert model.self_test() <= model.manifest.selftest.atol  # re-run: outputs as recorded at training
    assert model.runner.dynamic_batch


@pytest.mark.parametrize("manifest", ALL_MANIFESTS, ids=lambda p: p.stem)
def test_batched_invoke_equals_one_invoke_per_window(
    manifest: Path,
    healthy_windows: np.ndarray,
    fault_windows: dict[Any, np.ndarray],
    motion_windows: np.ndarray,
) -> None:
    w = windows_for(manifest, healthy_windows, fault_windows, motion_windows)
    model = load_model(manifest)
    batched = model.score(w)
    assert batched.shape[0] == w.shape[0]
    one_by_one = np.concatenate([model.score(w[i : i + 1]) for i in range(w.shape[0])])
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-5, atol=1e-6)

    # And against a bare interpreter, batch 1, no gateway code between features and invoke.
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(model.manifest.model_path), num_threads=1)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    x = model.features(w)
    bare = []
    for row in x:
        if inp["dtype"] == np.int8:
            s, z = inp["quantization"]
            interp.set_tensor(inp["index"], np.clip(np.rint(row[None] / s) + z, -128, 127).astype(np.int8))
        else:
            interp.set_tensor(inp["index"], row[None])
        interp.invoke()
        y = interp.get_tensor(out["index"]).astype(np.float32)
        if out["dtype"] == np.int8:
            s, z = out["quantization"]
            y = (y - z) * s
        bare.append(y[0])
    np.testing.assert_allclose(model.runner.run(x), np.stack(bare), rtol=1e-5, atol=1e-5)


def test_input_resized_once_per_distinct_batch_size(healthy_windows: np.ndarray) -> None:
    model = load_model(VIBRATION["int8"], self_test=False)  # the self-test would resize to its 4 rows
    assert model.runner.resizes == 0
    first = model.score(healthy_windows[:16])
    model.score(healthy_windows[16:32])
    model.score(healthy_windows[:1])  # the batch-1 interpreter made at load
    assert model.runner.resizes == 1
    model.score(healthy_windows[:5])
    again = model.score(healthy_windows[:16])
    assert model.runner.resizes == 2
    np.testing.assert_array_equal(first, again)
    assert model.windows_scored == 16 + 16 + 1 + 5 + 16


def test_batches_above_max_batch_are_split(healthy_windows: np.ndarray) -> None:
    whole = load_model(VIBRATION["float32"]).score(healthy_windows[:50])
    split = load_model(VIBRATION["float32"], max_batch=16).score(healthy_windows[:50])  # 16+16+16+2
    np.testing.assert_allclose(split, whole, rtol=1e-5, atol=1e-6)


def test_empty_batch_gives_empty_scores() -> None:
    model = load_model(VIBRATION["float32"])
    assert model.score(np.zeros((0, 128, 6), np.float32)).shape == (0,)


def test_int8_vibration_scores_agree_with_float32_within_documented_tolerance(
    healthy_windows: np.ndarray, fault_windows: dict[Any, np.ndarray]
) -> None:
    f32 = load_model(VIBRATION["float32"])
    i8 = load_model(VIBRATION["int8"])
    tol = i8.manifest.tolerance
    w = np.concatenate([healthy_windows, *fault_windows.values()])
    a, b = f32.score(w), i8.score(w)
    assert f32.threshold is not None and i8.threshold is not None
    bound = tol["score_abs"] + tol["score_rel"] * a
    assert np.all(np.abs(b - a) <= bound), float(np.max(np.abs(b - a) - bound))
    agreement = np.mean(f32.decide(a) == i8.decide(b))
    assert agreement >= tol["decision_agreement_min"], agreement


def test_int8_basic_motions_agrees_with_float32_on_real_data() -> None:
    f32 = load_model(MOTIONS["float32"])
    i8 = load_model(MOTIONS["int8"])
    assert i8.manifest.selftest is not None
    # The self-test rows are the features of the first TEST-split case of each activity,
    # in label order: both models must recognise them.
    x = np.asarray(i8.manifest.selftest.inputs, np.float32)
    pa, pb = f32.score_features(x), i8.score_features(x)
    np.testing.assert_array_equal(f32.decide(pa), np.arange(4))
    np.testing.assert_array_equal(i8.decide(pb), np.arange(4))
    assert np.max(np.abs(pa - pb)) <= i8.manifest.tolerance["prob_abs"]
    np.testing.assert_allclose(pa.sum(axis=1), 1.0, atol=1e-4)
    np.testing.assert_allclose(pb.sum(axis=1), 1.0, atol=0.02)


@pytest.mark.parametrize("quant", ["float32", "int8"])
def test_bearing_fault_scores_above_threshold_and_healthy_below(
    quant: str, healthy_windows: np.ndarray, fault_windows: dict[Any, np.ndarray]
) -> None:
    model = load_model(VIBRATION[quant], channels=mpu_channels(), rate_hz=100.0)
    healthy = model.score(healthy_windows)
    assert not model.decide(healthy).any(), float(healthy.max())
    for sev in (0.5, 1.0):
        bearing = model.score(fault_windows[("bearing", sev)])
        assert model.decide(bearing).all(), (sev, float(bearing.min()))
    for kind in ("imbalance", "noise"):
        assert model.decide(model.score(fault_windows[(kind, 1.0)])).all(), kind


def test_manifest_sha256_mismatch_is_refused(tmp_path: Path) -> None:
    m = copy_model(VIBRATION["int8"], tmp_path)
    tfl = tmp_path / "vibration_anomaly_int8.tflite"
    data = bytearray(tfl.read_bytes())
    data[len(data) // 2] ^= 0x01
    tfl.write_bytes(bytes(data))
    with pytest.raises(ManifestMismatch) as exc:
        load_model(m)
    assert exc.value.field == "sha256"
    assert exc.value.expected == json.loads(m.read_text())["sha256"]
    assert exc.value.found != exc.value.expected and exc.value.found in str(exc.value)
    assert "does not match manifest" in str(exc.value)


def test_manifest_pointing_at_the_wrong_model_is_refused(tmp_path: Path) -> None:
    m = copy_model(VIBRATION["int8"], tmp_path)
    copy_model(VIBRATION["float32"], tmp_path)
    data = json.loads(m.read_text())
    float_manifest = json.loads(VIBRATION["float32"].read_text())
    data["model_file"] = float_manifest["model_file"]
    data["sha256"] = float_manifest["sha256"]  # hash right, model wrong for this manifest
    m.write_text(json.dumps(data))
    with pytest.raises(ManifestMismatch) as exc:
        load_model(m)
    assert exc.value.field == "quantization"
    assert (exc.value.expected, exc.value.found) == ("int8", "float32")

    data = json.loads(MOTIONS["float32"].read_text())
    data["sha256"] = float_manifest["sha256"]
    data["model_file"] = float_manifest["model_file"]
    (tmp_path / "m.json").write_text(json.dumps(data))
    with pytest.raises(ManifestMismatch, match=r"input shape \(features per window\): expected \(60,\), found \(72,\)"):
        load_model(tmp_path / "m.json")


def test_device_schema_mismatch_is_refused_naming_the_field() -> None:
    model = load_model(VIBRATION["float32"])
    good = mpu_channels()
    model.check_schema(good, 100.0)
    model.check_schema([c[0] for c in good], 100.0)  # names only: units not compared
    cases: list[tuple[list[Any], float, str, object, object]] = [
        (good[:5], 100.0, "channels.count", 6, 5),
        ([*good[:2], ("accel_z", *good[2][1:]), *good[3:]], 100.0, "channels[2].name", "az", "accel_z"),
        ([*good[:3], ("gx", "rad/s", 1.0, 0.0, 1, 100.0), *good[4:]], 100.0, "channels[3].unit (gx)", "deg/s", "rad/s"),
        (good, 50.0, "rate_hz", 100.0, 50.0),
    ]
    for channels, rate, field, expected, found in cases:
        with pytest.raises(ManifestMismatch) as exc:
            model.check_schema(channels, rate, device="pump-7")
        assert (exc.value.field, exc.value.expected, exc.value.found) == (field, expected, found)
        assert "pump-7" in str(exc.value) and field in str(exc.value)
    with pytest.raises(ManifestMismatch, match=r"rate_hz: expected 100\.0, found 200\.0"):
        load_model(VIBRATION["float32"], channels=good, rate_hz=200.0)


def test_windows_of_the_wrong_shape_are_refused() -> None:
    model = load_model(VIBRATION["float32"])
    with pytest.raises(ModelError, match=r"windows must have shape \(n, 128, 6\)"):
        model.score(np.zeros((3, 128, 4), np.float32))
    with pytest.raises(ValueError, match="window length: expected 128 samples, found 64"):
        model.score(np.zeros((3, 64, 6), np.float32))


def _broken(tmp_path: Path, edit: Any) -> Path:
    m = copy_model(VIBRATION["float32"], tmp_path)
    data = json.loads(m.read_text())
    edit(data)
    m.write_text(json.dumps(data))
    return m


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda d: d["output"].pop("threshold"), "output.threshold"),
        (lambda d: d["normalisation"]["std"].pop(), "normalisation.std"),
        (lambda d: d["input"]["channels"][0].pop("unit"), "input.channels[0].unit"),
        (lambda d: d.__setitem__("format_version", 9), "format_version"),
        (lambda d: d.__setitem__("model_file", "../etc/x.tflite"), "model_file"),
        (lambda d: d["features"].__setitem__("window", 64), "features.window"),
        (lambda d: d["selftest"]["outputs"].pop(), "selftest.outputs"),
    ],
)
def test_invalid_manifest_fields_are_named(tmp_path: Path, edit: Any, field: str) -> None:
    with pytest.raises(ManifestError) as exc:
        load_model(_broken(tmp_path, edit))
    assert exc.value.field == field, str(exc.value)
    assert f"field {field!r}" in str(exc.value)


def test_self_test_catches_a_model_that_computes_something_else(tmp_path: Path) -> None:
    def edit(d: dict[str, Any]) -> None:
        d["selftest"]["outputs"][1][3] += 0.5

    with pytest.raises(ModelError, match=r"self-test failed on backend litert: selftest.outputs\[1\]\[3\]"):
        load_model(_broken(tmp_path, edit))


def test_backend_choice_by_argument_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert inference.available_backends()[0] == "litert"
    monkeypatch.setenv(inference.BACKEND_ENV, "onnx")
    with pytest.raises(ModelError, match=r"unknown TFLite backend 'onnx' \(from EDGELINE_TFLITE_BACKEND\)"):
        load_model(VIBRATION["float32"])
    monkeypatch.setenv(inference.BACKEND_ENV, "ai-edge-litert")
    assert load_model(VIBRATION["float32"]).backend == "litert"
    monkeypatch.setenv(inference.BACKEND_ENV, "tflite-runtime")
    if importlib.util.find_spec("tflite_runtime") is None:  # .venv has LiteRT only
        with pytest.raises(ModelError, match="'tflite-runtime' requested but not installed"):
            load_model(VIBRATION["float32"])
    else:
        assert load_model(VIBRATION["float32"]).backend == "tflite-runtime"
    assert load_model(VIBRATION["float32"], backend="litert").backend == "litert"  # argument wins


@pytest.mark.parametrize("manifest", [VIBRATION["int8"], MOTIONS["float32"]], ids=lambda p: p.stem)
def test_windows_with_nan_samples_score_nan_and_are_counted(
    manifest: Path, healthy_windows: np.ndarray, motion_windows: np.ndarray
) -> None:
    model = load_model(manifest)
    w = (healthy_windows if manifest == VIBRATION["int8"] else motion_windows)[:6].copy()
    clean = model.score(w)
    w[2, 17, 3] = np.nan
    w[4, 0, 0] = np.inf
    s = model.score(w)
    bad = np.zeros(6, bool)
    bad[[2, 4]] = True
    assert np.isnan(s[bad]).all()
    np.testing.assert_allclose(s[~bad], clean[~bad], rtol=1e-5, atol=1e-6)  # the others unaffected
    assert model.invalid_windows == 2
    if model.task == "anomaly":
        assert not model.decide(s)[bad].any()  # NaN never raises an alarm by itself
