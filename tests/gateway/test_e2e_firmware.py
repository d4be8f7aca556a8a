"""End to end: the real firmware (MicroPython unix port, sim board) -> Mosquitto -> gateway process.

A pump (MPU-6050 at 100 Hz) replays a recorded vibration: a healthy machine,
then a bearing fault. The gateway decodes every reading, windows and scores
them with the committed model (models/vibration_anomaly_int8.json), raises an
alert on the local broker once the fault shows, and a rule switches output 0
of a second device (the valve, also real firmware) on for half a second.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from array import array
from pathlib import Path
from typing import Any

import numpy as np

from gateway.rawlog import read_all
from shared_protocol import DATA
from shared_protocol.decode import Schema
from shared_protocol.np_decode import decode_data_many
from tests.firmware.simdevice import SimDevice, base_config
from tests.gateway.mqtt_util import Client
from tests.support.upy import ROOT
from tests.support.waiting import wait_until

sys.path.insert(0, str(ROOT / "firmware"))
from sensorfw.boards.sim_signals import Vibration

HEALTHY = 500  # samples (5 s at 100 Hz) before the bearing fault
FAULTY = 600
IMU = ["imu_ax", "imu_ay", "imu_az", "imu_gx", "imu_gy", "imu_gz"]


def replay_file(path: Path) -> np.ndarray:
    """Register values (6 int16 per row) of a healthy machine, then a bearing fault."""
    rows = []
    for fault, n in (("none", HEALTHY), ("bearing", FAULTY)):
        vib = Vibration(rate_hz=100.0, seed=7)
        vib.set_fault(fault, 1.0)
        buf = array("h", [0] * (6 * n))
        vib.fill_raw(buf, n)
        rows.append(np.asarray(buf, dtype=np.int16).reshape(n, 6))
    data = np.concatenate(rows)
    path.write_text("\n".join(" ".join(str(v) for v in r) for r in data) + "\n")
    return data


def gateway_config(tmp_path: Path, port: int) -> Path:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(
        f"""
[gateway]
id = "gw-e2e"
site = "s1"
data_dir = "{tmp_path / "gw"}"
status_interval_s = 0.2

[mqtt]
host = "127.0.0.1"
port = {port}

[summary]
interval_s = 2

[[pipelines]]
name = "vibration"
model = "{ROOT / "models" / "vibration_anomaly_int8.json"}"
devices = ["pump-*"]
channels = {json.dumps(IMU)}

[[rules]]
name = "valve"
on_alert_from = "pump-*"
pipeline = "vibration"
device = "valve-1"
output = 0
value = 1
duration_s = 0.5
cooldown_s = 30
"""
    )
    return cfg


def _subscribed(status_path: Path) -> bool:
    try:
        return bool(json.loads(status_path.read_text())["ingest"]["subscribed"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return False


def _on_then_off(text: str) -> bool:
    """The valve's output went on, and off again after that (sim board log lines)."""
    return "pin 12 -> 1" in text and text.index("pin 12 -> 1") < text.rfind("pin 12 -> 0")


def test_firmware_to_gateway_alert_and_actuator(tmp_path: Path, mosquitto: Any) -> None:
    replay = replay_file(tmp_path / "replay.txt")
    log = open(tmp_path / "gateway.log", "wb")  # noqa: SIM115 - closed below
    gw = subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "-c", str(gateway_config(tmp_path, mosquitto.port))],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    status_path = tmp_path / "gw" / "status.json"
    monitor = Client(mosquitto.host, mosquitto.port, client_id="monitor")
    monitor.subscribe("el/s1/+/alert")
    valve = pump = None
    try:
        wait_until(lambda: _subscribed(status_path), timeout=30, what="the gateway's SUBACK (status.json)")
        valve = SimDevice(
            tmp_path / "flash-valve",
            base_config(
                mosquitto.port,
                "valve-1",
                sample={"rate_hz": 5, "batch": 5},
                sensors=[{"type": "analog", "pin": 34}],
                outputs=[{"name": "valve", "pin": 12}],
            ),
            EDGELINE_SIM_VERBOSE=1,
        ).start()
        pump = SimDevice(
            tmp_path / "flash-pump",
            base_config(mosquitto.port, "pump-1", sample={"rate_hz": 100, "batch": 32}),
            EDGELINE_SIM_REPLAY=str(tmp_path / "replay.txt"),
            EDGELINE_SIM_DURATION_S=(HEALTHY + FAULTY) / 100 - 0.5,
            EDGELINE_SIM_DRAIN_S=5,
        ).start()
        _t, payload, _ = monitor.wait_for(lambda t, p: t == "el/s1/pump-1/alert", timeout=60)
        alert = json.loads(payload)
        assert pump.wait(60) == 0, pump.text()
        # the valve switches back after the command's duration
        valve.wait_for_output(_on_then_off, timeout=15, what="valve pin 12 on, then off")
    finally:
        for dev in (pump, valve):
            if dev is not None:
                dev.kill()
        gw.send_signal(signal.SIGTERM)
        gw.wait(30)
        monitor.close()
    log_text = (tmp_path / "gateway.log").read_text()
    assert gw.returncode == 0, log_text

    # The alert: the committed model, above its threshold, from live data.
    assert alert["device"] == "pump-1" and alert["pipeline"] == "vibration"
    manifest = json.loads((ROOT / "models" / "vibration_anomaly_int8.json").read_text())
    assert alert["model_version"] == manifest["version"] and alert["threshold"] == manifest["output"]["threshold"]
    assert alert["score"] > alert["threshold"]
    assert alert["historical"] is False

    # Every reading the pump sampled reached the raw log, decoded to exactly the replayed values.
    rows = [(r.seq, r.payload) for r in read_all(tmp_path / "gw" / "rawlog.sqlite", "pump-1") if r.type == DATA]
    reg = sqlite3.connect(f"file:{tmp_path / 'gw' / 'registry.sqlite'}?mode=ro", uri=True)
    channels = json.loads(reg.execute("SELECT channels FROM devices WHERE device = 'pump-1'").fetchone()[0])
    assert [c[0] for c in channels] == IMU and channels[0][1] == "g" and channels[3][1] == "deg/s"
    schema = Schema([tuple(c) for c in channels])
    errors: list[Any] = []
    batches = decode_data_many([r[1] for r in rows], schema, errors)
    assert not errors
    raw = np.concatenate([b.raw.reshape(-1, 6) for b in batches])
    values = np.concatenate([b.values.reshape(-1, 6) for b in batches])
    seqs = np.concatenate([b.seq for b in batches])
    assert np.all(np.diff(seqs.astype(np.int64)) > 0)
    n = len(raw)
    assert n >= HEALTHY + 200
    # The sampled stream is the replay, from wherever the sampler's first latch fell in it: the
    # chip's rows follow the simulated clock from the board's start, so a start-up slowed by a
    # busy machine begins later in the file (up to 3 s here; n above still bounds what is missing).
    starts = [k for k in range(300) if np.array_equal(raw[:50], replay[k : k + 50])]
    assert starts, f"the first 50 sampled rows are not a run of the replay file: {raw[:3].tolist()}"
    start = starts[0]
    np.testing.assert_array_equal(raw, replay[start : start + n])
    np.testing.assert_allclose(values[:, 2], replay[start : start + n, 2] / 16384.0, rtol=1e-6)  # az in g
    np.testing.assert_allclose(values[:, 3], replay[start : start + n, 3] / 131.0, rtol=1e-6)  # gx in deg/s

    # Windows were inferred; no alert from a window of the healthy machine.
    st = json.loads(status_path.read_text())
    pipe = st["pipelines"]["vibration"]
    assert pipe["windows_scored"] >= (n - 128) // 64, pipe
    assert pipe["unmatched_devices"] == {}
    frame_of_seq = {int(s): i for i, s in enumerate(seqs)}  # DATA frame index of each seq
    first_fault_frame = (HEALTHY - start) // 32
    assert frame_of_seq[alert["seq"]] >= first_fault_frame
    assert st["bad_frames"]["total"] == 0
    assert st["sequence"]["pump-1"]["duplicates"] == 0 and st["sequence"]["pump-1"]["gaps"] == 0

    # The actuator command reached the valve: output on, then off after its duration.
    vtext = valve.text() if valve is not None else ""
    assert _on_then_off(vtext), vtext + log_text
    assert st["commands"] == 1
