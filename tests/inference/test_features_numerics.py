"""gateway.features numerics: the same float32 features on other CPUs' kernels, and against an
extended-precision reference written differently.

* Reference: a direct DFT (no FFT), one window and channel at a time, in np.longdouble (80-bit
  extended on x86-64), each feature rounded to float32 at the end. The float64 pipeline of
  gateway.features gives the same float32 values: measured 0 of ~1.4 million values differing
  (sim, noise, large-offset and sine windows; three specs); the float32 pipeline it replaced
  differed on about a third of them, by up to 82 ulp on the committed vibration spec. The test
  allows 1 ulp on at most 0.01 % of the values (a float64 result at a float32 rounding midpoint).
* Other CPUs, emulated in subprocesses: OpenBLAS honours OPENBLAS_CORETYPE (other gemm kernels
  and blocking) and numpy honours NPY_DISABLE_CPU_FEATURES (its baseline SIMD loops instead of
  the AVX2 / AVX-512 ones). Probes show that the kernels really changed (a float32 matrix
  product and np.log on float32 give other bytes) while the features keep the same bytes.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from gateway import features as feat
from tests.support.upy import ROOT
from tools.train.vibration import FEATURE_SPEC as VIBRATION_SPEC

LINEAR_SPEC = feat.FeatureSpec(
    window=128,
    rate_hz=100.0,
    features=("mean", "rms", "peak", "crest", "kurtosis", "band_energy"),
    bands_hz=((0.0, 3.0), (3.0, 10.0), (10.0, 25.0), (20.0, 50.0)),  # overlapping on purpose
    taper="none",
)
ODD_SPEC = feat.FeatureSpec(
    window=97,  # prime length: another FFT algorithm inside pocketfft
    rate_hz=10.0,
    features=("mean", "rms", "crest", "kurtosis", "band_energy"),
    bands_hz=((0.0, 0.5), (0.5, 1.0), (1.0, 2.0), (2.0, 5.0)),
    taper="hann",
    log_bands=True,
)


def reference(windows: npt.NDArray[np.float32], spec: feat.FeatureSpec) -> npt.NDArray[np.float32]:
    """The features of gateway.features, computed another way in extended precision."""
    ld = np.longdouble
    n = spec.window
    nbins = n // 2 + 1
    pi = np.arccos(ld(-1))
    k = np.arange(n)
    ang = (2 * pi / ld(n)) * (np.outer(k, np.arange(nbins)) % n).astype(ld)  # exact reduction
    cos, sin = np.cos(ang), np.sin(ang)
    taper = 0.5 - 0.5 * np.cos(2 * pi * k.astype(ld) / ld(n)) if spec.taper == "hann" else np.ones(n, ld)
    power_scale = np.where((np.arange(nbins) == 0) | (2 * np.arange(nbins) == n), 1, 2) / (n * n * np.mean(taper**2))
    freqs = np.arange(nbins) * (spec.rate_hz / n)
    rows = []
    for window in windows:
        x = window.astype(np.float32).astype(ld).T  # (channels, n)
        mean = x.sum(axis=1) / n
        xd = x - mean[:, None] if spec.detrend else x
        m2 = (xd * xd).sum(axis=1) / n
        m4 = (xd**4).sum(axis=1) / n
        rms = np.sqrt(m2)
        peak = np.abs(xd).max(axis=1)
        values: dict[str, Any] = {
            "mean": mean,
            "rms": rms,
            "peak": peak,
            "crest": np.array([p / r if r > 0 else 0 for p, r in zip(peak, rms, strict=True)], ld),
            "kurtosis": np.array([a / (b * b) if b * b > 1e-30 else 0 for a, b in zip(m4, m2, strict=True)], ld),
        }
        if spec.bands_hz:
            xw = xd * taper
            power = ((xw @ cos) ** 2 + (xw @ sin) ** 2) * power_scale
            bands = []
            for lo, hi in spec.bands_hz:
                top = hi >= spec.rate_hz / 2 - 1e-9
                inside = (freqs >= lo) & ((freqs <= hi + 1e-9) if top else (freqs < hi))
                bands.append(power[:, inside].sum(axis=1))
            energy = np.stack(bands, axis=1)
            values["band_energy"] = (np.log10(energy + ld(feat.LOG_FLOOR)) if spec.log_bands else energy).ravel()
        rows.append(np.concatenate([values[name] for name in spec.features]).astype(np.float32))
    return np.stack(rows)


def ulp_distance(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> npt.NDArray[np.int64]:
    """How many float32 values lie between a and b (0 = same value; +0 and -0 are one)."""

    def ordered(x: npt.NDArray[np.float32]) -> npt.NDArray[np.int64]:
        i = np.ascontiguousarray(x, np.float32).view(np.int32).astype(np.int64)
        return np.where(i < 0, -(i & 0x7FFFFFFF), i)

    dist: npt.NDArray[np.int64] = np.abs(ordered(a) - ordered(b))
    return dist


@pytest.fixture(scope="module")
def test_windows(healthy_windows: np.ndarray, fault_windows: dict[Any, np.ndarray]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(17)
    t = np.arange(128) / 100.0
    return {
        "sim": np.concatenate(
            [healthy_windows[:48], fault_windows[("bearing", 1.0)][:12], fault_windows[("noise", 0.1)][:12]]
        ),
        "noise": rng.normal(0, 1, (24, 128, 6)).astype(np.float32),
        # a large offset and a tiny signal: the float32 pipeline lost most digits here
        "offset": (1000 + rng.normal(0, 1e-2, (24, 128, 6))).astype(np.float32),
        "sine": (5 * np.sin(2 * np.pi * 7.0 * t)[None, :, None] + rng.normal(0, 1e-4, (24, 128, 6))).astype(np.float32),
    }


@pytest.mark.parametrize("spec", [VIBRATION_SPEC, LINEAR_SPEC, ODD_SPEC], ids=["vibration", "linear", "odd97"])
def test_features_equal_an_extended_precision_reference(
    spec: feat.FeatureSpec, test_windows: dict[str, np.ndarray]
) -> None:
    total = differ = 0
    for name, windows in test_windows.items():
        w = np.ascontiguousarray(windows[:, : spec.window])
        ours, ref = feat.compute(w, spec), reference(w, spec)
        dist = ulp_distance(ours, ref)
        bad = np.argwhere(dist > 1)
        assert bad.size == 0, (
            f"{name}: window {bad[0][0]} feature {bad[0][1]}: {ours[tuple(bad[0])]!r} vs reference "
            f"{ref[tuple(bad[0])]!r} ({int(dist.max())} ulp)"
        )
        total += dist.size
        differ += int(np.count_nonzero(dist))
    assert differ <= total * 1e-4, f"{differ} of {total} values 1 ulp from the reference"


# Subprocess: features and two probes (OpenBLAS sgemm, numpy's float32 log) under one environment.
_CHILD = r"""
import hashlib, json, sys
sys.path.insert(0, sys.argv[1])
import numpy as np
from gateway import features as feat
w = np.load(sys.argv[2])
out = {}
for i, d in enumerate(json.loads(sys.argv[3])):
    out[f"features{i}"] = hashlib.sha256(feat.compute(w, feat.FeatureSpec.from_dict(d)).tobytes()).hexdigest()
x = np.ascontiguousarray(w.transpose(0, 2, 1)).reshape(-1, w.shape[1])
m = np.random.default_rng(0).normal(size=(w.shape[1], 130)).astype(np.float32)
out["blas_probe"] = hashlib.sha256((x @ m).tobytes()).hexdigest()
out["numpy_probe"] = hashlib.sha256(np.log(np.abs(x) + np.float32(1e-3)).tobytes()).hexdigest()
print(json.dumps(out))
"""


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _emulated_cpus() -> dict[str, dict[str, str]]:
    """Environments that make this machine compute like other x86-64 CPUs (what it can run)."""
    flags = _cpu_flags()
    envs: dict[str, dict[str, str]] = {"native": {}}
    coretypes = [("Core2", {"ssse3"}), ("Nehalem", {"sse4_2"}), ("Sandybridge", {"avx"}), ("Haswell", {"avx2", "fma"})]
    coretypes.append(("SkylakeX", {"avx512f", "avx512bw", "avx512dq", "avx512vl"}))
    for name, needs in coretypes:
        if needs <= flags:
            envs[f"OpenBLAS {name}"] = {"OPENBLAS_CORETYPE": name}
    umath = importlib.import_module("numpy._core._multiarray_umath")
    dispatched = [f for f in umath.__cpu_dispatch__ if umath.__cpu_features__.get(f)]
    if dispatched:
        envs["numpy baseline SIMD"] = {"NPY_DISABLE_CPU_FEATURES": " ".join(dispatched)}
        envs["Core2 + numpy baseline"] = {**envs["numpy baseline SIMD"], "OPENBLAS_CORETYPE": "Core2"}
    return envs


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="emulates x86-64 CPU kernels")
def test_features_keep_their_bytes_under_other_cpus_kernels(
    tmp_path: Path, test_windows: dict[str, np.ndarray]
) -> None:
    w = np.concatenate([test_windows["sim"], test_windows["offset"]])
    np.save(tmp_path / "w.npy", w)
    specs = [VIBRATION_SPEC.to_dict(), LINEAR_SPEC.to_dict()]
    runs: dict[str, dict[str, str]] = {}
    for label, extra in _emulated_cpus().items():
        env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "NPY_DISABLE_CPU_FEATURES")}
        env.update(OPENBLAS_NUM_THREADS="1", **extra)
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, str(ROOT), str(tmp_path / "w.npy"), json.dumps(specs)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, f"{label}: {proc.stderr}"
        runs[label] = json.loads(proc.stdout.strip().splitlines()[-1])
    here = {
        f"features{i}": hashlib.sha256(feat.compute(w, s).tobytes()).hexdigest()
        for i, s in enumerate((VIBRATION_SPEC, LINEAR_SPEC))
    }
    for label, r in runs.items():
        assert {k: r[k] for k in here} == here, f"features differ under {label}"
    # The emulation is real: other gemm kernels and other numpy loops give other float32 bytes.
    blas = {
        label: r["blas_probe"]
        for label, r in runs.items()
        if "OPENBLAS_CORETYPE" in _emulated_cpus()[label] or label == "native"
    }
    if len(blas) > 2:
        assert len(set(blas.values())) > 1, f"OPENBLAS_CORETYPE changed nothing: {sorted(blas)}"
    if "numpy baseline SIMD" in runs:
        assert runs["numpy baseline SIMD"]["numpy_probe"] != runs["native"]["numpy_probe"]
