"""Each stage alone, with plain data: sequence, windows, raw log, registry, decisions."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gateway.config import RuleSection
from gateway.decisions import Decider, Summaries
from gateway.rawlog import LogRow, RawLog
from gateway.registry import Registry
from gateway.sequence import DUP, FILL, NEW, SequenceTracker
from gateway.timebase import DeviceClocks
from gateway.windows import StreamWindower, WindowSpec

# --------------------------------------------------------------------------- sequence


def test_sequence_new_dup_gap_fill() -> None:
    st = SequenceTracker()
    assert st.observe("d", 1, 10) == (NEW, 0)
    assert st.observe("d", 1, 11) == (NEW, 0)
    assert st.observe("d", 1, 11) == (DUP, 0)
    assert st.observe("d", 1, 15) == (NEW, 3)
    assert st.missing("d", 1) == [(12, 14)]
    assert st.observe("d", 1, 13) == (FILL, 0)
    assert st.missing("d", 1) == [(12, 12), (14, 14)]
    assert st.observe("d", 1, 13) == (DUP, 0)
    # Older than the first frame seen (a replay of what was sent before the gateway listened): new.
    assert st.observe("d", 1, 7) == (FILL, 0)
    assert st.missing("d", 1) == [(8, 9), (12, 12), (14, 14)]
    assert st.observe("d", 1, 7) == (DUP, 0)
    c = st.counters["d"]
    assert (c.frames, c.duplicates, c.gaps, c.missing_frames, c.recovered) == (8, 3, 1, 3, 2)


def test_sequence_boots_are_separate_and_old_boot_is_stale() -> None:
    st = SequenceTracker()
    st.observe("d", 7, 100)
    assert st.observe("d", 8, 0) == (NEW, 0)  # reboot: sequence restarts at the BIRTH, no gap
    assert st.observe("d", 8, 1) == (NEW, 0)
    assert st.current_boot("d") == 8
    assert st.observe("d", 7, 101) == (NEW, 0)  # a late frame of the old boot is still new...
    assert st.counters["d"].stale_boot == 0  # ...its stream exists already
    assert st.observe("d", 7, 100) == (DUP, 0)
    assert st.counters["d"].boots == 1 and st.counters["d"].gaps == 0
    # boot counter wraps at 65536: 0 is newer than 65535
    st.observe("e", 65535, 1)
    st.observe("e", 0, 1)
    assert st.current_boot("e") == 0


def test_sequence_missing_ranges_are_bounded_and_counted() -> None:
    st = SequenceTracker(max_missing_ranges=3)
    seq = 0
    for _ in range(6):
        seq += 2  # skip one each time
        st.observe("d", 1, seq)
    assert len(st.missing("d", 1)) == 3
    assert st.counters["d"].forgotten == 2


def test_sequence_export_restore_roundtrip() -> None:
    st = SequenceTracker()
    for s in (1, 2, 5):
        st.observe("d", 3, s)
    st2 = SequenceTracker()
    st2.restore("d", st.export("d"), st.current_boot("d"))
    assert st2.observe("d", 3, 2) == (DUP, 0)
    assert st2.observe("d", 3, 4) == (FILL, 0)
    assert st2.observe("d", 3, 6) == (NEW, 0)


def test_sequence_loss_answers_close_gaps_and_old_boots() -> None:
    from shared_protocol import LOSS_GONE, LOSS_UNSAVED, LOSS_UNUSED

    st = SequenceTracker()
    for s in (0, 1, 2, 6):
        st.observe("d", 1, s)
    assert st.wanted("d") == [(1, 3, 5)]
    assert st.mark_lost("d", 1, 4, 4, LOSS_GONE) == 1
    assert st.missing("d", 1) == [(3, 3), (5, 5)]
    assert st.mark_lost("d", 1, 4, 4, LOSS_GONE) == 0  # a repeated answer counts nothing
    st.observe("d", 2, 0)  # a reboot: boot 1's end is wanted too
    assert st.wanted("d") == [(1, 3, 3), (1, 5, 5), (1, 7, 0xFFFFFFFF)]
    # The device still holds 3, 5 and 7..9 (sent again), lost 10..12 with the power, used
    # nothing from 13 on. Its answer may come before the frames it re-sends.
    assert st.mark_lost("d", 1, 10, 12, LOSS_UNSAVED) == 3
    assert st.mark_lost("d", 1, 13, 0xFFFFFFFF, LOSS_UNUSED) == 0
    assert st.end("d", 1) == 13
    assert st.wanted("d") == [(1, 3, 3), (1, 5, 5), (1, 7, 9)]
    for s in (3, 5, 7, 8, 9):
        assert st.observe("d", 1, s) == (FILL, 0)
    assert st.wanted("d") == []
    assert st.lost("d", 1) == [(4, 4, LOSS_GONE), (10, 12, LOSS_UNSAVED)]
    # A frame reported lost that still arrives is stored and no longer counted.
    assert st.observe("d", 1, 11) == (FILL, 0)
    c = st.counters["d"]
    assert (c.lost_gone, c.lost_unsaved) == (1, 2)
    assert st.lost("d", 1) == [(4, 4, LOSS_GONE), (10, 10, LOSS_UNSAVED), (12, 12, LOSS_UNSAVED)]


# --------------------------------------------------------------------------- windows


def _push(w: StreamWindower, start: int, n: int, *, t0: float = 100.0, boot: int = 1, missing: int = 0):  # type: ignore[no-untyped-def]
    vals = np.arange(start, start + n, dtype=np.float32)[:, None] * np.ones((1, 2), dtype=np.float32)
    return w.push(
        vals, boot=boot, period_s=0.01, dev_time=start * 0.01, wall_time=t0 + start * 0.01, missing_samples=missing
    )


def test_windows_slide_with_hop_over_block_boundaries() -> None:
    w = StreamWindower(WindowSpec(8, 4), 2)
    assert _push(w, 0, 5) is None
    out = _push(w, 5, 10)  # 15 samples: windows start 0, 4 (8 would need 16)
    assert out is not None and len(out) == 2
    np.testing.assert_array_equal(out.values[1, :, 0], np.arange(4, 12))
    np.testing.assert_array_equal(out.end_index, [8, 12])
    assert out.end_time[0] == pytest.approx(100.07)
    out = _push(w, 15, 1)
    assert out is not None and len(out) == 1
    np.testing.assert_array_equal(out.values[0, :, 1], np.arange(8, 16))
    assert w.stats.windows == 3 and w.stats.samples == 16


def test_windows_gap_restarts_stream_and_counts_spanning_windows() -> None:
    w = StreamWindower(WindowSpec(8, 4), 2)
    _push(w, 0, 10)  # windows at 0 (end 8); pending starts 4, 8
    out = _push(w, 20, 12, missing=10)  # samples 10..19 lost
    # starts 4, 8, 12, 16 would span [10, 20): skipped; the stream restarts at 20
    assert w.stats.skipped_windows == 4 and w.stats.gaps == 1
    assert out is not None
    np.testing.assert_array_equal(out.values[:, 0, 0], [20, 24])  # windows start 20, 24
    gap = w.gaps[-1]
    assert gap.reason == "seq" and gap.samples == 10 and gap.skipped_windows == 4


def test_windows_time_jump_reboot_and_rate_change_are_gaps() -> None:
    w = StreamWindower(WindowSpec(4, 4), 1)
    v = np.zeros((4, 1), dtype=np.float32)
    w.push(v, boot=1, period_s=0.01, dev_time=0.0, wall_time=0.0)
    w.push(v[:2], boot=1, period_s=0.01, dev_time=0.04, wall_time=0.04)
    w.push(v, boot=1, period_s=0.01, dev_time=0.5, wall_time=0.5)  # device clock jumped
    assert w.gaps[-1].reason == "time" and w.gaps[-1].samples == 44
    w.push(v, boot=2, period_s=0.01, dev_time=0.0, wall_time=1.0)
    assert w.gaps[-1].reason == "boot"
    w.push(v, boot=2, period_s=0.02, dev_time=0.04, wall_time=1.04)
    assert w.gaps[-1].reason == "rate"
    # starts 4, 8, ..., 48 would have covered the 44 missing samples [6, 50): 12 windows not inferred
    assert w.stats.gaps == 3 and w.stats.skipped_windows == 12


def test_windows_time_holes_within_and_beyond_the_firmware_stamping_bound() -> None:
    # 50 Hz: the firmware stamps rows up to one period (+ 1 ms rounding) late, so frames
    # that disagree by that much are contiguous; a hole of 3 periods (ticks the port
    # dropped, after which the firmware starts a new frame) is a gap of 3 samples
    w = StreamWindower(WindowSpec(4, 4), 1)
    v = np.zeros((4, 1), dtype=np.float32)
    w.push(v, boot=1, period_s=0.02, dev_time=0.0, wall_time=0.0)
    w.push(v, boot=1, period_s=0.02, dev_time=0.08 + 0.021, wall_time=0.1)
    w.push(v, boot=1, period_s=0.02, dev_time=0.16, wall_time=0.16)
    assert w.stats.gaps == 0
    w.push(v, boot=1, period_s=0.02, dev_time=0.24 + 0.06, wall_time=0.3)
    assert w.stats.gaps == 1 and w.gaps[-1].reason == "time" and w.gaps[-1].samples == 3


# --------------------------------------------------------------------------- raw log


def _row(seq: int, received: float, size: int = 100, device: str = "d") -> LogRow:
    return LogRow(device, 1, seq, 2, 0, received, received, bytes([seq & 0xFF]) * size)


def test_rawlog_bounded_by_size_oldest_first(tmp_path: Path) -> None:
    log = RawLog(tmp_path / "r.sqlite", max_bytes=10_000, max_age_s=3600)
    now = time.time()
    for batch in range(10):
        log.commit_batch([_row(batch * 10 + i, now) for i in range(10)], now=now)
    st = log.stats()
    # 10 frames of 100 B (+24 B record header each) per chunk: 8 chunks fit in 10,000 B.
    assert st.stored_bytes <= 10_000 and st.chunks == 8 and st.frames == 80
    assert st.evicted_size == 20
    assert not log.has("d", 1, 19) and log.has("d", 1, 20) and log.has("d", 1, 99)
    log.close()
    # Reopened: the totals are recovered from the file.
    log2 = RawLog(tmp_path / "r.sqlite", max_bytes=10_000, max_age_s=3600)
    assert log2.stats().frames == st.frames and log2.stats().stored_bytes == st.stored_bytes
    log2.close()


def test_rawlog_bounded_by_age(tmp_path: Path) -> None:
    log = RawLog(tmp_path / "r.sqlite", max_bytes=1 << 30, max_age_s=60)
    now = time.time()
    log.commit_batch([_row(1, now - 120)], now=now - 120)
    log.commit_batch([_row(2, now - 30)], now=now)
    assert not log.has("d", 1, 1) and log.has("d", 1, 2)
    assert log.stats().evicted_age == 1
    log.close()


def test_rawlog_round_trip_time_queries_and_seq_state(tmp_path: Path) -> None:
    from gateway.rawlog import read_all, read_frames

    log = RawLog(tmp_path / "r.sqlite", max_bytes=1 << 30, max_age_s=3600)
    now = time.time()
    rows = [LogRow("d", 1, s, 2, 1, now + s, now + s + 0.01, bytes(range(s, s + 20))) for s in range(1, 6)]
    other = [LogRow("e", 3, 7, 4, 0, now, now, b"health")]
    assert log.commit_batch(rows[:3] + other, {"d": (1, [(1, 1, 3, [])])}, now=now) == 4
    assert log.commit_batch(rows[3:], {"d": (1, [(1, 1, 5, [])])}, now=now) == 2
    assert log.stats().frames == 6 and log.stats().chunks == 3
    # A state written before lost ranges and boot ends were kept loads with empty ones.
    assert log.load_seq_states() == {"d": (1, [(1, 1, 5, [], [], None)])}
    assert log.frames("d", now + 2, now + 4) == rows[1:4]  # exact rows back, across chunks
    assert [r.seq for r in log.around("d", now + 3, before_s=0.5, after_s=0.5)] == [3]
    log.close()
    assert read_frames(tmp_path / "r.sqlite", "d", now, now + 10, types=(2,)) == rows
    assert read_frames(tmp_path / "r.sqlite", "e", now - 1, now + 1) == other
    assert read_all(tmp_path / "r.sqlite", "d") == rows


# --------------------------------------------------------------------------- registry

CH = [("ax", "g", 0.001, 0.0, 1, 100.0)]


def test_registry_birth_health_death_silence_persist(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "reg.sqlite", health_history=3)
    t = 1000.0
    reg.on_birth("d1", boot=4, fw_version="2.0", channels=CH, at=t)
    for i in range(5):
        reg.on_health("d1", boot=4, fields={"rssi": -50 - i}, at=t + i)
    assert [h[2]["rssi"] for h in reg.health_history_of("d1")] == [-52, -53, -54]
    assert reg.on_death("d1", at=t + 10) is True
    assert not reg.devices["d1"].online
    assert reg.touch("d1", t + 9) is False  # a frame from before the DEATH does not revive it
    assert reg.touch("d1", t + 11) is True
    reg.touch("d2", t)
    gone = reg.check_silence(t + 130, 120)
    assert [g.device for g in gone] == ["d2"]
    reg.close()
    reg2 = Registry(tmp_path / "reg.sqlite")
    d1 = reg2.devices["d1"]
    assert d1.boot == 4 and d1.fw_version == "2.0" and d1.channels == tuple(tuple(c) for c in CH)
    assert d1.online and reg2.devices["d2"].state_reason == "silence"
    assert reg2.next_gateway_boot() != reg2.next_gateway_boot()
    reg2.close()


# --------------------------------------------------------------------------- time


def test_clocks_unwrap_ticks_and_replayed_frames_use_live_offset() -> None:
    clocks = DeviceClocks()
    clocks.set_tick_bits("d", 16)  # wraps every 65.536 s
    base = 5000.0
    dev0, wall0 = clocks.frame_times("d", 1, 65_000, base + 0.005)
    dev1, wall1 = clocks.frame_times("d", 1, 1_000, base + 1.541 + 0.002)  # wrapped
    assert dev1 - dev0 == pytest.approx(1.536)
    assert wall1 - wall0 == pytest.approx(1.536, abs=0.004)
    _, wall_h = clocks.frame_times("d", 1, 64_000, base + 30, live=False)
    assert wall_h == pytest.approx(wall0 - 1.0, abs=0.006)


# --------------------------------------------------------------------------- decisions


def _rule(**kw) -> RuleSection:  # type: ignore[no-untyped-def]
    base = {
        "name": "r",
        "on_alert_from": "pump-*",
        "device": "valve",
        "output": 2,
        "value": 1,
        "duration_s": 1.5,
        "cooldown_s": 10.0,
    }
    base.update(kw)
    return RuleSection(**base)  # type: ignore[arg-type]


def _decide(d: Decider, devices: list[str], scores: list[float], *, now: float, historical: bool = False) -> Any:
    n = len(devices)
    return d.decide(
        pipeline="p",
        devices=devices,
        window_end=np.arange(float(n)) + now - 1.0,
        received=np.full(n, now - 0.5),
        historical=np.full(n, historical),
        scores=np.asarray(scores),
        threshold=0.5,
        model_version="v1",
        now=now,
    )


def test_decider_raises_one_episode_per_device_and_rules_fire_on_transitions() -> None:
    d = Decider((_rule(), _rule(name="other", on_alert_from="fan-*")))
    alerts, cmds = _decide(d, ["pump-1", "pump-1", "fan-1", "pump-2"], [0.9, 0.95, 0.5, 2.0], now=10.0)
    # 0.5 is not > 0.5; pump-1's second window over belongs to its open episode.
    assert [(a.device, a.state, a.score) for a in alerts] == [("pump-1", "raised", 0.9), ("pump-2", "raised", 2.0)]
    assert alerts[0].to_record()["latency_ms"]["gateway"] == pytest.approx(500.0)
    assert alerts[0].alert_id == "pump-1/p/0-0"
    # The rule's cooldown lets one command through for both raises.
    assert len(cmds) == 1 and (cmds[0].device, cmds[0].output, cmds[0].duration_ms) == ("valve", 2, 1500)
    # pump-1 clears after 5 quiet windows (< 0.4 = 0.8 x 0.5); 0.45 is quiet for nobody: it resets the run.
    alerts, _ = _decide(d, ["pump-1"] * 4 + ["pump-1"] + ["pump-1"] * 5, [0.1] * 4 + [0.45] + [0.1] * 5, now=11.0)
    (cleared,) = alerts
    assert cleared.state == "cleared" and cleared.windows == 12 and cleared.windows_over == 2
    assert cleared.peak == 0.95 and cleared.cleared_at == cleared.window_end
    # A new episode after the cooldown fires the rule again.
    alerts, cmds = _decide(d, ["pump-1"], [1.0], now=25.0)
    assert [a.state for a in alerts] == ["raised"] and len(cmds) == 1
    assert d.rule_stats()[0] == {"rule": "r", "fired": 2, "suppressed": 1}


def test_summaries_match_numpy() -> None:
    rng = np.random.default_rng(1)
    s = Summaries(10.0, start=0.0)
    blocks = [rng.normal(size=(n, 2)).astype(np.float32) for n in (5, 17, 40)]
    for b in blocks:
        s.add_values("d", ("a", "b"), b)
    s.add_scores("d", "p", np.array([0.1, 0.7, 0.3]), 0.5)
    s.add_gap("d")
    assert not s.due(5.0) and s.due(10.0)
    (rec,) = s.flush(10.0)
    allv = np.concatenate(blocks).astype(np.float64)
    assert rec["count"] == 62 and rec["gaps"] == 1
    for i, name in enumerate(("a", "b")):
        ch = rec["channels"][name]
        assert ch["mean"] == pytest.approx(allv[:, i].mean(), abs=1e-9)
        assert ch["std"] == pytest.approx(allv[:, i].std(), abs=1e-9)
        assert ch["min"] == pytest.approx(allv[:, i].min()) and ch["max"] == pytest.approx(allv[:, i].max())
    sc = rec["scores"]["p"]
    assert sc["alerts"] == 1 and sc["windows"] == 3 and sc["max"] == 0.7
    assert sc["std"] == pytest.approx(np.std([0.1, 0.7, 0.3]))
    assert s.flush(20.0) == []
    assert not math.isnan(ch["std"])


def test_sequence_runs_take_the_fast_path_only_when_clean() -> None:
    st = SequenceTracker()
    assert st.observe_run("d", 1, 5, 9) == 0
    assert st.observe_run("d", 1, 12, 20) == 2  # 10, 11 missing
    assert st.missing("d", 1) == [(10, 11)]
    assert st.observe_run("d", 1, 20, 22) is None  # overlaps: frame by frame instead
    assert st.observe("d", 1, 10) == (FILL, 0)
    assert st.counters["d"].frames == 5 + 9 + 1


def test_clock_runs_match_frame_by_frame() -> None:
    a, b = DeviceClocks(), DeviceClocks()
    ticks = np.array([1000 + 320 * i for i in range(10)], dtype=np.uint32)
    recv = 5000.0 + 0.32 * np.arange(10) + np.array([5, 3, 9, 2, 7, 4, 4, 8, 6, 3]) * 1e-3
    dev_run, wall_run = a.run_times("d", 1, ticks, recv, age_ms=310)
    singles = [b.frame_times("d", 1, int(t), float(r), age_ms=310) for t, r in zip(ticks, recv, strict=True)]
    np.testing.assert_allclose(dev_run, [s[0] for s in singles])
    # Both learn the same minimum offset by the end of the run (frame 3 has the least delay).
    _, w_a = a.frame_times("d", 1, 4200, 5011.0, age_ms=310)
    _, w_b = b.frame_times("d", 1, 4200, 5011.0, age_ms=310)
    assert w_a == pytest.approx(w_b)
    assert wall_run[3] == pytest.approx(singles[3][1])


def test_summaries_stay_exact_for_large_offsets_across_folds() -> None:
    rng = np.random.default_rng(2)
    s = Summaries(10.0, start=0.0)
    blocks = [(1000.0 + 0.01 * rng.normal(size=(n, 1))).astype(np.float32) for n in (63, 7, 64, 33)]
    s.add_values("d", ("t",), blocks[0])
    s.add_blocks([("d", ("t",), b) for b in blocks[1:]])  # one batch: the same device three times
    (rec,) = s.flush(10.0)
    allv = np.concatenate(blocks).astype(np.float64)
    assert rec["count"] == len(allv)
    assert rec["channels"]["t"]["std"] == pytest.approx(allv.std(), rel=1e-9)
    assert rec["channels"]["t"]["mean"] == pytest.approx(allv.mean(), rel=1e-12)


def test_summaries_of_many_devices_in_one_batch_and_a_schema_change() -> None:
    rng = np.random.default_rng(4)
    s = Summaries(10.0, start=0.0)
    data: dict[str, list[np.ndarray]] = {f"d{i}": [] for i in range(40)}  # more rows than a table starts with
    for _ in range(3):
        batch = []
        for device, blocks in data.items():
            b = rng.normal(size=(int(rng.integers(1, 40)), 2)).astype(np.float32)
            blocks.append(b)
            batch.append((device, ("a", "b"), b))
        s.add_blocks(batch)
    # d0 changes its channel list: its statistics start afresh, in the new columns only.
    new = rng.normal(size=(5, 3)).astype(np.float32)
    s.add_values("d0", ("x", "y", "z"), new)
    s.add_values("d1", ("a", "b"), data["d1"][0])  # d1 still in the first table
    data["d1"].append(data["d1"][0])
    recs = {r["device"]: r for r in s.flush(10.0)}
    assert set(recs) == set(data)
    assert recs["d0"]["count"] == 5 and set(recs["d0"]["channels"]) == {"x", "y", "z"}
    assert recs["d0"]["channels"]["z"]["max"] == pytest.approx(float(new[:, 2].max()))
    for device in ("d1", "d39"):
        allv = np.concatenate(data[device]).astype(np.float64)
        rec = recs[device]
        assert rec["count"] == len(allv)
        for i, name in enumerate(("a", "b")):
            assert rec["channels"][name]["mean"] == pytest.approx(allv[:, i].mean(), abs=1e-12)
            assert rec["channels"][name]["std"] == pytest.approx(allv[:, i].std(), abs=1e-12)
            assert rec["channels"][name]["min"] == pytest.approx(allv[:, i].min())
