"""Firmware OTA with the board's flash on littlefs v2 (MicroPython's VfsLfs2 over a host file
as the block device, 4096-byte blocks as on the ESP32 and rp2 ports): the renames the
switch and each file rely on, the imports from a slot, a power cut mid-transfer and after the
switch; and a flash too small for the release: `no_space`, the partial slot freed, the old
firmware kept."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.firmware.gateway_stub import GatewayStub
from tests.firmware.ota_board import OLD_VERSION, PoweredBoard, Sender, native_build, release
from tests.firmware.simdevice import SimDevice, base_config
from tests.firmware.test_fw_ota import NEW_VERSION
from tests.support.upy import ROOT
from tools.flash.ota_key import BOARD_PATH, obtain
from tools.mosquitto import Mosquitto

LFS_MAIN = str(ROOT / "tests" / "firmware" / "ota_lfs_main.py")
BLOCK = 4096


@pytest.fixture(scope="module")
def fw_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    return native_build(tmp_path_factory.mktemp("build") / "native")


@pytest.fixture
def lfs_board(
    mosquitto: Mosquitto, flash: Callable[[str], Path], tmp_path: Path
) -> Iterator[Callable[[int], tuple[PoweredBoard, bytes]]]:
    boards: list[PoweredBoard] = []

    def make(blocks: int) -> tuple[PoweredBoard, bytes]:
        host = flash("dev1")
        seed = tmp_path / "seed"
        seed.mkdir()
        key = obtain(tmp_path / "ca" / "devices" / "dev1")
        (seed / BOARD_PATH).write_bytes(key)
        cfg = base_config(mosquitto.port, sample={"rate_hz": 50, "batch": 8}, health_s=30, queue={"ack_timeout_s": 2})
        (seed / "config.json").write_text(json.dumps(cfg))
        image = tmp_path / "flash.img"
        image.write_bytes(bytes(blocks * BLOCK))
        dev = SimDevice(
            host,
            None,
            main=LFS_MAIN,
            EDGELINE_SIM_DIR="/flash",
            EDGELINE_LFS_IMAGE=str(image),
            EDGELINE_LFS_SEED=str(seed),
        )
        pb = PoweredBoard(dev).start()
        boards.append(pb)
        return pb, key

    yield make
    for pb in boards:
        pb.stop()


def test_ota_on_littlefs_survives_power_cuts_and_confirms(
    lfs_board: Callable[[int], tuple[PoweredBoard, bytes]], gateway: GatewayStub, fw_files: dict[str, bytes]
) -> None:
    pb, key = lfs_board(256)  # 1 MB
    s = Sender(gateway, "dev1", key)
    assert s.wait_boots(1) == OLD_VERSION
    rel = release(fw_files, NEW_VERSION, 2)
    big = max((p for p, _ in rel.files), key=lambda p: len(fw_files[p]))
    start, end = rel.file_span(big)
    a = s.run(5, rel, chunk=1000, stop=lambda off: start + 2000 <= off < end)
    held = a["offset"]
    pb.power_cut()
    assert s.wait_boots(2) == OLD_VERSION
    assert s.begin(5, rel)["offset"] == held
    gateway.ack = False  # the trial stays unconfirmed until the power cut below
    a = s.run(5, rel)
    assert a["result"] == "switching", a
    assert s.wait_boots(3) == NEW_VERSION
    pb.power_cut()
    assert s.wait_boots(4) == NEW_VERSION
    gateway.ack = True
    a = s.next_answer(20)
    assert (a["transfer"], a["result"]) == (5, "confirmed"), a
    assert {v for _, v in s.boots()} == {OLD_VERSION, NEW_VERSION}


def test_a_release_larger_than_the_flash_is_no_space_and_the_old_firmware_stays(
    lfs_board: Callable[[int], tuple[PoweredBoard, bytes]], gateway: GatewayStub, fw_files: dict[str, bytes]
) -> None:
    pb, key = lfs_board(48)  # 192 KB: the firmware's own files fit, a second firmware does not
    s = Sender(gateway, "dev1", key)
    assert s.wait_boots(1) == OLD_VERSION
    rel = release(fw_files, NEW_VERSION, 2)
    a = s.run(6, rel)
    assert a["result"] == "no_space", a
    assert s.chunk(6, a["offset"], b"x")["result"] == "unknown_transfer"  # dropped, slot freed
    # the space came back: a small release fits now (it stops before the switch)
    small = release({p: d for p, d in fw_files.items() if len(d) < 600}, NEW_VERSION, 2)
    a = s.run(7, small, stop=lambda off: off >= len(small.stream) // 2)
    assert a["result"] == "receiving", a
    pb.power_cut()
    assert s.wait_boots(2) == OLD_VERSION
    assert "Traceback" not in pb.dev.text()
