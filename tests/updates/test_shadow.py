"""The shadow scorer and its verdict rules, on plain arrays (the real models: test_model_update.py)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from gateway.updates.settings import ShadowSettings
from gateway.updates.shadow import ShadowScorer, Tally, judge

RULES = ShadowSettings(windows=10, max_alert_rate=0.2, min_agreement=0.8, max_errors=0, timeout_s=60.0)


class Fixed:
    """A candidate whose score of a window is its first sample."""

    def __init__(self, *, fail: bool = False) -> None:
        self.fail = fail
        self.calls = 0

    def score(self, windows: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.fail:
            raise RuntimeError("interpreter failed")
        return windows[:, 0, 0].astype(np.float64)


def windows(values: list[float]) -> np.ndarray:
    w = np.zeros((len(values), 4, 1), np.float32)
    w[:, 0, 0] = values
    return w


def test_no_verdict_before_enough_windows_then_promote_with_its_figures() -> None:
    s = ShadowScorer(Fixed(), 1.0, RULES, started=0.0)
    s.observe(windows([0.1] * 6), np.full(6, 0.1), 1.0)
    assert s.verdict(10.0) is None and not s.done
    s.observe(windows([0.1] * 3 + [2.0]), np.array([0.1, 0.1, 0.1, 2.0]), 1.0)
    v = s.verdict(10.0)
    assert v is not None and v.promote and v.failed == () and v.reason == ""
    assert v.figures["windows"] == 10 and v.figures["alerts"] == 1 and v.figures["alert_rate"] == 0.1
    assert v.figures["agreement"] == 1.0 and v.figures["current_alerts"] == 1


def test_a_flood_of_alerts_fails_the_alert_rate_and_agreement_rules() -> None:
    s = ShadowScorer(Fixed(), 1e-9, RULES, started=0.0)
    s.observe(windows([0.1] * 10), np.full(10, 0.1), 1.0)
    v = s.verdict(1.0)
    assert v is not None and not v.promote
    assert v.failed == ("alert_rate", "agreement")
    assert "alert_rate: 10 of 10 windows alerted (100.0%) > max_alert_rate 0.2" in v.reason


def test_inference_errors_count_and_never_raise() -> None:
    cand = Fixed(fail=True)
    s = ShadowScorer(cand, 1.0, RULES, started=0.0)
    s.observe(windows([0.1] * 10), np.full(10, 0.1), 1.0)
    v = s.verdict(1.0)
    assert (
        v is not None
        and v.failed == ("agreement", "errors")
        and "errors: 1 inference errors > max_errors 0" in v.reason
    )
    # non-finite scores where the current model's are finite are errors too
    s = ShadowScorer(Fixed(), 1.0, RULES, started=0.0)
    s.observe(windows([float("nan")] + [0.1] * 9), np.full(10, 0.1), 1.0)
    v = s.verdict(1.0)
    assert v is not None and v.failed == ("errors",)


def test_enough_windows_stops_the_candidate() -> None:
    cand = Fixed()
    s = ShadowScorer(cand, 1.0, RULES, started=0.0)
    s.observe(windows([0.1] * 12), np.full(12, 0.1), 1.0)
    s.observe(windows([0.1] * 4), np.full(4, 0.1), 1.0)
    assert s.done and cand.calls == 1 and s.tally.windows == 12


@pytest.mark.parametrize(
    ("tally", "failed"),
    [
        (Tally(windows=3, agreed=3), ("windows",)),  # timed out with too few windows
        (Tally(windows=0), ("windows",)),
        (Tally(windows=10, alerts=2, agreed=8), ()),  # exactly on both bounds: promoted
        (Tally(windows=10, alerts=3, agreed=8), ("alert_rate",)),
        (Tally(windows=10, agreed=7), ("agreement",)),
    ],
)
def test_rules_at_timeout(tally: Tally, failed: tuple[str, ...]) -> None:
    v = judge(tally, RULES, timed_out=True)
    assert v is not None and v.failed == failed and v.promote == (not failed)
    for rule in failed:
        assert v.reason.count(f"{rule}:") == 1


def test_timeout_from_the_clock() -> None:
    s = ShadowScorer(Fixed(), 1.0, RULES, started=100.0)
    s.observe(windows([0.1] * 2), np.full(2, 0.1), 1.0)
    assert s.verdict(159.0) is None
    v: Any = s.verdict(160.0)
    assert v is not None and v.failed == ("windows",) and "only 2 of 10 windows" in v.reason
