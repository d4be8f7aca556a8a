"""`edgeline-gateway device-config` end to end: the CLI -> the running gateway's control
socket -> CMD_CONFIG over the real Mosquitto -> the real firmware (MicroPython unix port)
-> its acknowledgement EVENT -> the CLI's answer and the device's local state topic."""

from __future__ import annotations

import json
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gateway.control_socket import socket_path
from gateway.rawlog import read_all
from shared_protocol import CMD, CMD_CONFIG, DATA
from shared_protocol.decode import decode
from shared_protocol.gw_topics import state_topic
from tests.firmware.simdevice import SimDevice, base_config
from tests.gateway.mqtt_util import Client
from tests.support.upy import ROOT
from tests.support.waiting import wait_until
from tools.mosquitto import Mosquitto

IMU = ["imu_ax", "imu_ay", "imu_az", "imu_gx", "imu_gy", "imu_gz"]


def gateway_config(tmp_path: Path, port: int) -> Path:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(
        f"""
[gateway]
id = "gw-cfg"
site = "s1"
data_dir = "{tmp_path / "gw"}"
status_interval_s = 0.2

[mqtt]
host = "127.0.0.1"
port = {port}

[web]
enabled = false

[state]
interval_s = 0.2

[[pipelines]]
name = "vibration"
model = "{ROOT / "models" / "vibration_anomaly_int8.json"}"
devices = ["pump-*"]
channels = {json.dumps(IMU)}
"""
    )
    return cfg


def cli(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "device-config", "-c", str(cfg), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@contextmanager
def running_gateway(tmp_path: Path, cfg: Path) -> Iterator[subprocess.Popen[bytes]]:
    log = open(tmp_path / "gateway.log", "ab")  # noqa: SIM115 - closed below
    gw = subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "-c", str(cfg)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
    )
    log.close()
    try:
        wait_until(lambda: socket_path(tmp_path / "gw").exists(), timeout=30, what="the control socket")
        yield gw
    finally:
        gw.send_signal(signal.SIGTERM)
        gw.wait(30)
    assert gw.returncode == 0, (tmp_path / "gateway.log").read_text()


def periods(tmp_path: Path, device: str) -> list[int]:
    """period_us of every DATA frame of the device in the raw log, in order."""
    return [
        decode(r.payload).fields["period_us"]
        for r in read_all(tmp_path / "gw" / "rawlog.sqlite", device)
        if r.type == DATA
    ]


def show(cfg: Path, device: str) -> dict[str, Any]:
    """--show --json; {} while the gateway does not know the device yet."""
    res = cli(cfg, device, "--show", "--json")
    out: dict[str, Any] = json.loads(res.stdout)
    assert res.returncode == 0 or out.get("reason") == "unknown_device", res.stdout + res.stderr
    return out if res.returncode == 0 else {}


def test_device_config_from_the_cli_to_the_board_and_back(tmp_path: Path, mosquitto: Mosquitto) -> None:
    cfg = gateway_config(tmp_path, mosquitto.port)
    # no gateway running: a clear message, a non-zero exit
    res = cli(cfg, "pump-1", "--set", "batch=8")
    assert res.returncode == 2
    assert "no control socket" in res.stderr and "edgeline-gateway run" in res.stderr

    monitor = Client(mosquitto.host, mosquitto.port, client_id="monitor")
    monitor.subscribe("el/s1/+/cmd")
    monitor.subscribe(state_topic("el", "s1", "pump-1", "state"))
    fl = tmp_path / "flash-pump"
    dev: SimDevice | None = None
    try:
        with running_gateway(tmp_path, cfg):
            sock = socket_path(tmp_path / "gw")
            assert stat.S_IMODE(sock.stat().st_mode) == 0o600
            dev = SimDevice(fl, base_config(mosquitto.port, "pump-1")).start()
            wait_until(lambda: show(cfg, "pump-1").get("rates_hz") == [50.0], timeout=30, what="pump-1's BIRTH")

            # refused by the gateway, before anything is sent, each with what to do
            for args, exit_code, message in (
                (["--set", "colour=3"], 1, "unknown key 'colour': settable keys are sample_rate_hz, batch"),
                (["--set", "batch=5000"], 1, "batch must be an integer 1..1024, got 5000"),
                (["--set", "batch=2.5"], 1, "batch must be an integer"),
                (["--set", "sample_rate_hz=fast"], 2, "'fast' is not a number"),
                (
                    ["--threshold", "spectrum=0.4"],
                    1,
                    "unknown pipeline 'spectrum' (this gateway's pipelines: vibration)",
                ),
                (["--set", "batch"], 2, "write NAME=VALUE"),
                ([], 2, "nothing to change"),
            ):
                res = cli(cfg, "pump-1", *args)
                assert (res.returncode, message in res.stderr) == (exit_code, True), (args, res.stderr)
            res = cli(cfg, "pump-9", "--set", "batch=8")
            assert res.returncode == 1 and "unknown device 'pump-9'" in res.stderr

            # a change the board takes: applied live, acknowledged, in force
            res = cli(
                cfg,
                "pump-1",
                "--set",
                "sample_rate_hz=25",
                "--set",
                "batch=10",
                "--set",
                "health_interval_s=5",
                "--threshold",
                "vibration=0.42",
            )
            assert res.returncode == 0, res.stderr + (tmp_path / "gateway.log").read_text()
            assert "pump-1: applied: sample_rate_hz=25 batch=10 health_interval_s=5" in res.stdout
            assert "pump-1: pipeline vibration threshold 0.42" in res.stdout
            # the first CMD on the broker is this change: the refused ones never left the gateway
            _t, payload, _ = monitor.wait_for(lambda t, p: t == "el/s1/pump-1/cmd")
            frame = decode(payload)
            assert frame.type == CMD and frame.fields["op"] == CMD_CONFIG
            assert frame.fields["config"]["set"] == {"sample_rate_hz": 25, "batch": 10, "health_interval_s": 5}
            wait_until(lambda: 40000 in periods(tmp_path, "pump-1"), timeout=30, what="DATA at 25 Hz")
            # visible in the device's state topic (the live view)
            _t, payload, _ = monitor.wait_for(
                lambda t, p: t.endswith("/state") and json.loads(p)["config"].get("batch") == 10, timeout=15
            )
            assert json.loads(payload)["config"] == {"sample_rate_hz": 25.0, "batch": 10, "health_interval_s": 5}

            # a value the gateway lets through and the board refuses: the MPU-6050 makes 1000/n Hz
            res = cli(cfg, "pump-1", "--set", "sample_rate_hz=70")
            assert res.returncode == 1
            assert "pump-1: refused by the device (invalid)" in res.stderr and "sensor cannot make" in res.stderr

            # the change survives a power cut of the board: config.json on its flash
            dev.kill()
            dev = SimDevice(fl, None).start()
            wait_until(
                lambda: show(cfg, "pump-1")["boot"] == 2 and show(cfg, "pump-1")["rates_hz"] == [25.0],
                timeout=30,
                what="boot 2 at 25 Hz",
            )
            shown = show(cfg, "pump-1")
            assert shown["reported"]["config"] == {"sample_rate_hz": 25.0, "batch": 10, "health_interval_s": 5}
            assert shown["thresholds"]["vibration"]["override"] == 0.42
            st = json.loads((tmp_path / "gw" / "status.json").read_text())["device_config"]
            assert (st["refused:unknown_key"], st["refused:out_of_range"], st["refused:unknown_pipeline"]) == (1, 2, 1)
            assert (st["applied"], st["refused_by_device"], st["sent"]) == (1, 1, 2), st
        assert not socket_path(tmp_path / "gw").exists()

        # the threshold override is kept across a gateway restart, and can be dropped
        saved = json.loads((tmp_path / "gw" / "device_config.json").read_text())
        assert saved["thresholds"] == {"pump-1": {"vibration": 0.42}}
        with running_gateway(tmp_path, cfg):
            assert show(cfg, "pump-1")["thresholds"]["vibration"]["in_force"] == 0.42
            res = cli(cfg, "pump-1", "--threshold", "vibration=default")
            assert res.returncode == 0, res.stderr
            assert "(the pipeline's)" in res.stdout
            assert show(cfg, "pump-1")["thresholds"]["vibration"]["override"] is None
    finally:
        if dev is not None:
            dev.kill()
        monitor.close()
