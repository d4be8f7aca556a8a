"""The fleet demo's non-interactive run: the README's main job, checked end to end.

Real firmware on the unix port, real Mosquitto brokers (local and cloud), the real gateway with
the committed model. The story: pump-01 develops a bearing fault, pump-02 loses its network for a
while, the cloud is cut and comes back; room-04 runs the CircuitPython firmware.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.secretscan import check_tree
from tests.support.upy import ROOT
from tools.demo.fleet import DemoError, Fleet, VirtualDevice
from tools.demo.scenario import DEVICES

DURATION = 30.0


def test_fleet_demo_detects_the_fault_catches_up_and_loses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tools.demo",
            "--duration",
            str(DURATION),
            "--no-tui",
            "--workdir",
            str(tmp_path / "work"),
            "--output",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    text = result.stdout + result.stderr
    assert result.returncode == 0, text
    report = json.loads((out / "report.json").read_text())
    story = report["story"]

    # Every reading the boards made reached the gateway, outages included.
    assert report["nothing_lost"], text
    assert report["readings"] > 20_000, text
    assert report["gateway_readings"] == report["readings"], text
    for name, dev in report["devices"].items():
        assert dev["missing_seqs"] == 0, (name, text)
        assert dev["queue_dropped"] == 0, (name, text)

    # room-04 is a CircuitPython board (code.py, settings.toml, MiniMQTT): decoded, nothing lost.
    cp = json.loads((tmp_path / "work" / "devices" / "room-04" / "stats.json").read_text())
    assert cp["runtime"] == "circuitpython" and cp["board"] == "cp_esp32s3", cp
    assert report["devices"]["room-04"]["data_frames"] == cp["frames"] > 0, text
    assert report["devices"]["room-04"]["readings"] == 2 * cp["samples"], text

    # The injected bearing fault is detected on pump-01, after it starts; healthy pump-02 stays quiet.
    # One fault is one alert episode: raised once, then updates (not one alert per window).
    assert report["alerts_by_device"].get("pump-01", 0) == 1, text
    assert report["alert_records"]["raised"] == 1 and report["alert_records"]["updated"] >= 1, text
    assert "pump-02" not in report["alerts_by_device"], text
    first = report["first_alert_s"]["pump-01"] - story["monitor_lead_s"]
    assert first >= story["fault_at_s"]["pump-01"] - 1.0, text

    # The alert drove the valve on tank-03 (the firmware's output pin went high).
    assert report["actuator_commands"] >= 1, text
    history = report["actuator_history"]["tank-03"][0][2]
    assert any(level == 1 for _t, level in history), history

    # pump-02's outage was caught up by replaying its offline queue (frames flagged historical).
    assert report["devices"]["pump-02"]["replayed_frames"] > 0, text

    # The cloud outage was caught up: everything the forwarder accepted was delivered.
    cloud = report["cloud"]
    assert cloud["still_queued"] == 0, cloud
    assert cloud["missing"] == {}, cloud
    assert cloud["delivered"].get("alert", 0) == cloud["accepted"]["alert"] > 0, cloud
    assert cloud["delivered"].get("summary", 0) > 0, cloud

    # Compact frames: far fewer bytes than the same readings as JSON.
    assert report["wire_bytes_per_reading"] < 3.0, text
    assert report["json_bytes_per_reading"] > 5 * report["wire_bytes_per_reading"], text

    # The gateway's status page was open during the run; at the end it became one offline file
    # with the final fleet and plots embedded (and a screenshot, chromium being installed).
    assert re.search(r"demo: open http://127\.0\.0\.1:\d+/ while the demo runs", text), text
    page = (out / "status.html").read_text()
    assert 'data-page="snapshot"' in page and "<script src=" not in page  # nothing to fetch
    embedded = re.search(r'<script id="snapshot-data" type="application/json">(.*?)</script>', page, re.S)
    assert embedded is not None
    snap = json.loads(embedded.group(1))
    assert sorted(snap["devices"]) == sorted(report["devices"])
    pump = snap["devices"]["pump-01"]
    assert len(pump["history"]["t"]) > 50 and len(pump["history"]["scores"]["vibration"]["t"]) > 10
    assert pump["alerts"]["vibration"]["device"] == "pump-01"
    assert snap["status"]["forward"]["connection"]["state"] == "connected"
    assert (out / "status.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Mutual TLS on every hop, as the brokers themselves logged it: each board's session on the
    # device listener under its certificate's CN, the gateway's on the cloud under its own.
    sec = report["security"]
    assert sec["mtls"], sec
    assert sec["devices"] == {spec.device_id: spec.device_id for spec in DEVICES}, sec
    assert "demo-gw" in sec["cloud"].values(), sec
    assert "mutual TLS on every hop: yes" in text, text
    assert sec["at_rest"]["active_key"], sec  # the raw log and the forward queue encrypted
    assert "raw log and forward queue encrypted (AES-256-GCM" in text, text
    # Signed updates (docs/updates.md), from the cloud through the gateway: the model released
    # again is promoted after its shadow windows, a gateway.toml signed by a key the gateway does
    # not trust is refused with the reason, and one board takes new firmware over the air,
    # restarts into it (its BIRTH says so) and confirms it once its data is stored.
    up = report["updates"]
    assert up["model"]["state"] == "promoted" and up["model"]["figures"]["windows"] >= 20, up
    assert up["refused"]["state"] == "refused" and up["refused"]["code"] == "unknown_key", up
    assert up["firmware"]["state"] == "confirmed" and up["firmware"]["rollout"] == "done", up
    ota = report["devices"][up["firmware"]["device"]]
    assert ota["ota_commands"] > 100 and ota["fw_version"] == up["firmware"]["version"], ota
    assert up["board_resets"] == {up["firmware"]["device"]: 1}, up
    assert "promoted after 20 windows in shadow" in text and "signed by an untrusted key: refused" in text, text
    assert report["devices"]["pump-01"]["fw_version"] != up["firmware"]["version"]  # only that board
    updates_panel = snap["status"]["updates"]["current"]
    assert {"model/vibration", "config/gateway", "firmware/sensorfw-native"} <= set(updates_panel), updates_panel
    # No key or password of the run is in a log, a report, the output or a file open to others.
    secrets = check_tree(tmp_path, text)
    assert len(secrets) >= len(DEVICES) + 4, secrets  # the boards' keys, CAs, servers, gateway


def test_a_board_that_stops_early_fails_the_demo_with_its_log(tmp_path: Path) -> None:
    # A virtual board whose config.json is refused prints CONFIG ERROR and returns to the
    # REPL, which ends the unix port with 0: the demo must stop and say so, not report a
    # fleet of fewer boards with "nothing lost".
    bad = dataclasses.replace(
        DEVICES[0], sensors=[{"type": "analog", "name": "level", "pin": 14}]
    )  # GPIO 14 is an ADC2 pin on the ESP32: dead while Wi-Fi runs
    fleet = Fleet(tmp_path, "mosquitto", 20.0)
    fleet.devices = [VirtualDevice(bad, tmp_path)]
    fleet.devices[0].start(("127.0.0.1", 9), 20.0)  # the board stops before it connects
    try:
        with pytest.raises(DemoError, match=r"(?s)pump-01 stopped after .* of a 20 s run.*CONFIG ERROR.*ADC2"):
            fleet.wait_devices(60.0, lambda: None)
    finally:
        fleet.devices[0].stop()
