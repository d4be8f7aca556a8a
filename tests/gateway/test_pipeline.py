"""The whole pipeline on plain data: raw frames in, publishes / raw log / registry out."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gateway.batch import ranges_of
from gateway.config import from_dict
from gateway.ingest import RawFrame
from gateway.pipeline import Gateway
from shared_protocol import CMD_REBIRTH, CMD_SET_OUTPUT, DATA, FLAG_HISTORICAL
from shared_protocol.decode import decode
from tests.gateway.doubles import Published, RMSModel
from tests.support.simdevice import SimDevice, device_of, historical


def make_gateway(
    tmp_path: Path,
    *,
    rules: list[dict[str, Any]] | None = None,
    model: RMSModel | None = None,
    extra: dict[str, Any] | None = None,
    clock: Any = None,
) -> tuple[Gateway, Published, list[Any]]:
    data: dict[str, Any] = {
        "gateway": {"id": "gw1", "site": "s1", "data_dir": str(tmp_path / "data")},
        "pipelines": [{"name": "vib", "model": "unused.json", "devices": ["pump-*"]}],
        "rules": rules or [],
        "summary": {"interval_s": 60},
    }
    data.update(extra or {})
    cfg = from_dict(data, base_dir=tmp_path)
    pub = Published()
    forwarded: list[Any] = []
    kwargs: dict[str, Any] = {}
    if clock is not None:
        kwargs["clock"] = clock
    gw = Gateway(
        cfg, pub, submit=lambda lane, rec: forwarded.append((lane, rec)), models={"vib": model or RMSModel()}, **kwargs
    )
    return gw, pub, forwarded


T0 = float(int(time.time()))


def frames(dev: SimDevice, kind: str, payloads: list[bytes], t: float = T0, step: float = 0.33) -> list[RawFrame]:
    """As received: one DATA frame of 32 samples at 100 Hz every 0.32 s (plus transport delay)."""
    return [RawFrame(dev.topic(kind), p, t + i * step) for i, p in enumerate(payloads)]


def acked(pub: Published, device: str) -> set[tuple[int, int]]:
    out = set()
    for topic, payload, qos in pub.kind("ack"):
        if device_of(topic) == device:
            assert qos == 1
            for boot, first, last in decode(payload).fields["ranges"]:
                out.update((boot, s) for s in range(first, last + 1))
    return out


def test_ranges_of_collapses_runs_per_boot() -> None:
    assert ranges_of([(1, 5), (1, 3), (1, 4), (1, 9), (2, 1), (1, 4)]) == [(1, 3, 5), (1, 9, 9), (2, 1, 1)]


def test_readings_decoded_stored_and_acked_after_commit(tmp_path: Path) -> None:
    gw, pub, _fwd = make_gateway(tmp_path)
    dev = SimDevice("pump-1")
    gw.process(frames(dev, "birth", [dev.birth()]))
    data = [dev.data() for _ in range(5)]
    gw.process(frames(dev, "data", data, T0 + 1))
    assert gw.counters.readings == 5 * 32 * 3
    # Every frame (BIRTH seq 1, DATA 2..6) is in the raw log and ACKed.
    assert acked(pub, "pump-1") == {(1, s) for s in range(1, 7)}
    for s in range(1, 7):
        assert gw.rawlog.has("pump-1", 1, s)
    info = gw.registry.devices["pump-1"]
    assert info.online and info.fw_version == "1.2.3" and info.channels is not None
    assert [c[0] for c in info.channels] == ["ax", "ay", "temp"]
    # Values through the raw-log reader match what the device sampled.
    from gateway.export import readings

    rows = gw.rawlog.frames("pump-1", 0, 2e9, types=(DATA,))
    schema = gw.schemas.get("pump-1")
    assert schema is not None
    t, v, skipped = readings(rows, schema)
    assert skipped == 0 and v.shape == (160, 3)
    expect = SimDevice("pump-1").raw_block()
    np.testing.assert_allclose(v[:32, 0], expect[:, 0] * 0.001, atol=1e-6)
    np.testing.assert_allclose(v[:, 2], 25.0, atol=1e-4)
    assert np.all(np.diff(t) > 0)
    gw.close()


def test_duplicates_dropped_gaps_counted_late_fill_recovered(tmp_path: Path) -> None:
    gw, pub, _ = make_gateway(tmp_path)
    dev = SimDevice("pump-1")
    gw.process(frames(dev, "birth", [dev.birth()]))
    f2, f3 = dev.data(), dev.data()
    dev.skip(3)  # seq 4, 5, 6 lost for now
    f7 = dev.data()
    gw.process(frames(dev, "data", [f2, f3, f3, f2, f7], T0 + 1))
    c = gw.sequence.counters["pump-1"]
    assert c.duplicates == 2
    assert c.gaps == 1 and c.missing_frames == 3
    assert gw.counters.data_frames == 3  # f2, f3, f7 once each
    # Duplicates are ACKed too (they are persisted), so the device can trim them.
    assert acked(pub, "pump-1") == {(1, 1), (1, 2), (1, 3), (1, 7)}
    assert gw.rawlog.stats().frames == 4
    # The lost frames arrive late (replayed): they fill the gap, are stored and ACKed.
    late = SimDevice("pump-1")
    late.seq = 3
    late.skip(0)
    replay = []
    for _ in range(3):
        late.ticks = dev.ticks  # any ticks: not used for ordering
        replay.append(historical(late.data()))
    gw.process(frames(dev, "data", replay, T0 + 2))
    assert c.recovered == 3 and c.duplicates == 2
    assert acked(pub, "pump-1") >= {(1, 4), (1, 5), (1, 6)}
    assert gw.pipeline_windows("pump-1")["late_frames"] == 3
    gw.close()


def test_gap_is_marked_and_spanning_windows_not_inferred(tmp_path: Path) -> None:
    model = RMSModel(window=64, hop=32)
    gw, _pub, _ = make_gateway(tmp_path, model=model)
    dev = SimDevice("pump-1")
    gw.process(frames(dev, "birth", [dev.birth()]))
    gw.process(frames(dev, "data", [dev.data() for _ in range(4)], T0 + 1))  # 128 samples
    w = gw.pipeline_windows("pump-1")
    assert w["windows"] == 3 and w["skipped_windows"] == 0  # starts 0, 32, 64
    dev.skip(2)  # 64 samples missing
    gw.process(frames(dev, "data", [dev.data() for _ in range(4)], T0 + 2))
    w = gw.pipeline_windows("pump-1")
    # Starts 96..191 would span the gap [128, 192): 96, 128, 160 -> 3 skipped.
    assert w["gaps"] == 1 and w["skipped_windows"] == 3
    # After the gap: 128 new samples -> starts 192, 224, 256 -> 3 more windows.
    assert w["windows"] == 6
    assert sum(model.calls) == 6
    gap = gw.stages[0].windower("pump-1").gaps[-1]
    assert gap.reason == "seq" and gap.samples == 64
    gw.close()


def test_unknown_device_gets_rebirth_request_and_data_is_kept(tmp_path: Path) -> None:
    gw, pub, _ = make_gateway(tmp_path)
    dev = SimDevice("pump-7")
    dev.birth()  # published before the gateway listened: the gateway never saw it
    early = [dev.data() for _ in range(3)]
    gw.process(frames(dev, "data", early, T0))
    cmds = pub.kind("cmd")
    assert len(cmds) == 1 and cmds[0][0] == "el/s1/pump-7/cmd"
    cmd = decode(cmds[0][1])
    assert cmd.fields["op"] == CMD_REBIRTH
    assert gw.counters.no_schema == 3 and gw.counters.readings == 0
    # Valid frames are durable and ACKed even without a schema.
    assert acked(pub, "pump-7") == {(1, 2), (1, 3), (1, 4)}
    gw.process(frames(dev, "data", [dev.data()], T0 + 0.5))
    assert len(pub.kind("cmd")) == 1  # rate-limited: one request per interval
    # The device answers with BIRTH: the held frames are decoded then.
    gw.process(frames(dev, "birth", [dev.birth()], T0 + 1))
    assert gw.counters.readings == 0  # pending frames are windowed, not recounted as new
    assert gw.pipeline_windows("pump-7")["samples"] == 4 * 32
    gw.close()


def test_malformed_frames_counted_without_disturbing_other_devices(tmp_path: Path) -> None:
    gw, pub, _ = make_gateway(tmp_path)
    good, bad = SimDevice("pump-1"), SimDevice("pump-2")
    gw.process(frames(good, "birth", [good.birth()]) + frames(bad, "birth", [bad.birth()]))
    ok = bad.data()
    corrupt = bytearray(bad.data())
    corrupt[30] ^= 0xFF  # CRC mismatch
    truncated = bad.data()[:10]
    batch = (
        frames(good, "data", [good.data(), good.data()])
        + frames(bad, "data", [ok, bytes(corrupt), truncated])
        + [RawFrame("el/s1/pump-2/data", SimDevice("pump-2").birth(), T0)]  # a BIRTH on a data topic
        + [RawFrame("el/s1/bad device/data", b"\x01", T0), RawFrame("el/s1/pump-2/nonsense", b"x", T0)]
        + frames(good, "data", [good.data()])
    )
    gw.process(batch)
    assert gw.counters.data_frames == 4  # 3 of pump-1, 1 of pump-2
    counts = gw.bad.counts
    assert counts["pump-2"]["crc"] == 1
    assert counts["pump-2"]["truncated"] == 1
    assert counts["pump-2"]["type"] == 1
    assert counts["pump-2"]["topic"] == 1
    assert counts["?"]["topic"] == 1
    assert gw.bad.total == 5 and len(gw.bad.sample) == 5
    gw.process([RawFrame("el/s1/pump-2/death", b"", T0)])  # a retained DEATH being cleared
    assert gw.bad.total == 5 and gw.counters.empty == 1
    assert {s["reason"] for s in gw.bad.sample} == {"crc", "truncated", "type", "topic"}
    assert acked(pub, "pump-1") == {(1, s) for s in range(1, 5)}
    st = gw.status()
    assert st["bad_frames"]["by_device"]["pump-2"]["crc"] == 1
    gw.close()


def test_alert_published_forwarded_and_rule_drives_actuator(tmp_path: Path) -> None:
    now = [T0 + 10]
    rules = [
        {
            "name": "valve",
            "on_alert_from": "pump-*",
            "device": "valve-1",
            "output": 0,
            "value": 1,
            "duration_s": 5.0,
            "cooldown_s": 60.0,
        }
    ]
    gw, pub, fwd = make_gateway(tmp_path, rules=rules, clock=lambda: now[0])
    dev = SimDevice("pump-1")
    gw.process(frames(dev, "birth", [dev.birth()]))
    gw.process(frames(dev, "data", [dev.data() for _ in range(4)], T0 + 1))
    assert not pub.kind("alert")  # 1 g sine: RMS 0.707 < 1.5
    fault = dev.raw_block(lambda t: np.stack([4000 * np.sin(2 * np.pi * 37 * t), 0 * t, 0 * t], axis=1))
    gw.process(frames(dev, "data", [dev.data(fault), dev.data(fault)], T0 + 2))
    alerts = pub.kind("alert")
    assert alerts, "a 4 g vibration must raise an alert"
    topic, payload, qos = alerts[0]
    assert topic == "el/s1/pump-1/alert" and qos == 1
    rec = json.loads(payload)
    assert rec["device"] == "pump-1" and rec["pipeline"] == "vib"
    assert rec["score"] > rec["threshold"] == 1.5 and rec["model_version"] == "rms-test-1"
    assert rec["received"] == pytest.approx(T0 + 2.0, abs=1e-6) and "gateway" in rec["latency_ms"]
    # The first fault frame (seq 6: BIRTH 1, healthy 2..5) completed the first alerting window.
    assert (rec["boot"], rec["seq"]) == (1, 6)
    assert [lane for lane, _ in fwd].count("alert") == len(alerts)
    cmds = [decode(p) for t, p, _ in pub.kind("cmd") if t == "el/s1/valve-1/cmd"]
    assert len(cmds) == 1  # cooldown: one command for the burst of alerts
    assert cmds[0].fields["op"] == CMD_SET_OUTPUT
    assert struct.unpack("<BBI", cmds[0].fields["arg"]) == (0, 1, 5000)
    assert len(alerts) == 1 and rec["state"] == "raised"  # two windows over: one episode
    # Healthy windows clear the episode (5 in a row below 0.8 x threshold); no clear_value: no command.
    gw.process(frames(dev, "data", [dev.data() for _ in range(7)], T0 + 3))
    assert [json.loads(p)["state"] for _, p, _ in pub.kind("alert")] == ["raised", "cleared"]
    # Replayed (historical) data may alert but never drives an actuator.
    now[0] += 120
    gw.process(frames(dev, "data", [historical(dev.data(fault)) for _ in range(3)], T0 + 4))
    assert len([1 for t, _, _ in pub.kind("cmd") if t == "el/s1/valve-1/cmd"]) == 1
    last = json.loads(pub.kind("alert")[-1][1])
    assert last["historical"] is True and last["state"] == "raised"
    gw.close()


def test_registry_health_death_and_summaries(tmp_path: Path) -> None:
    now = [T0]
    gw, _pub, fwd = make_gateway(tmp_path, clock=lambda: now[0])
    dev = SimDevice("pump-1")
    gw.process(frames(dev, "birth", [dev.birth()]))
    gw.process(frames(dev, "health", [dev.health(rssi=-70)], T0 + 1))
    gw.process(frames(dev, "data", [dev.data() for _ in range(4)], T0 + 2))
    gw.process(frames(dev, "death", [dev.death()], T0 + 3))
    info = gw.registry.devices["pump-1"]
    assert not info.online and info.state_reason == "death"
    assert info.last_health["rssi"] == -70
    assert gw.registry.health_history_of("pump-1")[0][2]["rssi"] == -70
    assert [r["event"] for lane, r in fwd if lane == "registry"] == ["birth", "offline"]
    now[0] = T0 + 61
    gw.tick()
    summaries = [r for lane, r in fwd if lane == "summary"]
    assert len(summaries) == 1
    s = summaries[0]
    assert s["device"] == "pump-1" and s["count"] == 128
    ax = SimDevice("pump-1").raw_block()[:, 0]
    ref = np.concatenate([ax] * 4) * 0.001  # the sine repeats every 10 samples: 4 equal frames
    assert s["channels"]["temp"]["mean"] == pytest.approx(25.0, abs=1e-4)
    assert s["channels"]["ax"]["max"] == pytest.approx(ref.max(), abs=1e-6)
    assert s["channels"]["ay"]["std"] == pytest.approx(0.0, abs=1e-6)
    assert s["scores"]["vib"]["windows"] == 3
    gw.close()


def test_summary_published_locally_without_forwarder(tmp_path: Path) -> None:
    cfg = from_dict(
        {"gateway": {"id": "gw1", "site": "s1", "data_dir": str(tmp_path / "d")}, "summary": {"interval_s": 1}}
    )
    pub = Published()
    now = [T0]
    gw = Gateway(cfg, pub, clock=lambda: now[0])
    dev = SimDevice("pump-1")
    gw.process(frames(dev, "birth", [dev.birth()]) + frames(dev, "data", [dev.data()]))
    now[0] += 2
    gw.tick()
    local = [p for p in pub if p[0] == "el/s1/_gateway/summary"]
    assert len(local) == 1 and json.loads(local[0][1])["count"] == 32
    gw.close()


def test_restart_keeps_sequence_state_so_replays_are_duplicates(tmp_path: Path) -> None:
    gw, _pub, _ = make_gateway(tmp_path)
    dev = SimDevice("pump-1")
    gw.process(frames(dev, "birth", [dev.birth()]))
    sent = [dev.data() for _ in range(3)]
    gw.process(frames(dev, "data", sent))
    gw.close()
    gw2, pub2, _ = make_gateway(tmp_path)
    assert gw2.registry.devices["pump-1"].channels is not None  # schema survives: no rebirth needed
    gw2.process(frames(dev, "data", [historical(f) for f in sent] + [dev.data()]))
    assert gw2.sequence.counters["pump-1"].duplicates == 3
    assert not pub2.kind("cmd")
    # The first ACK after the restart also repeats the BIRTH stored before it.
    assert acked(pub2, "pump-1") == {(1, 1), (1, 2), (1, 3), (1, 4), (1, 5)}
    assert gw2.rawlog.stats().frames == 5
    gw2.close()


def test_historical_flag_constant() -> None:
    assert historical(SimDevice("x").data())[2] & FLAG_HISTORICAL


def test_writer_thread_commits_then_acks_everything_in_order(tmp_path: Path) -> None:
    from gateway.batch import Commit
    from gateway.rawlog import RawLog

    gw, pub, _ = make_gateway(tmp_path)
    gw.start_writer(depth=2)
    dev = SimDevice("pump-1")
    gw.process(frames(dev, "birth", [dev.birth()]))
    for k in range(10):
        gw.process(frames(dev, "data", [dev.data() for _ in range(3)], T0 + k))
    gw.close()  # drains the writer
    assert acked(pub, "pump-1") == {(1, s) for s in range(1, 32)}
    log = RawLog(tmp_path / "data" / "rawlog.sqlite", max_bytes=1 << 30, max_age_s=1e9)
    assert log.stats().frames == 31
    assert log.load_seq_states()["pump-1"][1][0][2] == 31  # highest seq, committed with the frames
    log.close()
    # Grouped commits keep order: later sequence state wins, ACK lists concatenate.
    a = Commit(rows=[], seq_states={"d": (1, [(1, 1, 5, [])])}, registry_ops=[], acks={"d": [(1, 5)]}, now=1.0)
    b = Commit(rows=[], seq_states={"d": (1, [(1, 1, 9, [])])}, registry_ops=[], acks={"d": [(1, 9)]}, now=2.0)
    a.merge(b)
    assert a.seq_states["d"][1][0][2] == 9 and a.acks["d"] == [(1, 5), (1, 9)] and a.now == 2.0


def test_each_gateway_boot_numbers_its_commands_apart(tmp_path: Path) -> None:
    """A device skips a cmd_id among the last 8 it executed (QoS 1 duplicates): after a gateway
    restart the new boot's first commands must not reuse the ids of the last boot's."""
    ids = []
    for _ in range(2):
        gw, pub, _fwd = make_gateway(tmp_path)
        ids.append([gw.outbox.cmd("pump-1", CMD_REBIRTH, b"") for _ in range(3)])
        assert [decode(p).fields["cmd_id"] for _t, p, _q in pub.kind("cmd")] == ids[-1]
        gw.close()
    first, second = ids
    assert not set(first) & set(second)
    assert second[0] - first[0] == 1 << 16  # the next boot's block
