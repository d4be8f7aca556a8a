"""The naive baselines: their scores against plain per-window loops, what they detect, the
false-alarm rate they keep on normal data, and that only the training part tunes them."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.recording import Part, Recording, RecordingError, WindowSet, time_split, windows
from tools.train import baselines as bl

RATE = 50.0


def _rec(*parts: tuple[np.ndarray, np.ndarray | None], t0: float = 0.0) -> Recording:
    ps = []
    t = t0
    for x, lab in parts:
        ps.append(Part(t, x.astype(np.float32), None if lab is None else lab.astype(np.int8)))
        t += len(x) / RATE + 100.0
    nch = parts[0][0].shape[1]
    return Recording(
        channels=tuple((f"c{i}", "u") for i in range(nch)),
        rate_hz=RATE,
        parts=tuple(ps),
        source="test",
        fingerprint="0",
    )


def _noise(n: int, seed: int, nch: int = 2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, 1.0, (n, nch)) + np.array([100.0, -3.0][:nch])


def _zscore_loop(rec: Recording, ws: WindowSet, history: int) -> np.ndarray:
    """The definition, window by window (every window of the recording present)."""
    win = ws.values.shape[1]
    out = np.zeros(len(ws))
    for i in range(len(ws)):
        x = rec.parts[int(ws.part[i])].values.astype(np.float64)
        s = int(ws.start[i])
        h = x[max(0, s - history) : s]
        if h.shape[0] < min(history, win):
            continue
        z = np.abs(x[s : s + win].mean(axis=0) - h.mean(axis=0)) / np.maximum(h.std(axis=0), 1e-12)
        out[i] = z.max()
    return out


def test_zscore_matches_the_definition_across_parts_and_histories() -> None:
    rec = _rec((_noise(700, 1), None), (_noise(333, 2), None))
    ws = windows(rec, 32, 16)
    for history in (8, 32, 128, 512):
        np.testing.assert_allclose(bl.zscore_scores(ws, history), _zscore_loop(rec, ws, history), rtol=1e-7, atol=1e-9)
    # the first windows of each part have no history: scored 0
    s = bl.zscore_scores(ws, 32)
    assert s[ws.start < 32].tolist() == [0.0] * int((ws.start < 32).sum())
    assert (s[ws.start >= 32] > 0).all()


def test_zscore_history_never_reaches_into_windows_left_out() -> None:
    """A subset of windows (as after a split) uses only the samples it holds."""
    rec = _rec((_noise(2000, 3), None))
    ws = windows(rec, 32, 16)
    late = ws.take(np.arange(60, len(ws)))
    s = bl.zscore_scores(late, 64)
    # the subset's first windows have 0, 16, 32 samples before them in it: 32 (one window) is enough
    assert s[:2].tolist() == [0.0, 0.0] and (s[2:] > 0.0).all()
    # and a huge value before the subset changes nothing
    vals = ws.values.copy()
    vals[:60] += 1e6
    other = WindowSet(vals, ws.part, ws.start, ws.t_end).take(np.arange(60, len(ws)))
    np.testing.assert_allclose(bl.zscore_scores(other, 64), s)


def test_nan_samples_make_nan_windows_not_nan_history() -> None:
    x = _noise(1000, 4)
    x[300, 1] = np.nan
    ws = windows(_rec((x, None)), 32, 16)
    s = bl.zscore_scores(ws, 64)
    bad = (ws.start <= 300) & (ws.start + 32 > 300)
    assert np.isnan(s[bad]).all() and np.isfinite(s[~bad]).all()
    m = bl.mad_scores(ws, np.array([100.0, -3.0]), np.array([1.0, 1.0]))
    assert np.isnan(m[bad]).all() and np.isfinite(m[~bad]).all()


def test_mad_matches_the_definition() -> None:
    x = _noise(640, 5)
    ws = windows(_rec((x, None)), 64, 32)
    b = bl.fit_mad(ws, target_far=0.05)
    med = np.median(x.astype(np.float32).astype(np.float64), axis=0)
    mad = 1.4826 * np.median(np.abs(x.astype(np.float32) - med), axis=0)
    np.testing.assert_allclose(b.params["median"], med, rtol=1e-9)
    np.testing.assert_allclose(b.params["mad"], mad, rtol=1e-6)
    want = np.array([(np.abs(w - med) / mad).max() for w in ws.values.astype(np.float64)])
    np.testing.assert_allclose(b.score(ws), want, rtol=1e-6)


def _step_recording(seed: int, n: int = 20000) -> Recording:
    """Noise with a step (+6 sd on one channel) and a spike (one sample, +30 sd) in the last 40 %."""
    x = _noise(n, seed)
    lab = np.zeros(n, np.int8)
    x[15000:15400, 0] += 6.0
    lab[15000:15400] = 1
    x[18000, 1] += 30.0
    lab[18000] = 1
    return _rec((x, lab))


def test_baselines_detect_a_step_and_a_spike_and_keep_the_rate() -> None:
    rec = _step_recording(6)
    ws = windows(rec, 64, 32)
    train, test = time_split(ws, (0.6, 0.4))
    assert train.labels is not None and test.labels is not None and test.events is not None
    assert not train.labels.any() and set(np.unique(test.events)) == {-1, 0, 1}
    far = 0.01
    z = bl.fit_zscore(train, target_far=far)
    m = bl.fit_mad(train, target_far=far)
    # the threshold rule on the training part's normal windows: at most far of them above it
    assert (z.score(train) > z.threshold).mean() <= far
    assert (m.score(train) > m.threshold).mean() <= far
    zs, ms = z.score(test), m.score(test)
    step = test.events == 0
    spike = test.events == 1
    assert (zs[step] > z.threshold).any()  # the step's onset moves the window mean
    assert (ms[step] > m.threshold).any() and (ms[spike] > m.threshold).all()
    assert z.params["chosen_by"].startswith("longest")  # no anomaly in the training part
    assert z.params["history_windows"] == max(bl.HISTORY_WINDOWS)


def test_baselines_keep_the_target_rate_on_unseen_normal_data() -> None:
    ws = windows(_rec((_noise(100_000, 10), None)), 64, 32)
    train, test = time_split(ws, (0.6, 0.4))
    far = 0.01
    for fit in (bl.fit_zscore, bl.fit_mad):
        b = fit(train, target_far=far)
        rate = float((b.score(test) > b.threshold).mean())
        assert rate < 2.5 * far, (b.name, rate)  # 1250 windows: about 12 expected above


def test_zscore_history_is_chosen_by_separation_when_the_training_part_has_anomalies() -> None:
    rec = _step_recording(7)
    ws = windows(rec, 64, 32)
    b = bl.fit_zscore(ws, target_far=0.01)  # the whole set, steps included
    aucs = b.params["roc_auc_by_history_windows"]
    assert set(aucs) == {str(k) for k in bl.HISTORY_WINDOWS}
    assert b.params["history_windows"] == int(max(aucs, key=lambda k: aucs[k]))
    assert b.params["chosen_by"].startswith("roc_auc")


def test_tuned_on_the_training_part_only() -> None:
    a = _step_recording(8)
    ws_a = windows(a, 64, 32)
    x = a.parts[0].values.copy()
    x[12500:] *= 3.0  # another test part (the split is at about 12000 samples)
    b_rec = _rec((x, a.parts[0].labels))
    ws_b = windows(b_rec, 64, 32)
    tr_a, _ = time_split(ws_a, (0.6, 0.4))
    tr_b, _ = time_split(ws_b, (0.6, 0.4))
    for fit in (bl.fit_zscore, bl.fit_mad):
        fa, fb = fit(tr_a, target_far=0.01), fit(tr_b, target_far=0.01)
        assert fa.params == fb.params and fa.threshold == fb.threshold


def test_no_normal_training_windows_is_a_clear_error() -> None:
    x = _noise(400, 9)
    ws = windows(_rec((x, np.ones(400, np.int8))), 64, 32)
    with pytest.raises(RecordingError, match="no normal windows"):
        bl.fit_mad(ws, target_far=0.01)


def test_100k_windows_score_fast() -> None:
    import time

    rng = np.random.default_rng(0)
    ws = windows(_rec((rng.normal(size=(100_000 * 16 + 16, 6)).astype(np.float32), None)), 32, 16)
    assert len(ws) == 100_000
    z = bl.ZScoreBaseline(name="zscore", threshold=1.0, history=512)
    m = bl.MadBaseline(name="mad", threshold=1.0, median=(0.0,) * 6, mad=(1.0,) * 6)
    t = time.perf_counter()
    z.score(ws)
    m.score(ws)
    assert time.perf_counter() - t < 5.0  # about 0.3 s on a quiet machine; generous under load


def test_too_few_training_windows_for_the_rate_is_said() -> None:
    ws = windows(_rec((_noise(3200, 11), None)), 64, 32)  # 99 windows
    for fit in (bl.fit_zscore, bl.fit_mad):
        few = fit(ws, target_far=0.001)
        assert "cannot resolve a rate of 0.001" in few.params["threshold_note"]
        assert few.threshold == float(np.nanmax(few.score(ws)))
        assert "threshold_note" not in fit(ws, target_far=0.05).params
