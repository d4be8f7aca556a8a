"""tools/train/autospec.py: window, hop and bands from the sample rate, and the too-short check."""

from __future__ import annotations

import numpy as np
import pytest

from gateway import features as feat
from gateway.recording import Part, Recording, RecordingError, time_split, windows
from tools.train import vibration
from tools.train.autospec import MIN_SPLIT, check_enough, check_splits, choose, min_windows


def rec_of(n: int, rate: float = 100.0, parts: int = 1) -> Recording:
    return Recording(
        channels=(("a", "g"),),
        rate_hz=rate,
        parts=tuple(Part(t0=float(i * 1000), values=np.zeros((n, 1), np.float32)) for i in range(parts)),
        source="test",
        fingerprint="",
    )


@pytest.mark.parametrize(
    ("rate", "window"), [(1.0, 16), (10.0, 16), (25.0, 32), (64.0, 64), (100.0, 128), (1000.0, 1024), (8000.0, 1024)]
)
def test_window_is_a_power_of_two_covering_a_second(rate: float, window: int) -> None:
    spec, hop = choose(rate, 3)
    assert spec.window == window and hop == window // 2
    assert spec.rate_hz == rate


def test_vibration_rate_gives_the_committed_recipe() -> None:
    spec, hop = choose(100.0, 6)
    ref = vibration.FEATURE_SPEC
    assert (spec.window, hop) == (vibration.WINDOW, vibration.HOP)
    assert (spec.taper, spec.log_bands, spec.detrend) == (ref.taper, ref.log_bands, ref.detrend)
    assert spec.features == ("mean", *ref.features)
    assert len(spec.bands_hz) == 8 and spec.bands_hz[0] == (0.0, 6.25) and spec.bands_hz[-1] == (43.75, 50.0)


def test_bands_cover_the_spectrum_with_two_bins_each() -> None:
    for rate, window in ((1.0, None), (100.0, 16), (100.0, 8), (44100.0, None)):
        spec, _ = choose(rate, 1, window=window)
        bins = spec.window // 2
        assert len(spec.bands_hz) == min(8, bins // 2)
        assert spec.bands_hz[0][0] == 0.0 and spec.bands_hz[-1][1] == rate / 2
        for (_, hi), (lo, _) in zip(spec.bands_hz, spec.bands_hz[1:], strict=False):
            assert hi == lo
        # every band holds >= 2 FFT bins: features of white noise are finite, no empty band
        x = np.random.default_rng(0).normal(size=(4, spec.window, 1)).astype(np.float32)
        f = feat.compute(x, spec)
        assert f.shape == (4, spec.n_features(1)) and np.isfinite(f).all()
        width = rate / spec.window
        for lo, hi in spec.bands_hz:
            assert (hi - lo) / width >= 2


def test_given_values_are_checked() -> None:
    spec, hop = choose(100.0, 2, window=256, hop=32, bands=4)
    assert (spec.window, hop, len(spec.bands_hz)) == (256, 32, 4)
    with pytest.raises(RecordingError, match="--window 4: a window needs at least 8 samples"):
        choose(100.0, 2, window=4)
    with pytest.raises(RecordingError, match=r"--hop 200: the hop must be 1\.\.128"):
        choose(100.0, 2, hop=200)
    with pytest.raises(RecordingError, match=r"--hop 0"):
        choose(100.0, 2, hop=0)
    with pytest.raises(
        RecordingError, match=r"--bands 9: a window of 32 samples has 16 frequency bins, enough for 1\.\.8"
    ):
        choose(100.0, 2, window=32, bands=9)
    with pytest.raises(RecordingError, match="no value columns"):
        choose(100.0, 0)


def test_too_short_says_how_long() -> None:
    with pytest.raises(RecordingError) as exc:
        check_enough(rec_of(900), 128, 64)
    msg = str(exc.value)
    assert msg.startswith("recording too short: 900 samples (9.0 s at 100 Hz) give 13 windows of 128 samples")
    assert "at least 66 windows (about 43 s)" in msg and "smaller --window" in msg
    # (66 - 1) * 64 + 128 samples give exactly 66 windows
    assert check_enough(rec_of(65 * 64 + 128), 128, 64) == 66
    with pytest.raises(RecordingError, match="4287 samples"):
        check_enough(rec_of(65 * 64 + 127), 128, 64)
    # windows never cross parts: two parts of 100 samples give no 128-sample window
    with pytest.raises(RecordingError, match=r"in 2 parts .* give 0 windows"):
        check_enough(rec_of(100, parts=2), 128, 64)


@pytest.mark.parametrize(("window", "hop"), [(128, 64), (128, 32), (16, 16), (1024, 512), (100, 30)])
def test_enough_windows_survive_the_time_split(window: int, hop: int) -> None:
    """A recording that passes check_enough keeps MIN_SPLIT windows in every set of the split."""
    n = min_windows(window, hop)
    for extra in (0, 7):
        rec = rec_of((n - 1 + extra) * hop + window)
        check_enough(rec, window, hop)
        sets = time_split(windows(rec, window, hop), (0.6, 0.2, 0.2))
        check_splits(dict(zip(MIN_SPLIT, (len(s) for s in sets), strict=True)), window, hop, 100.0)
    with pytest.raises(RecordingError, match="too short"):
        check_enough(rec_of((n - 2) * hop + window), window, hop)


def test_split_sizes_checked_after_the_time_split() -> None:
    rec = rec_of(59 * 64 + 128)
    ws = windows(rec, 128, 64)
    train, held, test = time_split(ws, (0.7, 0.15, 0.15))  # 60 windows: 42, 9 - 1, 9 - 1
    counts = {"train": len(train), "held-out": len(held), "test": len(test)}
    # the boundary windows that overlap the previous split are dropped: held-out falls short
    assert counts["held-out"] < MIN_SPLIT["held-out"]
    with pytest.raises(RecordingError, match="the held-out part of the time split has 8 windows"):
        check_splits(counts, 128, 64, 100.0)
    check_splits({"train": 40, "held-out": 10, "test": 10}, 128, 64, 100.0)
