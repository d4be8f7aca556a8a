"""Shadow evaluation of a candidate model: it scores every window the pipeline's current model
scores, on the processing thread, after the batch's alerts are out; its decisions are only
counted, never turned into alerts or actuator commands. After ``[updates.shadow] windows``
windows (or ``timeout_s``) a verdict: promote only if every rule holds.

Rules (one place, :func:`judge`):
  alert_rate  candidate alerts / windows      <= max_alert_rate
  agreement   same decision as the current    >= min_agreement
  errors      failed inference calls + windows the candidate scored non-finite where the
              current model's score was finite  <= max_errors
  windows     at least ``windows`` windows seen before ``timeout_s``
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from gateway.scoring import ModelLike, score_windows
from gateway.updates.settings import ShadowSettings

log = logging.getLogger(__name__)


@dataclass
class Tally:
    """What the candidate did beside the current model."""

    windows: int = 0
    alerts: int = 0  # windows the candidate scored over its threshold
    agreed: int = 0  # windows with the same decision (alert or not) as the current model
    errors: int = 0
    current_alerts: int = 0  # for comparison in the record
    seconds: float = 0.0  # the candidate's inference time

    def figures(self) -> dict[str, Any]:
        n = self.windows
        return {
            "windows": n,
            "alerts": self.alerts,
            "alert_rate": round(self.alerts / n, 4) if n else None,
            "agreement": round(self.agreed / n, 4) if n else None,
            "errors": self.errors,
            "current_alerts": self.current_alerts,
            "inference_s": round(self.seconds, 4),
        }


@dataclass(frozen=True)
class Verdict:
    promote: bool
    failed: tuple[str, ...]  # the rules that failed: alert_rate, agreement, errors, windows
    reason: str  # a sentence naming each failed rule and its figures ("" when promoted)
    figures: dict[str, Any]


def judge(tally: Tally, rules: ShadowSettings, *, timed_out: bool) -> Verdict | None:
    """The verdict on a tally, or None while it is too early for one."""
    n = tally.windows
    if n < rules.windows and not timed_out:
        return None
    failed: list[str] = []
    why: list[str] = []
    if n < rules.windows:
        failed.append("windows")
        why.append(f"windows: only {n} of {rules.windows} windows within timeout_s = {rules.timeout_s:g} s")
    if n:
        rate = tally.alerts / n
        if rate > rules.max_alert_rate:
            failed.append("alert_rate")
            why.append(
                f"alert_rate: {tally.alerts} of {n} windows alerted ({rate:.1%}) > max_alert_rate {rules.max_alert_rate:g}"
            )
        agreement = tally.agreed / n
        if agreement < rules.min_agreement:
            failed.append("agreement")
            why.append(
                f"agreement: {agreement:.1%} of windows decided as the current model < min_agreement {rules.min_agreement:g}"
            )
    if tally.errors > rules.max_errors:
        failed.append("errors")
        why.append(f"errors: {tally.errors} inference errors > max_errors {rules.max_errors}")
    return Verdict(not failed, tuple(failed), "; ".join(why), tally.figures())


class ShadowScorer:
    """A candidate model beside a pipeline's current one (processing thread only)."""

    def __init__(self, candidate: ModelLike, threshold: float, rules: ShadowSettings, *, started: float) -> None:
        self.candidate = candidate
        self.threshold = threshold
        self.rules = rules
        self.started = started
        self.tally = Tally()

    @property
    def done(self) -> bool:
        """Enough windows seen: the candidate scores no more."""
        return self.tally.windows >= self.rules.windows

    def observe(self, windows: NDArray[np.float32], current: NDArray[Any], current_threshold: float) -> None:
        """The windows the current model just scored, and its scores: the candidate scores them
        too. Never raises: a failure of the candidate counts as an error."""
        if self.done:
            return
        import time

        t = self.tally
        n = int(windows.shape[0])
        t0 = time.perf_counter()
        try:
            scores = np.asarray(score_windows(self.candidate, windows), dtype=np.float64).reshape(-1)
            if scores.shape[0] != n:
                raise ValueError(f"{scores.shape[0]} scores for {n} windows")
        except Exception as exc:  # the candidate's own failure, whatever its class
            t.seconds += time.perf_counter() - t0
            t.windows += n
            t.errors += 1
            log.warning("shadow candidate failed on %d window(s): %s", n, exc)
            return
        t.seconds += time.perf_counter() - t0
        cur = np.asarray(current, dtype=np.float64).reshape(-1)
        mine = scores > self.threshold
        theirs = cur > current_threshold
        t.windows += n
        t.alerts += int(mine.sum())
        t.current_alerts += int(theirs.sum())
        t.agreed += int((mine == theirs).sum())
        t.errors += int((~np.isfinite(scores) & np.isfinite(cur)).sum())

    def verdict(self, now: float) -> Verdict | None:
        return judge(self.tally, self.rules, timed_out=now - self.started >= self.rules.timeout_s)

    def status(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "needed": self.rules.windows,
            "started": self.started,
            **self.tally.figures(),
        }
