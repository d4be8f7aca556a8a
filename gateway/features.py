"""Window features, vectorised over many windows at once.

Input: ``windows`` of shape ``(n_windows, window_len, n_channels)`` in physical units.
Output: ``(n_windows, n_features)`` float32, in the order given by the feature spec:
for each feature name in ``spec.features``, for each channel (and, for ``band_energy``,
for each band of that channel). :func:`feature_names` lists the columns.

Features (per channel, over one window; "x" is the window minus its mean when
``detrend`` is on, which is the default):

``mean``         mean of the raw window (orientation / DC level; not detrended)
``rms``          sqrt(mean(x**2)); a sine of amplitude A gives A / sqrt(2)
``peak``         max |x|
``crest``        peak / rms (0 for a flat window)
``kurtosis``     mean(x**4) / mean(x**2)**2 (Pearson: 3 for Gaussian noise, 1.5 for a sine,
                 0 for a flat window)
``band_energy``  mean-square power in each frequency band [lo, hi) Hz from the one-sided
                 FFT, scaled so that the bands covering 0..rate/2 add up to mean(x**2)
                 (Parseval) with ``taper="none"``; with ``taper="hann"`` the window is
                 Hann-weighted and power-normalised (energy preserved on average).
                 With ``log_bands`` the value is log10(energy + 1e-9).
``raw``          the window itself, flattened sample-major (s0c0, s0c1, ..., s1c0, ...)

The same code computes features for training (tools/train) and in the gateway, so a
model always sees features computed exactly as during training. The spec travels in
the model manifest (``features`` object); see docs/models.md.

Numerics (what is reproducible). The samples are taken as float32 (the input is cast to
float32 first, as the gateway decodes them). Everything after that runs in float64 and is
rounded to float32 once, when stored: the mean, the moments (numpy's pairwise sums), the
spectrum (``np.fft.rfft`` of each window, not a matrix product), its band sums and
``log10``. No BLAS call and no float32 accumulation is involved, so neither the BLAS kernel
(AVX2 / AVX-512 / NEON blocking, thread count) nor the batch size can change a result: a
window gets the same bytes alone or in a batch of any size.

Across machines, the float64 intermediates may still differ in their last bits (another
numpy version or build, an FFT compiled with fused multiply-adds, numpy's vectorised
``log10`` on AVX-512): by about 1e-15 relative, more for a band holding a tiny share of the
window's energy (there the rounding errors of the large bins dominate). Neighbouring float32
values are 6e-8 (relative) apart; two float64 results that differ by d round to different
float32 values only when a float32 rounding midpoint lies between them, which happens with
probability about d / 6e-8 (~1e-8 per value), and they then differ by one float32 ulp. Only
a band holding less than ~1e-8 of the window's energy (below any real sensor's noise) can
differ by more. Measured: 0 of 1.4 million values (simulated, noise, large-offset and sine
windows; three specs) differ from an extended-precision reference (a direct DFT in long
double; tests/inference/test_features_numerics.py checks a subset), and numpy 1.26 (C
pocketfft) and numpy 2.4 (C++ pocketfft) give the same bytes. So features are
bit-identical across CPUs and numpy versions except in such rare one-ulp ties.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from gateway.errors import GatewayError

FEATURE_KINDS = ("mean", "rms", "peak", "crest", "kurtosis", "band_energy", "raw")
TAPERS = ("none", "hann")
LOG_FLOOR = 1e-9

FloatArray = npt.NDArray[np.float32]


class FeatureError(GatewayError, ValueError):
    """A feature spec or an input array that cannot be used; the message says which field."""


@dataclass(frozen=True)
class FeatureSpec:
    """How to turn windows into a feature matrix (the manifest's ``features`` object)."""

    window: int
    rate_hz: float
    features: tuple[str, ...]
    bands_hz: tuple[tuple[float, float], ...] = ()
    detrend: bool = True
    taper: str = "none"
    log_bands: bool = False

    def __post_init__(self) -> None:
        if self.window < 2:
            raise FeatureError(f"features.window must be >= 2, got {self.window}")
        if not self.rate_hz > 0:
            raise FeatureError(f"features.rate_hz must be > 0, got {self.rate_hz}")
        if not self.features:
            raise FeatureError("features.features is empty: name at least one feature")
        for name in self.features:
            if name not in FEATURE_KINDS:
                raise FeatureError(f"features.features: unknown feature {name!r}; known: {', '.join(FEATURE_KINDS)}")
        if len(set(self.features)) != len(self.features):
            raise FeatureError(f"features.features lists a feature twice: {list(self.features)}")
        if self.taper not in TAPERS:
            raise FeatureError(f"features.taper must be one of {TAPERS}, got {self.taper!r}")
        if "band_energy" in self.features and not self.bands_hz:
            raise FeatureError("features.bands_hz is empty but band_energy is requested")
        nyquist = self.rate_hz / 2
        for lo, hi in self.bands_hz:
            if not (0 <= lo < hi <= nyquist + 1e-9):
                raise FeatureError(
                    f"features.bands_hz: band [{lo}, {hi}) must satisfy 0 <= lo < hi <= rate_hz/2 = {nyquist}"
                )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeatureSpec:
        """Build from the manifest's ``features`` object (JSON types)."""
        known = {
            "window",
            "rate_hz",
            "features",
            "bands_hz",
            "detrend",
            "taper",
            "log_bands",
        }
        extra = sorted(set(d) - known)
        if extra:
            raise FeatureError(f"features: unknown field(s) {extra}; known: {sorted(known)}")
        for key in ("window", "rate_hz", "features"):
            if key not in d:
                raise FeatureError(f"features.{key} is missing")
        try:
            bands = tuple((float(lo), float(hi)) for lo, hi in d.get("bands_hz", ()))
        except (TypeError, ValueError) as exc:
            raise FeatureError(f"features.bands_hz must be a list of [lo, hi] pairs: {exc}") from exc
        return cls(
            window=int(d["window"]),
            rate_hz=float(d["rate_hz"]),
            features=tuple(str(f) for f in d["features"]),
            bands_hz=bands,
            detrend=bool(d.get("detrend", True)),
            taper=str(d.get("taper", "none")),
            log_bands=bool(d.get("log_bands", False)),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "rate_hz": self.rate_hz,
            "features": list(self.features),
            "bands_hz": [[lo, hi] for lo, hi in self.bands_hz],
            "detrend": self.detrend,
            "taper": self.taper,
            "log_bands": self.log_bands,
        }

    def n_features(self, n_channels: int) -> int:
        n = 0
        for name in self.features:
            if name == "band_energy":
                n += n_channels * len(self.bands_hz)
            elif name == "raw":
                n += n_channels * self.window
            else:
                n += n_channels
        return n


def feature_names(spec: FeatureSpec, channels: Sequence[str]) -> list[str]:
    """Column names of :func:`compute`'s output, e.g. ``rms:ax`` or ``band_energy:ax:0-5Hz``."""
    names: list[str] = []
    for name in spec.features:
        if name == "band_energy":
            for ch in channels:
                names.extend(f"band_energy:{ch}:{lo:g}-{hi:g}Hz" for lo, hi in spec.bands_hz)
        elif name == "raw":
            names.extend(f"raw:{i}:{ch}" for i in range(spec.window) for ch in channels)
        else:
            names.extend(f"{name}:{ch}" for ch in channels)
    return names


class _Plan:
    """Per-spec constants for the band energies, built once: the taper, the one-sided
    Parseval weight of each FFT bin and the bin range [start, stop) of each band.
    """

    def __init__(self, spec: FeatureSpec) -> None:
        n = spec.window
        nbins = n // 2 + 1
        freqs = np.arange(nbins, dtype=np.float64) * (spec.rate_hz / n)
        # One-sided spectrum weights: interior bins count twice (their negative twin).
        weights = np.full(nbins, 2.0)
        weights[0] = 1.0
        if n % 2 == 0:
            weights[-1] = 1.0
        self.taper: npt.NDArray[np.float64] | None = None
        norm = 1.0
        if spec.taper == "hann":
            taper = np.hanning(n + 1)[:-1]  # periodic Hann
            norm = float(np.mean(taper**2))
            self.taper = taper
        self.bin_weight = weights / (n * n * norm)
        nyquist = spec.rate_hz / 2
        bounds: list[int] = []
        empty: list[int] = []
        for j, (lo, hi) in enumerate(spec.bands_hz):
            # [lo, hi); the top band includes the Nyquist bin when hi reaches rate/2.
            upper = freqs <= hi + 1e-9 if hi >= nyquist - 1e-9 else freqs < hi
            idx = np.flatnonzero((freqs >= lo) & upper)  # contiguous: freqs is sorted
            if idx.size:
                bounds += [int(idx[0]), int(idx[-1]) + 1]
            else:
                bounds += [0, 1]
                empty.append(j)
        # np.add.reduceat over the power spectrum padded with one zero bin: output 2j is the
        # sum of bins [start_j, stop_j) (stop_j <= nbins is a valid index thanks to the pad);
        # the odd outputs are discarded. Bands holding no bin are zeroed.
        self.nbins = nbins
        self.reduce_at = np.asarray(bounds, dtype=np.intp)
        self.empty_bands = empty


_plans: dict[FeatureSpec, _Plan] = {}


def _plan(spec: FeatureSpec) -> _Plan:
    plan = _plans.get(spec)
    if plan is None:
        plan = _Plan(spec)
        if len(_plans) > 64:
            _plans.clear()
        _plans[spec] = plan
    return plan


def compute(windows: npt.ArrayLike, spec: FeatureSpec) -> FloatArray:
    """Features of many windows at once: (n, window, channels) -> (n, n_features) float32.

    Computed in float64, rounded to float32 once (see the module docstring: bit-identical
    for a window alone or in any batch, and across CPUs except in rare one-ulp ties).
    A window with NaN / inf samples gets non-finite features (no warning); the others are
    unaffected.
    """
    x = np.asarray(windows)
    if x.ndim != 3:
        raise FeatureError(f"windows must have shape (n_windows, window_len, n_channels), got shape {x.shape}")
    if x.shape[1] != spec.window:
        raise FeatureError(f"window length: expected {spec.window} samples, found {x.shape[1]}")
    if not np.issubdtype(x.dtype, np.number):
        raise FeatureError(f"windows must be numeric, got dtype {x.dtype}")
    out = np.empty((x.shape[0], spec.n_features(x.shape[2])), dtype=np.float32)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        # Blocks of BLOCK windows: the float64 temporaries stay cache-sized and are reused by
        # the allocator (one block of 4096 windows: 2x the page faults and ~1.6x the time).
        for i in range(0, x.shape[0], BLOCK):
            _compute(x[i : i + BLOCK], spec, out[i : i + BLOCK])
    return out


BLOCK = 64


def _compute(x: npt.NDArray[Any], spec: FeatureSpec, out: FloatArray) -> None:
    n, length, nch = x.shape
    x32 = x if x.dtype == np.float32 else x.astype(np.float32)  # the samples, as decoded
    # Channel-major float64 copy: every reduction below runs over contiguous memory. It is
    # detrended, then tapered, in place (few large temporaries: allocating them costs more
    # page faults than the float64 arithmetic costs).
    xt = np.empty((n, nch, length), dtype=np.float64)
    np.copyto(xt, x32.transpose(0, 2, 1))
    wanted = set(spec.features)
    stats: dict[str, npt.NDArray[np.float64]] = {}
    mean = np.add.reduce(xt, axis=2)
    mean /= length
    stats["mean"] = mean
    if spec.detrend:
        xt -= mean[:, :, None]
    if wanted & {"rms", "crest", "kurtosis"}:
        sq = np.square(xt)
        m2 = np.add.reduce(sq, axis=2)
        m2 /= length
        rms = stats["rms"] = np.sqrt(m2)
        if "kurtosis" in wanted:
            np.square(sq, out=sq)
            m4 = np.add.reduce(sq, axis=2)
            m4 /= length
            den = m2 * m2
            stats["kurtosis"] = np.divide(m4, den, out=np.zeros_like(m4), where=den > 1e-30)
        del sq
    if wanted & {"peak", "crest"}:
        peak = stats["peak"] = np.maximum(xt.max(axis=2), -xt.min(axis=2))
        if "crest" in wanted:
            stats["crest"] = np.divide(peak, rms, out=np.zeros_like(peak), where=rms > 0)
    if "band_energy" in wanted:
        stats["band_energy"] = _band_energy(xt, spec).reshape(n, nch * len(spec.bands_hz))  # xt: tapered
    col = 0
    for name in spec.features:
        if name == "raw":
            out[:, col : col + length * nch] = x32.reshape(n, length * nch)
            col += length * nch
            continue
        value = stats[name]
        out[:, col : col + value.shape[1]] = value  # the one rounding to float32
        col += value.shape[1]


def _band_energy(xt: npt.NDArray[np.float64], spec: FeatureSpec) -> npt.NDArray[np.float64]:
    """(n, C, window) float64 windows (detrended when the spec says so) -> (n, C, bands).

    Applies the taper to ``xt`` in place.
    """
    plan = _plan(spec)
    if plan.taper is not None:
        xt *= plan.taper
    z = np.fft.rfft(xt, axis=2)  # (n, C, bins) complex128, one transform per window and channel
    n, nch, nbins = z.shape
    power = np.empty((n, nch, nbins + 1), dtype=np.float64)
    power[:, :, nbins] = 0.0
    p = power[:, :, :nbins]
    np.multiply(z.real, z.real, out=p)
    p += z.imag * z.imag
    p *= plan.bin_weight
    e = np.add.reduceat(power, plan.reduce_at, axis=2)[:, :, 0::2]
    if plan.empty_bands:
        e[:, :, plan.empty_bands] = 0.0
    if spec.log_bands:
        e += LOG_FLOOR
        np.log10(e, out=e)
    return e


def frame(samples: npt.ArrayLike, window: int, hop: int) -> FloatArray:
    """Cut a (n_samples, n_channels) stream into (n_windows, window, n_channels) windows.

    Windows overlap when hop < window; the result is a contiguous copy.
    """
    s = np.ascontiguousarray(samples, dtype=np.float32)
    if s.ndim != 2:
        raise FeatureError(f"samples must have shape (n_samples, n_channels), got {s.shape}")
    if window < 1 or hop < 1:
        raise FeatureError(f"window and hop must be >= 1, got window={window} hop={hop}")
    if s.shape[0] < window:
        return np.zeros((0, window, s.shape[1]), dtype=np.float32)
    view = np.lib.stride_tricks.sliding_window_view(s, window, axis=0)[::hop]  # (n, C, window)
    return np.ascontiguousarray(view.transpose(0, 2, 1))
