"""Per-device calibration (gateway/calibration.py) on the real pipeline with the committed
vibration model and real LiteRT: a device whose sensor reads twice what the training machines
read (its BIRTH declares twice the scale) alerts on most normal windows under the model's own
normalisation and threshold; after its calibration windows its normal windows meet the target
rate on fresh data and a bearing fault still alerts. The calibration survives a restart, a new
model (another sha256) calibrates afresh, and bad settings are refused with the key named."""

from __future__ import annotations

import json
import sys
from array import array
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gateway.calibration import CALIBRATED, NORMALISE, THRESHOLD, CalibrationControl, state_path
from gateway.config import ConfigError, from_dict
from gateway.devconfig import DeviceConfig
from gateway.inference import Model, load_model
from gateway.ingest import RawFrame
from gateway.pipeline import Gateway
from gateway.scoring import score_windows
from shared_protocol import ST_INT16
from tests.gateway.doubles import Published, RMSModel
from tests.support.simdevice import SimDevice
from tests.support.upy import ROOT

sys.path.insert(0, str(ROOT / "firmware"))
from sensorfw.boards.sim_signals import Vibration

RATE_HZ = 100.0
NS = 32
FLOAT_MODEL = ROOT / "models" / "vibration_anomaly_float32.json"
INT8_MODEL = ROOT / "models" / "vibration_anomaly_int8.json"
N = 240  # windows per phase
FAR = 0.02
T0 = 1_700_000_000.0


def channels(gain: float) -> list[tuple[str, str, float, float, int, float]]:
    """The MPU-6050 channels the model takes; gain 2: every reading decodes to twice the value."""
    return [(n, "g", gain / 16384, 0.0, ST_INT16, RATE_HZ) for n in ("ax", "ay", "az")] + [
        (n, "deg/s", gain / 131, 0.0, ST_INT16, RATE_HZ) for n in ("gx", "gy", "gz")
    ]


class Machine:
    """A simulated device: the firmware's vibration generator behind the real frame encoder."""

    def __init__(self, name: str, gain: float, seed: int) -> None:
        self.sim = SimDevice(name, channels=channels(gain), nsamples=NS)
        self.signal = Vibration(rate_hz=RATE_HZ, seed=seed)
        self.raw = array("h", [0] * (NS * 6))
        self.t = T0

    def frames(self, n: int, kind: str = "data") -> list[RawFrame]:
        out = []
        for _ in range(n):
            if kind == "birth":
                payload = self.sim.birth()
            else:
                self.signal.fill_raw(self.raw, NS)
                payload = self.sim.data(np.asarray(self.raw, dtype=np.int16).reshape(NS, 6))
            self.t += NS / RATE_HZ
            out.append(RawFrame(self.sim.topic(kind), payload, self.t))
        return out


def config(tmp: Path, model: Path = FLOAT_MODEL, **calibrate: Any) -> dict[str, Any]:
    return {
        "gateway": {"id": "gw1", "site": "s1", "data_dir": str(tmp / "data")},
        "pipelines": [
            {
                "name": "vib",
                "model": str(model),
                "calibrate": {"windows": N, "false_alarm_rate": FAR, **calibrate},
            }
        ],
        "summary": {"interval_s": 3600},
        "alerts": {"raise_after": 2},
    }


def gateway(tmp: Path, model: Path = FLOAT_MODEL, **calibrate: Any) -> tuple[Gateway, Published]:
    cfg = from_dict(config(tmp, model, **calibrate), base_dir=tmp)
    pub = Published()
    clock = [T0]
    gw = Gateway(cfg, pub, models={"vib": load_model(model)}, clock=lambda: clock[0])
    return gw, pub


def feed(gw: Gateway, m: Machine, windows: int) -> tuple[int, int]:
    """Feed frames that complete ``windows`` windows (hop 64 = 2 frames); returns (windows, windows
    over the device's threshold in force) from the interval summary."""
    gw.summaries.flush(0.0)
    frames = m.frames(2 * windows)
    for i in range(0, len(frames), 40):
        gw.process(frames[i : i + 40])
    rec = next(r for r in gw.summaries.flush(1.0) if r["device"] == m.sim.device)
    s = rec["scores"]["vib"]
    return s["windows"], s["alerts"]


def test_a_device_unlike_the_training_data_calibrates_and_still_alerts_on_a_fault(tmp_path: Path) -> None:
    gw, pub = gateway(tmp_path)
    cal = gw.calibrators()["vib"]
    model_thr = cal.model_threshold
    m = Machine("pump-7", gain=2.0, seed=5)
    gw.process(m.frames(1, "birth"))
    # 2 frames fill the first window (128 samples), then one window per 2 frames
    windows, over = feed(gw, m, N + 1)
    assert windows == N and cal.devices["pump-7"].phase == THRESHOLD
    assert over > windows // 2, f"only {over} of {windows} windows over the model's threshold"
    assert pub.kind("alert"), "the model's own threshold applies while the device calibrates"
    windows, over = feed(gw, m, N)
    st = cal.devices["pump-7"]
    assert st.phase == CALIBRATED and st.threshold is not None and st.mean is not None
    assert over > windows // 2  # phase 2 is judged by the model's normalisation and threshold too
    assert gw.alerts.threshold("pump-7", "vib", model_thr) == model_thr  # in force from the next batch on
    # fresh normal data of the same machine: at the target rate (within sampling noise)
    windows, over = feed(gw, m, 600)
    assert gw.alerts.threshold("pump-7", "vib", model_thr) == st.threshold
    assert windows == 600 and over / windows <= 2.5 * FAR, f"{over} of {windows} over the calibrated threshold"
    alerts_before = len(pub.kind("alert"))
    m.signal.set_fault("bearing", 0.8)
    windows, over = feed(gw, m, 40)
    assert over >= windows // 2, f"the bearing fault: {over} of {windows} windows over"
    raised = [json.loads(p) for _, p, _ in pub.kind("alert")[alerts_before:]]
    assert any(r["state"] == "raised" and r["threshold"] == pytest.approx(st.threshold) for r in raised), raised
    # an operator's threshold wins over the calibrated one
    gw.alerts.set_threshold("pump-7", "vib", 123.0)
    assert gw.alerts.threshold("pump-7", "vib", model_thr) == 123.0
    gw.alerts.set_threshold("pump-7", "vib", None)
    assert gw.alerts.threshold("pump-7", "vib", model_thr) == pytest.approx(st.threshold)
    # what `edgeline-gateway device-config --show` prints: the calibrated threshold in force
    shown = DeviceConfig(gw, tmp_path / "data")._show("pump-7")["thresholds"]["vib"]
    assert shown == {"override": None, "default": model_thr, "calibrated": st.threshold, "in_force": st.threshold}
    status = gw.status()["pipelines"]["vib"]["calibration"]
    d = status["devices"]["pump-7"]
    assert status["phases"] == {NORMALISE: 0, THRESHOLD: 0, CALIBRATED: 1}
    assert d["phase"] == CALIBRATED and d["windows"] == d["needed"] == N and d["threshold"] == st.threshold
    assert d["model_threshold"] == model_thr and d["calibrated_at"] is not None
    gw.close()


def test_scores_match_the_uncalibrated_path_until_calibrated(tmp_path: Path) -> None:
    """Phase 1 rows are scored exactly as score_windows scores them (the manifest's normalisation)."""
    gw, _ = gateway(tmp_path)
    stage = gw.stages[0]
    model = stage.model
    assert isinstance(model, Model)
    a, b = Machine("pump-1", 2.0, 1), Machine("pump-2", 1.0, 2)
    gw.process(a.frames(1, "birth") + b.frames(1, "birth"))
    captured: list[tuple[np.ndarray, np.ndarray]] = []
    cal = stage.calibration
    assert cal is not None
    real = cal.score

    def spy(model: Any, windows: np.ndarray, runs: Any) -> np.ndarray:
        scores = real(model, windows, runs)
        captured.append((windows.copy(), scores.copy()))
        return scores

    cal.score = spy  # type: ignore[method-assign]
    gw.process(a.frames(20) + b.frames(20))
    assert captured and sum(len(s) for _, s in captured) == 2 * 9
    for windows, scores in captured:
        np.testing.assert_array_equal(scores, score_windows(model, windows))
    gw.close()


def test_restart_resumes_and_a_new_model_calibrates_afresh(tmp_path: Path) -> None:
    gw, _ = gateway(tmp_path, normalise=False)
    m = Machine("pump-3", gain=2.0, seed=7)
    gw.process(m.frames(1, "birth"))
    feed(gw, m, N + 1)
    st = gw.calibrators()["vib"].devices["pump-3"]
    assert st.phase == CALIBRATED and st.mean is None  # normalise = false: the threshold only
    threshold = st.threshold
    sha = gw.stages[0].calibration.sha256  # type: ignore[union-attr]
    path = state_path(tmp_path / "data", "vib", sha)
    gw.close()
    saved = json.loads(path.read_text())
    assert saved["devices"]["pump-3"]["threshold"] == threshold and saved["model"]["sha256"] == sha

    gw, _ = gateway(tmp_path, normalise=False)  # a restart: the same data_dir
    again = gw.calibrators()["vib"].devices["pump-3"]
    assert again.phase == CALIBRATED and again.threshold == threshold
    feed(gw, m, 4)  # the threshold applies from the first batch on
    assert gw.alerts.threshold("pump-3", "vib", 0.0) == threshold
    # the control socket's requests, answered on the processing thread
    ctl = CalibrationControl(gw.calibrators)
    res = ctl.answer({"op": "calibration.status", "device": "pump-3"})
    assert res["ok"] and res["pipelines"]["vib"]["devices"]["pump-3"]["phase"] == CALIBRATED
    assert ctl.answer({"op": "calibration.reset", "device": "nobody"})["reason"] == "unknown_device"
    assert ctl.answer({"op": "calibration.status", "pipeline": "nope"})["reason"] == "unknown_pipeline"
    assert ctl.answer({"op": "calibration.reset", "device": "pump-3"}) == {
        "ok": True,
        "device": "pump-3",
        "pipelines": ["vib"],
    }
    assert "pump-3" not in gw.calibrators()["vib"].devices
    assert gw.alerts.threshold("pump-3", "vib", 0.5) == 0.5
    gw.close()

    gw, _ = gateway(tmp_path, INT8_MODEL, normalise=False)  # another model: another sha256
    cal = gw.calibrators()["vib"]
    assert cal.sha256 != sha and not cal.devices
    gw.process(m.frames(1, "birth"))
    feed(gw, m, 3)
    assert cal.devices["pump-3"].phase == THRESHOLD
    assert path.exists(), "the old model's calibration is kept for a rollback"
    gw.close()


@pytest.mark.parametrize(
    ("calibrate", "message"),
    [
        ({"windows": 100, "false_alarm_rate": 0.001}, "calibrate.false_alarm_rate: 0.001 of 100 windows"),
        ({"windows": 5}, "pipelines[0].calibrate.windows: expected 10..10000000, got 5"),
        ({"normalise": "yes"}, "pipelines[0].calibrate.normalise: expected true or false"),
        ({"window": 100}, "pipelines[0].calibrate.window: unknown key"),
        ({"false_alarm_rate": 0}, "pipelines[0].calibrate.false_alarm_rate: expected a fraction above 0"),
    ],
)
def test_bad_settings_name_the_key(tmp_path: Path, calibrate: dict[str, Any], message: str) -> None:
    data = config(tmp_path)
    data["pipelines"][0]["calibrate"] = calibrate
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        from_dict(data, base_dir=tmp_path)


def test_a_model_without_features_cannot_calibrate(tmp_path: Path) -> None:
    data = config(tmp_path)
    data["pipelines"][0]["calibrate"] = {"windows": N, "false_alarm_rate": FAR}
    cfg = from_dict(data, base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"pipelines\[0\]\.calibrate: pipeline vib's model has no feature spec"):
        Gateway(cfg, Published(), models={"vib": RMSModel(window=128, hop=64)})
    data["pipelines"][0]["calibrate"] = "on"
    with pytest.raises(ConfigError, match=r"pipelines\[0\]\.calibrate: expected a table"):
        from_dict(data, base_dir=tmp_path)


def _toml(tmp: Path, calibrate: str, name: str = "gateway.toml") -> Path:
    path = tmp / name
    path.write_text(
        f"""
[gateway]
id = "gw1"
site = "s1"
data_dir = "{tmp / "data"}"

[[pipelines]]
name = "vib"
model = "{FLOAT_MODEL}"
{calibrate}
"""
    )
    return path


def test_check_config_and_the_calibration_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.cli import main
    from gateway.control_socket import ControlSocket, socket_path

    path = _toml(tmp_path, "[pipelines.calibrate]\nwindows = 240\nfalse_alarm_rate = 0.02\n")
    assert main(["check-config", "-c", str(path), "--skip-models"]) == 0
    assert main(["check-config", "-c", str(path)]) == 0
    out = capsys.readouterr().out
    assert "calibrate per device: 240 windows to normalise, then 240 for a threshold at false-alarm rate 0.02" in out
    bad = _toml(tmp_path, "calibrate = { windows = 100, false_alarm_rate = 0.001 }", "bad.toml")
    assert main(["check-config", "-c", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "pipelines[0].calibrate.false_alarm_rate: 0.001 of 100 windows" in err and "at least 1000" in err

    gw, _ = gateway(tmp_path)
    m = Machine("pump-9", gain=2.0, seed=3)
    gw.process(m.frames(1, "birth"))
    feed(gw, m, 2 * N + 30)  # the rows of the batch that ends phase 1 do not count for phase 2
    assert gw.calibrators()["vib"].devices["pump-9"].phase == CALIBRATED
    gw.close()
    # no gateway running: the state files
    assert main(["calibration", "status", "-c", str(path)]) == 0
    captured = capsys.readouterr()
    assert "showing what the state files hold" in captured.err
    assert "pump-9" in captured.out and "calibrated" in captured.out
    assert main(["calibration", "reset", "pump-9", "-c", str(path)]) == 2

    # a running gateway answers on its control socket (its processing thread stands in here)
    gw, _ = gateway(tmp_path)
    ctl = CalibrationControl(gw.calibrators)
    sock = ControlSocket(socket_path(tmp_path / "data"), ctl.handle)
    sock.start()
    import threading

    stop = threading.Event()

    def processing() -> None:
        while not stop.wait(0.01):
            ctl.serve()

    t = threading.Thread(target=processing, daemon=True)
    t.start()
    try:
        assert main(["calibration", "status", "-c", str(path), "--device", "pump-9"]) == 0
        out = capsys.readouterr().out
        assert "pipeline vib: model 1.0.0" in out and "240 windows a phase, false-alarm rate 0.02" in out
        assert "pump-9" in out and "calibrated" in out and "threshold" in out
        assert main(["calibration", "reset", "pump-9", "-c", str(path)]) == 0
        assert capsys.readouterr().out.strip() == "device pump-9: calibrates again in vib"
        assert main(["calibration", "reset", "pump-9", "-c", str(path), "--pipeline", "other"]) == 1
        assert "pipeline 'other' does not calibrate" in capsys.readouterr().err
    finally:
        stop.set()
        t.join()
        sock.stop()
        gw.close()


def test_a_model_swapped_in_calibrates_afresh_and_a_rollback_finds_the_old_calibration(tmp_path: Path) -> None:
    """ScoringStage.swap_model, as a promoted update (gateway/updates/models.py) or a rollback calls it."""
    from gateway.scoring import ModelSpec

    gw, _ = gateway(tmp_path, normalise=False)
    m = Machine("pump-4", gain=2.0, seed=4)
    gw.process(m.frames(1, "birth"))
    feed(gw, m, N + 30)
    stage = gw.stages[0]
    first = stage.model
    threshold = gw.calibrators()["vib"].devices["pump-4"].threshold
    feed(gw, m, 2)
    assert threshold is not None and gw.alerts.threshold("pump-4", "vib", 0.0) == threshold
    candidate = load_model(INT8_MODEL)
    stage.swap_model(candidate, ModelSpec.of(candidate))
    cal = gw.calibrators()["vib"]
    assert cal.sha256 == candidate.manifest.sha256 and not cal.devices
    assert gw.alerts.threshold("pump-4", "vib", 0.0) == 0.0  # the old model's threshold is taken back
    feed(gw, m, 3)
    assert cal.devices["pump-4"].phase == THRESHOLD
    stage.swap_model(first, ModelSpec.of(first))  # rollback
    feed(gw, m, 2)
    assert gw.alerts.threshold("pump-4", "vib", 0.0) == threshold
    gw.close()
