"""Firmware over the air end to end: a signed firmware bundle (the flash tool's build for the unix
port, packed as `edgeline-release pack firmware` does) installed on the real gateway process
(`update.install` on its control socket), sent by its rollout over a real Mosquitto to the real
firmware on the MicroPython unix port (main.py the A/B loader), each board provisioned with its
OTA key as the flash tool does it (tools/flash/ota_key.py).

1. One board: it receives the release, restarts into it, its BIRTH shows the new version, it
   confirms; `edgeline-gateway ota status` says so.
2. Three boards, a canary whose new firmware raises at start-up: the canary rolls back to its old
   firmware, the rollout halts, and the two other boards get nothing.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.control_socket import request, socket_path
from gateway.registry import read_devices
from tests.firmware.ota_board import OLD_VERSION, PoweredBoard
from tests.firmware.simdevice import SimDevice, base_config
from tests.support.upy import ROOT
from tests.support.waiting import wait_until
from tests.updates.conftest import ReleaseKey
from tools.flash.build import build
from tools.flash.ota_key import BOARD_PATH, obtain
from tools.mosquitto import Mosquitto
from tools.release.pack import build_bundle, firmware_files, firmware_metadata

NEW = "sensorfw-9.1.0"
NAME = "sensorfw-native"


@pytest.fixture(scope="module")
def fw_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The release's files as `edgeline-release pack firmware --build build/native` takes them."""
    out, _manifest = build("native", out_dir=tmp_path_factory.mktemp("build") / "native")
    files, _entry = firmware_files(out)
    return files


class Site:
    """The gateway process, its broker and boards provisioned with their OTA keys."""

    def __init__(self, tmp: Path, broker: Mosquitto, key: ReleaseKey, *, chunk_bytes: int = 2048, window: int = 4):
        self.tmp = tmp
        self.broker = broker
        self.release_key = key
        self.devices_dir = tmp / "ca" / "devices"  # the flash tool's private devices folder
        self.data_dir = tmp / "gw"
        self.boards: dict[str, PoweredBoard] = {}
        self.gateway: subprocess.Popen[bytes] | None = None
        self.config = tmp / "gateway.toml"
        self.config.write_text(
            f"""
[gateway]
id = "gw1"
site = "s1"
data_dir = "{self.data_dir}"
status_interval_s = 0.2

[mqtt]
host = "127.0.0.1"
port = {broker.port}

[updates]
enabled = true
trusted_keys = ["{key.pub_path}"]

[updates.firmware]
device_keys_dir = "{self.devices_dir}"
chunk_bytes = {chunk_bytes}
window = {window}
chunk_timeout_s = 5
confirm_timeout_s = 60
"""
        )

    def start_gateway(self) -> None:
        log = open(self.tmp / "gateway.log", "ab")  # noqa: SIM115 - the process holds it
        self.gateway = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "-c", str(self.config)],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_until(lambda: (self.status().get("ingest") or {}).get("subscribed"), 30, "the gateway's SUBACK")

    def status(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads((self.data_dir / "status.json").read_text())
            return data
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def add_board(self, device: str) -> PoweredBoard:
        flash = self.tmp / f"flash-{device}"
        flash.mkdir()
        (flash / BOARD_PATH).write_bytes(obtain(self.devices_dir / device))  # provisioning
        cfg = base_config(self.broker.port, device, sample={"rate_hz": 20, "batch": 8}, health_s=30)
        board = self.boards[device] = PoweredBoard(SimDevice(flash, cfg)).start()
        return board

    def wait_online(self, *devices: str) -> None:
        def online() -> bool:
            rows = {d["device"]: d for d in read_devices(self.data_dir / "registry.sqlite")}
            return all(d in rows and rows[d]["online"] for d in devices)

        wait_until(online, 30, f"{devices} online at the gateway")

    def install(self, files: dict[str, bytes], *, counter: int, **rollout: Any) -> dict[str, Any]:
        bundle = build_bundle(
            self.tmp / f"fw-{counter}.bundle",
            key=self.release_key.private,
            files=files,
            kind="firmware",
            name=NAME,
            version=NEW,
            counter=counter,
            entry="",
            sites=(),
            gateways=(),
            created=time.time(),
            expires=time.time() + 3600,
            firmware=firmware_metadata(arch="native", fw_version=NEW, **rollout),
        )
        return request(socket_path(self.data_dir), {"op": "update.install", "file": str(bundle)}, timeout=30)

    def rollout(self) -> dict[str, Any]:
        r: dict[str, Any] = ((self.status().get("ota") or {}).get("rollouts") or {}).get(NAME) or {}
        return r

    def wait_device(self, device: str, state: str, timeout: float = 90) -> dict[str, Any]:
        def reached() -> dict[str, Any]:
            d = (self.rollout().get("devices") or {}).get(device)
            if d is not None and d["state"] == "failed" and state != "failed":
                raise AssertionError(f"{device} failed: {d['reason']}")
            return d if d is not None and d["state"] == state else {}

        got: dict[str, Any] = wait_until(reached, timeout, f"{device} {state}")
        return got

    def cli(self, *args: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "gateway", *args, "-c", str(self.config)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    def stop(self) -> str:
        for b in self.boards.values():
            b.stop()
        if self.gateway is not None and self.gateway.poll() is None:
            self.gateway.send_signal(signal.SIGTERM)
            self.gateway.wait(30)
        return (self.tmp / "gateway.log").read_text(errors="replace")


@pytest.fixture
def site(tmp_path: Path, mosquitto: Mosquitto, release_key: ReleaseKey) -> Iterator[Site]:
    s = Site(tmp_path, mosquitto, release_key)
    s.start_gateway()
    yield s
    s.stop()


def _fw_version(site: Site, device: str) -> str | None:
    rows = {d["device"]: d for d in read_devices(site.data_dir / "registry.sqlite")}
    return rows[device]["fw_version"] if device in rows else None


def test_one_board_gets_the_release_boots_it_and_confirms(site: Site, fw_files: dict[str, bytes]) -> None:
    board = site.add_board("dev1")
    site.wait_online("dev1")
    assert _fw_version(site, "dev1") == OLD_VERSION
    answer = site.install(fw_files, counter=1, devices=["dev*"], canary=["dev1"], wave=1, max_failure_rate=0.0)
    assert answer.get("ok"), answer
    done = site.wait_device("dev1", "confirmed")
    assert done["total"] > sum(len(d) for d in fw_files.values())  # the manifest and every file
    assert site.rollout()["state"] == "done"
    assert _fw_version(site, "dev1") == NEW  # the BIRTH of the new slot
    st = board.state()
    assert st is not None and st["active"] in ("a", "b") and st["trial"] == ""
    out = site.cli("ota", "status")
    assert f"rollout {NAME} {NEW}" in out and "done" in out
    assert "dev1" in out and "confirmed" in out
    assert f"rollout {NAME} {NEW}" in site.cli("status")


def _broken(files: dict[str, bytes]) -> dict[str, bytes]:
    """The same release with a start module that raises."""
    out = {p: d for p, d in files.items() if p != "sensorfw/start.mpy"}
    out["sensorfw/start.py"] = b"raise RuntimeError('this release is broken')\n"
    return out


def test_a_failing_canary_halts_the_rollout_before_the_other_boards(
    site: Site, fw_files: dict[str, bytes], mosquitto: Mosquitto
) -> None:
    for d in ("dev1", "dev2", "dev3"):
        site.add_board(d)
    site.wait_online("dev1", "dev2", "dev3")
    answer = site.install(_broken(fw_files), counter=1, devices=["dev*"], canary=["dev1"], wave=1, max_failure_rate=0.0)
    assert answer.get("ok"), answer
    failed = site.wait_device("dev1", "failed")
    assert failed["reason"].startswith("rolled_back_crash"), failed
    wait_until(lambda: site.rollout().get("state") == "halted", 10, "the rollout halted")
    devices = site.rollout()["devices"]
    assert devices["dev2"]["state"] == devices["dev3"]["state"] == "pending"
    wait_until(lambda: _fw_version(site, "dev1") == OLD_VERSION, 30, "dev1 back on its old firmware")
    assert "this release is broken" in site.boards["dev1"].dev.text()
    for d in ("dev2", "dev3"):  # nothing reached them
        flash = site.boards[d].dev.flash
        assert not (flash / "ota.rx").exists() and not (flash / "a").exists() and not (flash / "b").exists()
        assert "OTA" not in site.boards[d].dev.text()
    assert site.cli("ota", "abort").strip() == f"rollout {NAME}: aborting"
    wait_until(lambda: site.rollout().get("state") == "aborted", 10, "the rollout aborted")


def test_a_gateway_killed_mid_transfer_resumes_it_after_its_restart(
    tmp_path: Path, mosquitto: Mosquitto, release_key: ReleaseKey, fw_files: dict[str, bytes]
) -> None:
    site = Site(tmp_path, mosquitto, release_key, chunk_bytes=256, window=1)  # slow enough to cut
    site.start_gateway()
    try:
        board = site.add_board("dev1")
        site.wait_online("dev1")
        assert site.install(fw_files, counter=1, devices=["dev1"], canary=[], wave=1, max_failure_rate=0.0)["ok"]
        wait_until(
            lambda: (site.rollout().get("devices") or {}).get("dev1", {}).get("offset", 0) > 20_000, 30, "20 KB in"
        )
        assert site.gateway is not None
        site.gateway.kill()  # kill -9: rollout.json is all that is left of the transfer
        site.gateway.wait(10)
        site.start_gateway()
        site.wait_device("dev1", "confirmed")
        assert _fw_version(site, "dev1") == NEW
        text = board.dev.text()
        assert text.count("OTA BEGIN") == 1, text  # the second BEGIN took up the transfer the board held
    finally:
        site.stop()
