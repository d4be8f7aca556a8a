"""Firmware over the air to a CircuitPython board end to end: `edgeline-flash build --arch
circuitpython` packed as `edgeline-release pack firmware --arch circuitpython` does, signed,
installed on the real gateway process (`update.install` on its control socket), and sent by its
rollout over a real Mosquitto to the real CircuitPython firmware on the unix port (code.py the
A/B loader), provisioned with its OTA key. The board takes it, restarts into the new slot, its
BIRTH carries the new version and it confirms."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.control_socket import request, socket_path
from gateway.registry import read_devices
from tests.circuitpython.cpdevice import CPDevice, cp_config
from tests.firmware.ota_board import OLD_VERSION, PoweredBoard
from tests.support.upy import ROOT
from tests.support.waiting import wait_until
from tests.updates.conftest import make_release_key
from tests.updates.test_fwota_e2e import Site
from tools.fetch_upy_deps import DEFAULT_ARCHIVES
from tools.flash.circuitpy import BUILD_ARCH, EXCLUDE_GLOBS, build
from tools.flash.ota_key import BOARD_PATH, obtain
from tools.mosquitto import Mosquitto
from tools.release.pack import build_bundle, firmware_files, firmware_metadata

NAME = "sensorfw-circuitpython"
NEW = "sensorfw-cp-3.0.0"


@pytest.fixture(scope="module")
def cp_release(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The payload `pack firmware --arch circuitpython` takes, plus the simulation board the
    slot runs on the unix port (the drive leaves it out)."""
    out, _manifest = build(ROOT, DEFAULT_ARCHIVES, tmp_path_factory.mktemp("build") / BUILD_ARCH)
    files, _entry = firmware_files(out, BUILD_ARCH)
    for pattern in EXCLUDE_GLOBS:
        for path in (ROOT / "firmware").glob(pattern):
            files["lib/" + path.relative_to(ROOT / "firmware").as_posix()] = path.read_bytes()
    return files


@pytest.fixture
def site(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[Site]:
    s = Site(tmp_path, mosquitto, make_release_key(tmp_path / "keys"))
    s.start_gateway()
    yield s
    s.stop()


def _rollout(site: Site) -> dict[str, Any]:
    r: dict[str, Any] = ((site.status().get("ota") or {}).get("rollouts") or {}).get(NAME) or {}
    return r


def _fw_version(site: Site) -> str | None:
    rows = {d["device"]: d for d in read_devices(site.data_dir / "registry.sqlite")}
    return rows["cp1"]["fw_version"] if "cp1" in rows else None


def test_gateway_rolls_a_circuitpython_release_out_to_a_circuitpython_board(
    site: Site, mosquitto: Mosquitto, cp_release: dict[str, bytes]
) -> None:
    flash = site.tmp / "flash-cp1"
    flash.mkdir()
    (flash / BOARD_PATH).write_bytes(obtain(site.devices_dir / "cp1"))  # edgeline-flash circuitpy
    dev = CPDevice(flash, cp_config(mosquitto.port, "cp1", health_s=30))
    dev.power_on()
    board = site.boards["cp1"] = PoweredBoard(dev).start()
    site.wait_online("cp1")
    assert _fw_version(site) == OLD_VERSION

    bundle = build_bundle(
        site.tmp / "cp.bundle",
        key=site.release_key.private,
        files=cp_release,
        kind="firmware",
        name=NAME,
        version=NEW,
        counter=1,
        entry="",
        created=time.time(),
        expires=time.time() + 3600,
        firmware=firmware_metadata(
            arch=BUILD_ARCH, fw_version=NEW, devices=["cp*"], canary=["cp1"], wave=1, max_failure_rate=0.0
        ),
    )
    answer = request(socket_path(site.data_dir), {"op": "update.install", "file": str(bundle)}, timeout=30)
    assert answer.get("ok"), answer

    def confirmed() -> dict[str, Any]:
        d = (_rollout(site).get("devices") or {}).get("cp1") or {}
        assert d.get("state") != "failed", d
        return d if d.get("state") == "confirmed" else {}

    wait_until(confirmed, 90, "cp1 confirmed")
    assert _rollout(site)["state"] == "done"
    assert _fw_version(site) == NEW  # the BIRTH of the new slot
    st = board.state()
    assert st is not None and st["active"] in ("a", "b") and st["trial"] == ""
    slot = flash / st["active"]
    assert (slot / "lib" / "sensorfw" / "cpport" / "entry.py").read_bytes() == cp_release[
        "lib/sensorfw/cpport/entry.py"
    ]
