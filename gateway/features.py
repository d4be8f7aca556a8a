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
    """Per-spec constants, built once: a real DFT matrix with the mean removal and the taper
    folded in, and the band matrix with the one-sided Parseval weights.

    Band energies are then two matrix products over all windows and channels at once:
    ``square(x @ dft) @ bands`` with x of shape (n_windows * n_channels, window).
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
        if spec.taper == "hann":
            taper = np.hanning(n + 1)[:-1]  # periodic Hann
            norm = float(np.mean(taper**2))
        else:
            taper = np.ones(n)
            norm = 1.0
        t = np.arange(n, dtype=np.float64)
        ang = 2.0 * np.pi * np.outer(t, np.arange(nbins)) / n  # (n, bins)
        dft = np.empty((n, 2 * nbins), dtype=np.float64)
        dft[:, 0::2] = np.cos(ang) * taper[:, None]
        dft[:, 1::2] = -np.sin(ang) * taper[:, None]
        if spec.detrend:
            # (x - mean(x)) @ D == x @ (D - column means of D)
            dft -= dft.mean(axis=0, keepdims=True)
        self.dft = np.ascontiguousarray(dft, dtype=np.float32)
        scale = weights / (n * n * norm)
        nyquist = spec.rate_hz / 2
        bands = np.zeros((2 * nbins, len(spec.bands_hz)), dtype=np.float64)
        for j, (lo, hi) in enumerate(spec.bands_hz):
            # [lo, hi); the top band includes the Nyquist bin when hi reaches rate/2.
            upper = freqs <= hi + 1e-9 if hi >= nyquist - 1e-9 else freqs < hi
            col = ((freqs >= lo) & upper) * scale
            bands[0::2, j] = col  # real part squared
            bands[1::2, j] = col  # imaginary part squared
        self.bands = np.ascontiguousarray(bands, dtype=np.float32)


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

    A window with NaN / inf samples gets non-finite features (no warning); the others are
    unaffected.
    """
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        return _compute(windows, spec)


def _compute(windows: npt.ArrayLike, spec: FeatureSpec) -> FloatArray:
    x = np.asarray(windows)
    if x.ndim != 3:
        raise FeatureError(f"windows must have shape (n_windows, window_len, n_channels), got shape {x.shape}")
    if x.shape[1] != spec.window:
        raise FeatureError(f"window length: expected {spec.window} samples, found {x.shape[1]}")
    if not np.issubdtype(x.dtype, np.number):
        raise FeatureError(f"windows must be numeric, got dtype {x.dtype}")
    n, length, nch = x.shape
    out = np.empty((n, spec.n_features(nch)), dtype=np.float32)
    if n == 0:
        return out
    # Channel-major copy: every reduction below runs over contiguous memory.
    xt = np.empty((n, nch, length), dtype=np.float32)
    np.copyto(xt, x.transpose(0, 2, 1), casting="unsafe")
    inv_len = np.float32(1.0 / length)
    mean = np.add.reduce(xt, axis=2) * inv_len  # (n, C)
    moments = {"rms", "peak", "crest", "kurtosis"}.intersection(spec.features)
    if moments:
        xd = xt - mean[:, :, None] if spec.detrend else xt
        sq = xd * xd
        m2 = np.add.reduce(sq, axis=2) * inv_len
        rms = np.sqrt(m2)
    peak: FloatArray | None = None
    col = 0
    for name in spec.features:
        if name == "band_energy":
            plan = _plan(spec)
            nb = len(spec.bands_hz)
            y = np.matmul(xt.reshape(n * nch, length), plan.dft)  # (n*C, 2*bins): re, im
            np.square(y, out=y)
            dst = out[:, col : col + nch * nb]
            dst[...] = np.matmul(y, plan.bands).reshape(n, nch * nb)
            if spec.log_bands:
                dst += np.float32(LOG_FLOOR)
                np.log10(dst, out=dst)
            col += nch * nb
            continue
        if name == "raw":
            out[:, col : col + length * nch] = x.reshape(n, length * nch)
            col += length * nch
            continue
        dst = out[:, col : col + nch]
        col += nch
        if name == "mean":
            dst[...] = mean
        elif name == "rms":
            dst[...] = rms
        elif name in {"peak", "crest"}:
            if peak is None:  # shared by peak and crest
                peak = np.maximum(xd.max(axis=2), -xd.min(axis=2))
            if name == "peak":
                dst[...] = peak
            else:
                dst[...] = np.divide(peak, rms, out=np.zeros_like(peak), where=rms > 0)
        elif name == "kurtosis":
            m4 = np.einsum("ijk,ijk->ij", sq, sq) * inv_len
            den = m2 * m2
            dst[...] = np.divide(m4, den, out=np.zeros_like(m4), where=den > 1e-30)
    return out


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
