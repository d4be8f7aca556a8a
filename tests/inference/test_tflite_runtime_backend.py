"""The second backend: the committed models through gateway.inference on tflite-runtime 2.14.

Runs tests/inference/tflite_backend_check.py under .venv-tflite/bin/python (tflite-runtime
2.14.0, numpy 1.26; made by tools/setup_tflite_env.sh) and compares its outputs with LiteRT's
in this process. Tolerances: float32 models 1e-5 relative; int8 models: anomaly scores within
10% + 0.01 with identical decisions (most windows score identically; on a few the two
runtimes' int8 kernels round a hidden activation one step apart: up to 4.7% measured) and
class probabilities within 1.5 output quantisation steps.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gateway.inference import load_model
from tests.inference.data import ALL_MANIFESTS, VIBRATION
from tests.support.upy import ROOT

TFLITE_PY = ROOT / ".venv-tflite" / "bin" / "python"
CHECK = ROOT / "tests" / "inference" / "tflite_backend_check.py"


def test_tflite_runtime_backend_matches_litert(
    tmp_path: Path,
    healthy_windows: np.ndarray,
    fault_windows: dict[Any, np.ndarray],
    motion_windows: np.ndarray,
) -> None:
    if not TFLITE_PY.exists():
        pytest.fail(
            f"{TFLITE_PY} is missing: run `bash tools/setup_tflite_env.sh` first "
            "(creates .venv-tflite with tflite-runtime==2.14.0 and numpy==1.26.4)"
        )
    vib = np.concatenate([healthy_windows[:24], fault_windows[("bearing", 0.5)], fault_windows[("noise", 0.1)]])
    inputs = {m.stem: (vib if m in VIBRATION.values() else motion_windows) for m in ALL_MANIFESTS}
    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    in_dir.mkdir()
    out_dir.mkdir()
    for stem, w in inputs.items():
        np.save(in_dir / f"{stem}.npy", w)
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
    assert [f["manifest"] for f in facts] == [m.stem for m in ALL_MANIFESTS]
    for f in facts:
        assert f["backend"] == "tflite-runtime"
        assert f["tflite_runtime"] == "2.14.0"
        assert f["numpy"].startswith("1.")
        assert f["resizes"] == 2  # self-test rows at load + one scoring batch size

    for manifest in ALL_MANIFESTS:
        model = load_model(manifest)  # LiteRT here
        assert model.backend == "litert"
        ours = model.score(inputs[manifest.stem])
        theirs = np.load(out_dir / f"{manifest.stem}.npy")
        assert theirs.shape == ours.shape
        if model.manifest.quantization == "float32":
            np.testing.assert_allclose(theirs, ours, rtol=1e-5, atol=1e-6)
        elif model.task == "anomaly":
            np.testing.assert_allclose(theirs, ours, rtol=0.1, atol=0.01)
            np.testing.assert_array_equal(model.decide(theirs), model.decide(ours))
        else:
            step = model.runner.output_quant[0]
            np.testing.assert_allclose(theirs, ours, rtol=0, atol=1.5 * step)
