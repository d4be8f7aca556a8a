"""edgeline-gateway replay: a recording played through the real pipeline (real LiteRT models)
scores every window exactly as offline scoring does, alerts on the fault only, restarts windows
per part, and refuses what does not fit with a message that says what to do."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gateway import scorecsv
from gateway.cli import main
from gateway.config import Config, from_dict
from gateway.inference import load_model
from gateway.recording import Part, Recording, windows
from gateway.replay import ReplayError, replay
from tools.train import sim_data

ROOT = Path(__file__).resolve().parents[2]
RATE = 100.0
T0 = 1.7e9
N_HEALTHY = 3001  # not a multiple of the hop nor of a frame: the part ends mid-frame
N_FAULT = 2500


def _recording(channels: tuple[tuple[str, str], ...] = sim_data.CHANNELS) -> Recording:
    healthy = sim_data.stream(N_HEALTHY, seed=3)
    fault = sim_data.stream(N_FAULT, seed=4, fault="bearing", severity=1.0)
    return Recording(
        channels=channels,
        rate_hz=RATE,
        parts=(
            Part(T0, healthy, np.zeros(N_HEALTHY, np.int8), "healthy"),
            Part(T0 + 3600.0, fault, np.ones(N_FAULT, np.int8), "bearing fault"),
        ),
        source="sim",
        fingerprint="0" * 64,
        label_names=("0", "1"),
    )


@pytest.fixture(scope="module")
def rec() -> Recording:
    return _recording()


def _config(tmp_path: Path, quant: str = "float32", **pipeline: Any) -> Config:
    p = {"name": "vib", "model": str(ROOT / f"models/vibration_anomaly_{quant}.json"), **pipeline}
    return from_dict(
        {
            "gateway": {"id": "gw1", "site": "s1", "data_dir": str(tmp_path / "live")},
            "pipelines": [p],
            "rules": [{"name": "stop", "on_alert_from": "pump-*", "device": "relay-1", "output": 0}],
        },
        base_dir=tmp_path,
    )


@pytest.mark.parametrize("quant", ["float32", "int8"])
def test_scores_equal_offline_scoring_exactly(tmp_path: Path, rec: Recording, quant: str) -> None:
    cfg = _config(tmp_path, quant)
    out = io.StringIO()
    res = replay(cfg, rec, device="pump-1", out=out)
    model = load_model(ROOT / f"models/vibration_anomaly_{quant}.json")
    ws = windows(rec, 128, 64)
    offline = np.asarray(model.score(ws.values), dtype=np.float32).reshape(-1)
    assert res.windows == len(ws) == len(res.scores)
    assert res.scores.dtype == np.float32
    assert np.array_equal(res.scores, offline), np.abs(res.scores - offline).max()
    # the CSV: same windows as offline (part, start, end time, label), scores round-trip float32
    path = tmp_path / "scores.csv"
    path.write_text(out.getvalue())
    rows = list(scorecsv.read(path))
    assert [r.part for r in rows] == ws.part.tolist()
    assert [r.start for r in rows] == ws.start.tolist()
    assert np.allclose([r.t_end for r in rows], ws.t_end, rtol=0, atol=1e-6)
    assert ws.labels is not None and [r.label for r in rows] == ws.labels.tolist()
    assert np.array_equal(np.asarray([r.score for r in rows], dtype=np.float32), offline)
    assert all(r.threshold == pytest.approx(model.manifest.output.threshold, rel=1e-8) for r in rows)
    # nothing of the live gateway's data_dir was made or touched
    assert not (tmp_path / "live").exists()


def test_alerts_on_the_fault_part_only(tmp_path: Path, rec: Recording) -> None:
    out = io.StringIO()
    res = replay(_config(tmp_path), rec, device="pump-1", out=out)
    path = tmp_path / "scores.csv"
    path.write_text(out.getvalue())
    rows = list(scorecsv.read(path))
    healthy = [r for r in rows if r.part == 0]
    fault = [r for r in rows if r.part == 1]
    assert healthy and not any(r.over or r.alert for r in healthy)
    assert sum(r.over for r in fault) > 0.9 * len(fault)
    assert fault[-1].alert  # raised on the fault and held to its end (nothing clears it)
    first = next(i for i, r in enumerate(fault) if r.alert)
    assert fault[first].over and not any(r.alert for r in fault[:first])
    c = res.pipelines["vib"]
    assert (c.windows, c.raised, c.cleared) == (len(rows), 1, 0)
    assert c.over == sum(r.over for r in rows)
    raised = [a for a in res.alerts if a.state == "raised"]
    assert len(raised) == 1 and raised[0].device == "pump-1" and not raised[0].historical
    # the rule's actuator command, decided as live (the gateway's clock follows the recording)
    assert [(cmd.rule, cmd.device) for cmd in res.commands] == [("stop", "relay-1")]
    assert T0 + 3600.0 <= raised[0].decided <= T0 + 3600.0 + N_FAULT / RATE
    assert "1 alert(s) raised" in res.summary()


def test_each_part_restarts_windows(tmp_path: Path, rec: Recording) -> None:
    # a third part that starts before the second ends (overlapping times): played after it
    extra = Part(T0 + 3610.0, sim_data.stream(700, seed=5), np.zeros(700, np.int8), "overlap")
    rec3 = Recording(rec.channels, rec.rate_hz, (*rec.parts, extra), rec.source, rec.fingerprint, rec.label_names)
    out = io.StringIO()
    replay(_config(tmp_path), rec3, device="pump-1", out=out, models=None)
    path = tmp_path / "scores.csv"
    path.write_text(out.getvalue())
    rows = list(scorecsv.read(path))
    for i, part in enumerate(rec3.parts):
        starts = [r.start for r in rows if r.part == i]
        assert starts == list(range(0, part.n - 128 + 1, 64)), i
        ends = [r.t_end for r in rows if r.part == i]
        assert ends[0] == pytest.approx(part.t0 + 127 / RATE)
    assert [r.part for r in rows] == sorted(r.part for r in rows)


def test_errors_say_what_does_not_fit(tmp_path: Path, rec: Recording) -> None:
    cfg = _config(tmp_path)
    empty = Recording(rec.channels, RATE, (), "empty.csv", "0" * 64)
    with pytest.raises(ReplayError, match="no samples"):
        replay(cfg, empty, device="pump-1", out=io.StringIO())
    with pytest.raises(ReplayError, match="--pipeline nope: no such pipeline; the configuration has vib"):
        replay(cfg, rec, device="pump-1", out=io.StringIO(), pipeline="nope")
    # other column names: which names differ, and the ways out
    renamed = tuple((f"imu_{n}", u) for n, u in rec.channels)
    other = Recording(renamed, RATE, rec.parts, "imu.csv", "0" * 64)
    with pytest.raises(ReplayError) as err:
        replay(cfg, other, device="pump-1", out=io.StringIO())
    msg = str(err.value)
    assert "device lacks channels ['ax'" in msg and "imu_ax (g)" in msg and "ax (g)" in msg
    assert "--device" not in msg and "--channels-as" in msg
    assert 'channels = ["imu_ax", "imu_ay", "imu_az", "imu_gx", "imu_gy", "imu_gz"]' in msg
    # ... which the pipeline's channels mapping fixes
    mapped = _config(tmp_path, channels=[n for n, _ in renamed])
    res = replay(mapped, other, device="pump-1", out=io.StringIO())
    assert res.windows == len(windows(rec, 128, 64))
    # a unit that differs
    wrong_unit = Recording(tuple((n, "m/s2" if u == "g" else u) for n, u in rec.channels), RATE, rec.parts, "u", "")
    with pytest.raises(ReplayError, match=r"m/s2.*--units"):
        replay(cfg, wrong_unit, device="pump-1", out=io.StringIO())
    # a device name the pipeline does not take
    only_pumps = _config(tmp_path, devices=["pump-*"])
    with pytest.raises(
        ReplayError, match=r"device name 'replay' does not match its devices \['pump-\*'\]: give --device"
    ):
        replay(only_pumps, rec, device="replay", out=io.StringIO())


def test_two_pipelines_need_pipeline(tmp_path: Path, rec: Recording) -> None:
    model = str(ROOT / "models/vibration_anomaly_int8.json")
    cfg = from_dict(
        {
            "gateway": {"id": "gw1", "site": "s1", "data_dir": str(tmp_path / "live")},
            "pipelines": [
                {"name": "a", "model": str(ROOT / "models/vibration_anomaly_float32.json")},
                {"name": "b", "model": model},
            ],
        },
        base_dir=tmp_path,
    )
    with pytest.raises(ReplayError, match="scored by pipelines a, b: choose the one to write with --pipeline"):
        replay(cfg, rec, device="pump-1", out=io.StringIO())
    res = replay(cfg, rec, device="pump-1", out=io.StringIO(), pipeline="b")
    assert res.pipeline == "b" and set(res.pipelines) == {"a", "b"}
    assert res.pipelines["a"].windows == res.pipelines["b"].windows == res.windows
    assert np.array_equal(res.scores, load_model(model).score(windows(rec, 128, 64).values).reshape(-1))


def test_cli_replays_a_csv(tmp_path: Path, rec: Recording, capsys: pytest.CaptureFixture[str]) -> None:
    part = rec.parts[1]
    csv_path = tmp_path / "pump.csv"
    header = "time," + ",".join(f"{n} [{u}]" for n, u in rec.channels) + ",label"
    lines = [header]
    for i, row in enumerate(part.values):
        lines.append(f"{part.t0 + i / RATE:.2f}," + ",".join(repr(float(x)) for x in row) + ",1")
    csv_path.write_text("\n".join(lines) + "\n")
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(
        f'[gateway]\nid = "gw1"\nsite = "s1"\ndata_dir = "{tmp_path / "live"}"\n\n'
        f'[[pipelines]]\nname = "vib"\nmodel = "{ROOT / "models/vibration_anomaly_int8.json"}"\n'
    )
    out = tmp_path / "scores.csv"
    assert main(["replay", "--config", str(cfg), "--device", "pump-7", str(csv_path), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    n = (N_FAULT - 128) // 64 + 1
    assert f"pipeline vib (written): {n} windows" in text and "1 alert(s) raised" in text
    rows = list(scorecsv.read(out))
    assert len(rows) == n and all(r.label == 1 for r in rows)
    offline = load_model(ROOT / "models/vibration_anomaly_int8.json").score(
        windows(Recording(rec.channels, RATE, (part,), "", ""), 128, 64).values
    )
    assert np.array_equal(np.asarray([r.score for r in rows], np.float32), np.asarray(offline, np.float32).reshape(-1))
    # an unknown pipeline: exit 2 and the message on stderr
    assert main(["replay", "--config", str(cfg), str(csv_path), "--pipeline", "x", "--out", str(out)]) == 2
    assert "no such pipeline" in capsys.readouterr().err


def test_cli_replays_a_raw_log_span_without_touching_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A board's int16 stream stored by a live gateway, replayed from its raw log: the live
    data_dir is only read, and the scores equal offline scoring of what the raw log holds."""
    from gateway.ingest import RawFrame
    from gateway.pipeline import Gateway
    from gateway.rawrec import read_rawlog
    from shared_protocol import ST_INT16
    from tests.gateway.doubles import Published
    from tests.support.simdevice import SimDevice

    scales = [1 / sim_data.ACCEL_LSB_PER_G] * 3 + [1 / sim_data.GYRO_LSB_PER_DPS] * 3
    chans = [(n, u, s, 0.0, ST_INT16, RATE) for (n, u), s in zip(sim_data.CHANNELS, scales, strict=True)]
    dev = SimDevice("pump-3", channels=chans)
    values = np.concatenate([sim_data.stream(1600, seed=8), sim_data.stream(1600, seed=9, fault="bearing")])
    raw = np.round(values / np.asarray(scales, np.float32)).astype(np.int16)
    cfg_path = tmp_path / "gateway.toml"
    cfg_path.write_text(
        f'[gateway]\nid = "gw1"\nsite = "s1"\ndata_dir = "{tmp_path / "live"}"\n\n'
        f'[[pipelines]]\nname = "vib"\nmodel = "{ROOT / "models/vibration_anomaly_int8.json"}"\n'
    )
    from gateway.config import load

    live_cfg = load(cfg_path)
    t = T0
    live = Gateway(live_cfg, Published(), clock=lambda: t)
    live.process([RawFrame(dev.topic("birth"), dev.birth(), t)])
    for k in range(0, len(raw), dev.nsamples):
        t = T0 + (k + dev.nsamples) / RATE
        live.process([RawFrame(dev.topic("data"), dev.data(raw[k : k + dev.nsamples]), t)])
    assert live.close()
    data_dir = tmp_path / "live"

    def files() -> dict[str, bytes]:  # SQLite's -wal / -shm: a reader of a WAL database makes them
        return {
            p.name: p.read_bytes() for p in data_dir.iterdir() if p.is_file() and not p.name.endswith(("-wal", "-shm"))
        }

    before = files()
    out = tmp_path / "scores.csv"
    argv = ["replay", "-c", str(cfg_path), "--rawlog", "pump-3", "--since", str(T0 - 60), "--to", str(t + 60)]
    assert main([*argv, "--out", str(out)]) == 0
    assert "device pump-3" in capsys.readouterr().out
    assert files() == before
    rec = read_rawlog(data_dir, "pump-3", T0 - 60, t + 60)
    assert rec.n_samples == len(raw) and np.array_equal(np.concatenate([p.values for p in rec.parts]), values)
    rows = list(scorecsv.read(out))
    offline = load_model(ROOT / "models/vibration_anomaly_int8.json").score(windows(rec, 128, 64).values)
    assert len(rows) == (len(raw) - 128) // 64 + 1
    assert np.array_equal(np.asarray([r.score for r in rows], np.float32), np.asarray(offline, np.float32).reshape(-1))
    assert not any(r.alert for r in rows if r.t_end < T0 + 1600 / RATE) and rows[-1].alert
