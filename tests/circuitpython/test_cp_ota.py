"""Firmware over the air on a CircuitPython board: the real code.py (the A/B loader,
firmware/otaslots.py) and firmware on the unix port with the CircuitPython simulation and the
pinned MiniMQTT, a real Mosquitto, and the test-side sender of tests/firmware/test_fw_ota.py
with the device's key from provisioning.

The release is what `edgeline-release pack firmware --arch circuitpython` packs: the
files of `edgeline-flash build --arch circuitpython` without the loader files (code.py,
boot.py, otaslots.py), i.e. sources under lib/, plus the simulation board (as the native
MicroPython build has its own), which the slot runs on the unix port."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.circuitpython.cpdevice import CPDevice, cp_config
from tests.firmware.gateway_stub import GatewayStub
from tests.firmware.ota_board import OLD_VERSION, PoweredBoard, Release, Sender, release
from tests.support.upy import ROOT
from tools.fetch_upy_deps import DEFAULT_ARCHIVES
from tools.flash.circuitpy import BUILD_ARCH, EXCLUDE_GLOBS, build
from tools.flash.ota_key import BOARD_PATH, obtain
from tools.mosquitto import Mosquitto
from tools.release.pack import firmware_files

NEW_VERSION = "sensorfw-cp-2.0.0"
MARK = b"\nprint('running the entry of the new release')\n"


@pytest.fixture(scope="module")
def cp_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    out, manifest = build(ROOT, DEFAULT_ARCHIVES, tmp_path_factory.mktemp("build") / BUILD_ARCH)
    assert manifest.arch == "circuitpython"
    files, _entry = firmware_files(out, "circuitpython")
    assert not {"code.py", "boot.py", "otaslots.py"} & set(files)
    assert all(p.startswith("lib/") and not p.endswith(".mpy") for p in files)
    for pattern in EXCLUDE_GLOBS:  # the simulation boards the drive leaves out
        for path in (ROOT / "firmware").glob(pattern):
            files["lib/" + path.relative_to(ROOT / "firmware").as_posix()] = path.read_bytes()
    return files


@pytest.fixture
def key(tmp_path: Path) -> bytes:
    return obtain(tmp_path / "ca" / "devices" / "cp1")


@pytest.fixture
def board(mosquitto: Mosquitto, flash: Callable[[str], Path], key: bytes) -> Iterator[tuple[PoweredBoard, CPDevice]]:
    d = flash("cp1")
    (d / BOARD_PATH).write_bytes(key)  # what edgeline-flash circuitpy writes to the drive
    cfg = cp_config(mosquitto.port, health_s=30, queue={"ack_timeout_s": 2}, watchdog_ms=6000)
    dev = CPDevice(d, cfg)
    dev.power_on()  # boot.py: the drive is the code's (kept on the drive across resets)
    pb = PoweredBoard(dev).start()
    yield pb, dev
    pb.stop()


def _release(files: dict[str, bytes], version: str, counter: int, **changed: bytes) -> Release:
    return release({**files, **changed}, version, counter, device="cp1", arch="circuitpython")


def test_cp_board_takes_a_release_across_a_power_cut_and_confirms(
    board: tuple[PoweredBoard, CPDevice], gateway: GatewayStub, key: bytes, cp_files: dict[str, bytes]
) -> None:
    pb, dev = board
    s = Sender(gateway, "cp1", key)
    assert s.wait_boots(1) == OLD_VERSION
    entry = "lib/sensorfw/cpport/entry.py"
    rel = _release(cp_files, NEW_VERSION, 2, **{entry: cp_files[entry] + MARK})
    big = max(rel.files, key=lambda f: len(f[1]))[0]  # the file cut in the middle
    start, end = rel.file_span(big)

    # power cut in the middle of a file: the transfer resumes from what is on the drive
    a = s.run(5, rel, chunk=1000, stop=lambda off: start + 1000 <= off < end)
    held = a["offset"]
    assert a["result"] == "receiving" and start < held < end, (a, start, end)
    pb.power_cut()
    assert s.wait_boots(2) == OLD_VERSION
    a = s.begin(5, rel)
    assert (a["result"], a["offset"]) == ("receiving", held), a

    a = s.run(5, rel, stop=lambda off: off >= len(rel.stream) - 1)
    gateway.ack = False  # the new firmware stays on trial until its data is stored
    a = s.chunk(5, a["offset"], rel.stream[a["offset"] :]) if a["result"] == "receiving" else a
    assert a["result"] == "switching", a
    assert s.wait_boots(3) == NEW_VERSION
    assert pb.state() == {"active": "", "trial": "a", "starts": 1, "transfer": 5, "rolled_back": 0}
    assert "running the entry of the new release" in dev.text()  # the slot's code, not the root's
    gateway.ack = True
    a = s.next_answer(20)
    assert (a["transfer"], a["result"]) == (5, "confirmed"), a
    assert pb.state() == {"active": "a", "trial": "", "starts": 0, "transfer": 5, "rolled_back": 0}
    for p, data in rel.files:
        assert (dev.flash / "a" / p).read_bytes() == data, p
    assert not list((dev.flash / "a").rglob("*.part")) and not (dev.flash / "ota.rx").exists()

    # CIRCUITPY is FAT: a rename does not replace, so ota.json is removed before ota.json.tmp
    # takes its name; a power cut between the two leaves only ota.json.tmp, which is read
    pb.power_cut(stay_off=True)
    (dev.flash / "ota.json").rename(dev.flash / "ota.json.tmp")
    pb.power_on()
    assert s.wait_boots(4) == NEW_VERSION
    assert pb.state() == {"active": "a", "trial": "", "starts": 0, "transfer": 5, "rolled_back": 0}
    assert not (dev.flash / "ota.json.tmp").exists()  # the replace was finished at the start
    assert {v for _, v in s.boots()} == {OLD_VERSION, NEW_VERSION}


def test_cp_release_that_raises_at_start_up_is_rolled_back(
    board: tuple[PoweredBoard, CPDevice], gateway: GatewayStub, key: bytes, cp_files: dict[str, bytes]
) -> None:
    pb, dev = board
    s = Sender(gateway, "cp1", key)
    assert s.wait_boots(1) == OLD_VERSION
    broken: dict[str, Any] = {"lib/sensorfw/start.py": b"raise RuntimeError('this CircuitPython build is broken')\n"}
    assert s.run(7, _release(cp_files, "sensorfw-cp-broken", 3, **broken))["result"] == "switching"
    a = s.next_answer(30)
    assert (a["transfer"], a["result"]) == (7, "rolled_back_crash"), a
    assert s.wait_boots(2) == OLD_VERSION
    assert pb.state() == {"active": "", "trial": "", "starts": 0, "transfer": 7, "rolled_back": 0}
    assert "this CircuitPython build is broken" in dev.text()
    assert {v for _, v in s.boots()} == {OLD_VERSION}
    # a MicroPython build for the same board is refused once its manifest is in
    mpy = release({"sensorfw/start.mpy": b"M"}, "sensorfw-9", 9, device="cp1", arch="native")
    assert s.run(8, mpy)["result"] == "wrong_arch"
    assert not (dev.flash / "a").exists() and pb.state() is not None and pb.state()["active"] == ""  # type: ignore[index]
