"""gateway.features on signals whose features are known in closed form."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from gateway import features as feat

RATE = 100.0
N = 128
BIN_HZ = RATE / N  # 0.78125 Hz


def sine(freq_hz: float, amp: float, n: int = N, rate: float = RATE, phase: float = 0.3) -> np.ndarray:
    t = np.arange(n) / rate
    return (amp * np.sin(2 * np.pi * freq_hz * t + phase)).astype(np.float32)


def spec(**kw: object) -> feat.FeatureSpec:
    base: dict[str, object] = {
        "window": N,
        "rate_hz": RATE,
        "features": ("mean", "rms", "peak", "crest", "kurtosis"),
        "bands_hz": (),
    }
    base.update(kw)
    return feat.FeatureSpec(**base)  # type: ignore[arg-type]


def test_sine_rms_peak_crest_kurtosis() -> None:
    a = 0.7
    f = 16 * BIN_HZ  # whole number of cycles in the window
    # Phase pi/2: the sampled sine hits its crest exactly (8 samples per cycle).
    w = np.stack([sine(f, a, phase=np.pi / 2), sine(f, 2 * a, phase=np.pi / 2) + 1.0], axis=1)[None]
    x = feat.compute(w, spec())
    mean, rms, peak, crest, kurt = x[0].reshape(5, 2)
    np.testing.assert_allclose(mean, [0.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(rms, [a / math.sqrt(2), 2 * a / math.sqrt(2)], rtol=1e-5)  # A / sqrt 2, DC removed
    np.testing.assert_allclose(peak, [a, 2 * a], rtol=1e-5)
    np.testing.assert_allclose(crest, [math.sqrt(2)] * 2, rtol=1e-5)
    np.testing.assert_allclose(kurt, [1.5, 1.5], rtol=1e-4)  # sine: 3/2


def test_gaussian_noise_kurtosis_near_three_and_impulses_above() -> None:
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 1, size=(200, N, 1)).astype(np.float32)
    k = feat.compute(noise, spec(features=("kurtosis",)))[:, 0]
    assert 2.8 < float(k.mean()) < 3.2
    spiky = noise.copy()
    spiky[:, ::32, 0] += 8.0  # impulses: a bearing-like signature
    k2 = feat.compute(spiky, spec(features=("kurtosis", "crest")))
    assert float(k2[:, 0].mean()) > 2 * float(k.mean())


def test_flat_window_gives_zero_crest_and_kurtosis_not_nan() -> None:
    w = np.full((3, N, 2), 0.25, dtype=np.float32)
    x = feat.compute(w, spec())
    assert np.all(np.isfinite(x))
    np.testing.assert_array_equal(x[:, 2:], 0.0)  # rms, peak, crest, kurtosis of a flat window


def test_band_energy_lands_in_the_right_band() -> None:
    bands = ((0.0, 10.0), (10.0, 20.0), (20.0, 30.0), (30.0, 50.0))
    s = spec(features=("band_energy",), bands_hz=bands, taper="none")
    a = 0.5
    w = np.stack([sine(32 * BIN_HZ, a), sine(13 * BIN_HZ, a), sine(45 * BIN_HZ, a)], axis=1)[None]
    e = feat.compute(w, s)[0].reshape(3, 4)  # channel-major: ch0 bands, ch1 bands, ch2 bands
    # 32 bins = 25 Hz -> band 2; 13 bins = 10.16 Hz -> band 1; 45 bins = 35.2 Hz -> band 3.
    for ch, band in enumerate((2, 1, 3)):
        np.testing.assert_allclose(e[ch, band], a * a / 2, rtol=1e-4)  # sine power A^2/2
        others = np.delete(e[ch], band)
        assert float(others.max()) < 1e-8


def test_band_energies_add_up_to_mean_square_parseval() -> None:
    rng = np.random.default_rng(1)
    w = rng.normal(0, 0.3, size=(50, N, 3)).astype(np.float32)
    edges = np.linspace(0, RATE / 2, 9)
    bands = tuple((float(lo), float(hi)) for lo, hi in itertools.pairwise(edges))
    e = feat.compute(w, spec(features=("band_energy",), bands_hz=bands, taper="none"))
    ms = feat.compute(w, spec(features=("rms",)))[:, :] ** 2
    np.testing.assert_allclose(e.reshape(50, 3, 8).sum(axis=2), ms, rtol=1e-4)
    # Hann: energy preserved on average over many windows.
    eh = feat.compute(w, spec(features=("band_energy",), bands_hz=bands, taper="hann"))
    ratio = eh.reshape(50, 3, 8).sum(axis=2).mean() / ms.mean()
    assert 0.9 < float(ratio) < 1.1


def test_log_bands_and_feature_names_order() -> None:
    s = spec(features=("rms", "band_energy"), bands_hz=((0.0, 25.0), (25.0, 50.0)), log_bands=True)
    names = feat.feature_names(s, ["ax", "ay"])
    assert names == [
        "rms:ax",
        "rms:ay",
        "band_energy:ax:0-25Hz",
        "band_energy:ax:25-50Hz",
        "band_energy:ay:0-25Hz",
        "band_energy:ay:25-50Hz",
    ]
    w = np.stack([sine(10 * BIN_HZ, 1.0), np.zeros(N, np.float32)], axis=1)[None]
    x = feat.compute(w, s)[0]
    assert x.shape == (len(names),) == (s.n_features(2),)
    np.testing.assert_allclose(x[2], math.log10(0.5 + feat.LOG_FLOOR), rtol=1e-4)
    np.testing.assert_allclose(x[4:], math.log10(feat.LOG_FLOOR), rtol=1e-4)  # silent channel at the floor


def test_raw_feature_is_the_flattened_window() -> None:
    w = np.arange(2 * N * 3, dtype=np.float32).reshape(2, N, 3)
    x = feat.compute(w, spec(features=("raw",)))
    np.testing.assert_array_equal(x, w.reshape(2, N * 3))


def test_vectorised_equals_one_window_at_a_time() -> None:
    rng = np.random.default_rng(2)
    w = rng.normal(0, 1, size=(150, N, 6)).astype(np.float32)  # crosses feat.BLOCK boundaries
    s = spec(
        features=("mean", "rms", "peak", "crest", "kurtosis", "band_energy"),
        bands_hz=((0.0, 5.0), (5.0, 20.0), (20.0, 50.0)),
        taper="hann",
        log_bands=True,
    )
    batch = feat.compute(w, s)
    single = np.concatenate([feat.compute(w[i : i + 1], s) for i in range(w.shape[0])])
    # Bit for bit: no summation order depends on the batch (no BLAS, one FFT per window).
    np.testing.assert_array_equal(batch, single)
    np.testing.assert_array_equal(feat.compute(w[5:12], s), batch[5:12])
    np.testing.assert_array_equal(feat.compute(w[60:130], s), batch[60:130])
    assert batch.dtype == np.float32 and batch.shape == (150, s.n_features(6))


def test_non_float32_input_is_taken_as_float32_samples() -> None:
    rng = np.random.default_rng(3)
    w64 = rng.normal(0, 1, size=(4, N, 2))
    s = spec(features=("mean", "rms", "band_energy", "raw"), bands_hz=((0.0, 20.0), (20.0, 50.0)))
    np.testing.assert_array_equal(feat.compute(w64, s), feat.compute(w64.astype(np.float32), s))


def test_a_non_finite_window_leaves_the_others_alone_and_empty_bands_are_zero() -> None:
    rng = np.random.default_rng(4)
    w = rng.normal(0, 1, size=(3, N, 2)).astype(np.float32)
    # 0.1-0.2 Hz holds no FFT bin at 0.78 Hz spacing: its energy is 0.
    s = spec(features=("rms", "band_energy"), bands_hz=((0.1, 0.2), (0.0, 50.0), (10.0, 20.0)))
    clean = feat.compute(w, s)
    w[1, 7, 0] = np.nan
    x = feat.compute(w, s)
    np.testing.assert_array_equal(x[[0, 2]], clean[[0, 2]])
    assert not np.isfinite(x[1, [0, 3, 4]]).any()  # channel 0 of window 1: rms and its bands
    np.testing.assert_array_equal(x[1, [1, 5, 6, 7]], clean[1, [1, 5, 6, 7]])  # channel 1 untouched
    np.testing.assert_array_equal(x[:, [2, 5]], 0.0)  # the empty band, even beside a NaN


def test_frame_cuts_overlapping_windows() -> None:
    stream = np.arange(300 * 2, dtype=np.float32).reshape(300, 2)
    w = feat.frame(stream, 128, 64)
    assert w.shape == (3, 128, 2)  # (300 - 128) // 64 + 1
    np.testing.assert_array_equal(w[1], stream[64:192])
    assert feat.frame(stream[:100], 128, 64).shape == (0, 128, 2)


def test_bad_input_and_spec_are_refused_naming_the_field() -> None:
    s = spec()
    with pytest.raises(feat.FeatureError, match=r"window length: expected 128 samples, found 100"):
        feat.compute(np.zeros((2, 100, 6), np.float32), s)
    with pytest.raises(feat.FeatureError, match=r"shape \(n_windows, window_len, n_channels\)"):
        feat.compute(np.zeros((128, 6), np.float32), s)
    with pytest.raises(feat.FeatureError, match=r"features.features: unknown feature 'skew'"):
        feat.FeatureSpec.from_dict({"window": 128, "rate_hz": 100, "features": ["rms", "skew"]})
    with pytest.raises(feat.FeatureError, match=r"features.bands_hz: band \[40.0, 60.0\)"):
        feat.FeatureSpec.from_dict({"window": 128, "rate_hz": 100, "features": ["band_energy"], "bands_hz": [[40, 60]]})
    with pytest.raises(feat.FeatureError, match=r"features.rate_hz is missing"):
        feat.FeatureSpec.from_dict({"window": 128, "features": ["rms"]})
    with pytest.raises(feat.FeatureError, match=r"unknown field\(s\) \['hop'\]"):
        feat.FeatureSpec.from_dict({"window": 128, "rate_hz": 100, "features": ["rms"], "hop": 64})


def test_spec_round_trips_through_dict() -> None:
    s = spec(features=("rms", "band_energy"), bands_hz=((0.0, 5.0), (5.0, 50.0)), taper="hann", log_bands=True)
    assert feat.FeatureSpec.from_dict(s.to_dict()) == s
