"""Window, hop and features for a user's recording, from its sample rate (or as given).

Rules (``edgeline-train`` applies them unless ``--window``, ``--hop`` or ``--bands`` say otherwise):

- **window**: the smallest power of two covering 1 s of data, clamped to 16..1024 samples
  (64 Hz: 64, 100 Hz: 128 as the committed vibration model, 1 kHz: 1024, 1 Hz: 16 samples).
  A window given by hand must be at least 8 samples.
- **hop**: half a window (windows overlap by half). Given by hand: 1..window.
- **bands**: ``DEFAULT_BANDS`` (8) equal-width bands from 0 to rate/2, fewer when the window
  has too few FFT bins for them: every band must hold at least ``MIN_BINS_PER_BAND`` (2) of
  the window/2 bins, so at most window/4 bands (a 16-sample window gets 4).
- **features**, per channel: ``mean`` (the level: slow signals such as a temperature or a tank
  level carry their information there), ``rms``, ``peak``, ``crest``, ``kurtosis`` and the log10
  band energies of the Hann-tapered, detrended window, as tools/train/vibration.py does.

Too short: training needs 40 windows to train on, 10 held out to set the threshold and 10 to
test (``MIN_SPLIT``), after the split by time (``DEFAULT_SPLIT`` 60/20/20 %, dropping the windows
that overlap the previous set): 67 windows of 128 samples every 64 (43 s at 100 Hz).
:func:`check_enough` refuses a recording that gives fewer, saying how long a recording would do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from gateway.features import FeatureSpec
from gateway.recording import Recording, RecordingError

MIN_WINDOW_LEN = 16
MAX_WINDOW_LEN = 1024
MIN_USER_WINDOW = 8
WINDOW_SECONDS = 1.0  # a window covers at least this much (until the clamp)
DEFAULT_BANDS = 8
MIN_BINS_PER_BAND = 2
FEATURES = ("mean", "rms", "peak", "crest", "kurtosis", "band_energy")
MIN_SPLIT: Mapping[str, int] = {"train": 40, "held-out": 10, "test": 10}
MIN_WINDOWS = sum(MIN_SPLIT.values())
DEFAULT_SPLIT = (0.6, 0.2, 0.2)  # train, held-out, test fractions (edgeline-train --split)


def default_window(rate_hz: float) -> int:
    """The smallest power of two >= WINDOW_SECONDS of samples, clamped to 16..1024."""
    want = rate_hz * WINDOW_SECONDS
    w = MIN_WINDOW_LEN
    while w < want and w < MAX_WINDOW_LEN:
        w *= 2
    return w


def max_bands(window: int) -> int:
    """Bands that fit: each holds at least MIN_BINS_PER_BAND of the window's window/2 FFT bins."""
    return (window // 2) // MIN_BINS_PER_BAND


def equal_bands(rate_hz: float, n: int) -> tuple[tuple[float, float], ...]:
    """n equal-width bands [lo, hi) Hz covering 0..rate/2."""
    nyquist = rate_hz / 2
    edges = [round(nyquist * i / n, 6) for i in range(n + 1)]
    edges[-1] = nyquist
    return tuple((edges[i], edges[i + 1]) for i in range(n))


def choose(
    rate_hz: float, n_channels: int, *, window: int | None = None, hop: int | None = None, bands: int | None = None
) -> tuple[FeatureSpec, int]:
    """(feature spec, hop) for a stream of n_channels at rate_hz; window/hop/bands override
    the rules (module docstring). Raises RecordingError on a value that cannot work."""
    if not rate_hz > 0:
        raise RecordingError(f"the sample rate must be > 0 Hz, got {rate_hz}")
    if n_channels < 1:
        raise RecordingError("the recording has no value columns: it needs at least one channel")
    if window is None:
        window = default_window(rate_hz)
    elif window < MIN_USER_WINDOW:
        raise RecordingError(f"--window {window}: a window needs at least {MIN_USER_WINDOW} samples")
    if hop is None:
        hop = max(1, window // 2)
    elif not 1 <= hop <= window:
        raise RecordingError(f"--hop {hop}: the hop must be 1..{window} samples (the window); half a window is usual")
    fit = max_bands(window)
    if bands is None:
        bands = min(DEFAULT_BANDS, fit)
    elif not 1 <= bands <= fit:
        raise RecordingError(
            f"--bands {bands}: a window of {window} samples has {window // 2} frequency bins, enough for 1..{fit}"
            f" bands of at least {MIN_BINS_PER_BAND} bins: pass fewer bands or a longer --window"
        )
    spec = FeatureSpec(
        window=window,
        rate_hz=rate_hz,
        features=FEATURES,
        bands_hz=equal_bands(rate_hz, bands),
        detrend=True,
        taper="hann",
        log_bands=True,
    )
    return spec, hop


def n_windows(n_samples: int, window: int, hop: int) -> int:
    """Windows of one gap-free part (cut from its first sample, as gateway.recording.windows)."""
    return 0 if n_samples < window else (n_samples - window) // hop + 1


def samples_for(windows: int, window: int, hop: int) -> int:
    """Samples one gap-free part needs for this many windows."""
    return (windows - 1) * hop + window


def min_windows(window: int, hop: int, split: Sequence[float] = DEFAULT_SPLIT) -> int:
    """Windows a gap-free recording needs so that the time split (gateway.recording.time_split,
    which drops the windows overlapping the previous set) leaves MIN_SPLIT in each set."""
    need = list(MIN_SPLIT.values())
    if len(split) != len(need):
        raise RecordingError(f"--split needs {len(need)} fractions (train, held-out, test), got {len(split)}")
    dropped = -(-window // hop) - 1  # windows of the next set that overlap the last one of a set
    n = sum(need)
    while True:
        cuts = np.round(np.cumsum((0.0, *split)) * n).astype(int)
        sizes = np.diff(cuts) - np.asarray([0] + [dropped] * (len(split) - 1))
        if (sizes >= need).all():
            return n
        n += 1


def check_enough(
    rec: Recording, window: int, hop: int, *, split: Sequence[float] = DEFAULT_SPLIT, needed: int | None = None
) -> int:
    """The number of windows the recording gives; RecordingError "recording too short" when
    fewer than ``needed`` (default: :func:`min_windows` for the split), with the figures and
    what to do."""
    if needed is None:
        needed = min_windows(window, hop, split)
    have = sum(n_windows(p.n, window, hop) for p in rec.parts)
    if have < needed:
        n = rec.n_samples
        rate = rec.rate_hz
        want_s = samples_for(needed, window, hop) / rate
        parts = f" in {len(rec.parts)} parts" if len(rec.parts) > 1 else ""
        raise RecordingError(
            f"recording too short: {n} samples{parts} ({n / rate:.1f} s at {rate:g} Hz) give {have} windows of"
            f" {window} samples every {hop}; training needs at least {needed} windows (about {want_s:.0f} s):"
            " record longer or pass a smaller --window"
        )
    return have


def check_splits(counts: Mapping[str, int], window: int, hop: int, rate_hz: float) -> None:
    """After the time split: each split ("train", "held-out", "test") must hold MIN_SPLIT windows."""
    for name, have in counts.items():
        need = MIN_SPLIT.get(name, 1)
        if have < need:
            want_s = samples_for(need, window, hop) / rate_hz
            raise RecordingError(
                f"recording too short: the {name} part of the time split has {have} windows of {window} samples,"
                f" it needs at least {need} (about {want_s:.0f} s of data): record longer or pass a smaller --window"
            )
