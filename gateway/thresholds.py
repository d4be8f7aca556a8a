"""The threshold rule, one source for training, the baselines and per-device calibration.

threshold = the (1 - far) quantile of the scores of normal windows (numpy's "higher" method:
an actual score, so at most ``far`` of those windows lie above it). With n windows the smallest
rate this can resolve is 1 / n: a lower target gives the largest score, and
:func:`resolvable` says so.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from gateway.errors import GatewayError


class ThresholdError(GatewayError, ValueError):
    """No threshold can be set from these scores (none, or none finite, or a bad rate)."""


def threshold_for(normal_scores: npt.ArrayLike, far: float) -> float:
    """Score above which at most ``far`` of these normal windows lie (NaN scores ignored)."""
    if not 0.0 < far < 1.0:
        raise ThresholdError(f"false-alarm rate must be between 0 and 1 (exclusive), got {far}")
    s = np.asarray(normal_scores, dtype=np.float64).ravel()
    s = s[np.isfinite(s)]
    if s.size == 0:
        raise ThresholdError("no finite scores of normal windows to set a threshold from")
    return float(np.quantile(s, 1.0 - far, method="higher"))


def resolvable(n_windows: int, far: float) -> bool:
    """Whether n normal windows can tell a rate of ``far`` from zero (n * far >= 1)."""
    return n_windows * far >= 1.0
