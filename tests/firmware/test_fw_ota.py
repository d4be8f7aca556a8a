"""Firmware over the air on the board: the real firmware on the unix port (main.py the A/B
loader, core/ota.py the receiver), a real Mosquitto, and a test-side sender with the
device's key from provisioning (tools/flash/ota_key.py). Power cuts are kill -9 at every
stage; after each the board must come back running the old or the new firmware (the
version in its BIRTH), never neither, and the transfer resume from what is on flash.

The new firmware is the flash tool's build for the unix port (tools/flash/build.py,
arch native) with a newer version in its manifest; the broken ones have a start module
that raises, or that resets the board (a boot loop)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shared_protocol import DATA, ota
from tests.circuitpython.cpdevice import CPDevice, cp_config
from tests.firmware.gateway_stub import GatewayStub
from tests.firmware.ota_board import OLD_VERSION, PoweredBoard, Release, Sender, native_build, release
from tests.firmware.simdevice import EXIT_RESET, SimDevice, base_config
from tests.support.upy import ROOT
from tests.support.waiting import wait_until
from tools.flash.ota_key import BOARD_PATH, obtain
from tools.mosquitto import Mosquitto

NEW_VERSION = "sensorfw-2.0.0"


@pytest.fixture(scope="module")
def fw_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    return native_build(tmp_path_factory.mktemp("build") / "native")


@pytest.fixture
def key(tmp_path: Path) -> bytes:
    """The device's OTA key as provisioning makes it (0600 in a 0700 folder)."""
    return obtain(tmp_path / "ca" / "devices" / "dev1")


@pytest.fixture
def make_board(
    mosquitto: Mosquitto, flash: Callable[[str], Path], key: bytes
) -> Iterator[Callable[..., tuple[PoweredBoard, SimDevice]]]:
    boards: list[PoweredBoard] = []

    def make(**over: Any) -> tuple[PoweredBoard, SimDevice]:
        d = flash("dev1")
        (d / BOARD_PATH).write_bytes(key)  # what provisioning writes to the board
        # frames not ACKed go out again after 2 s (the test holds ACKs back to keep a trial
        # open); the watchdog on: removing a slot and hashing files feed it
        cfg = base_config(
            mosquitto.port,
            sample={"rate_hz": 50, "batch": 8},
            health_s=30,
            queue={"ack_timeout_s": 2},
            watchdog_ms=4000,
            **over,
        )
        dev = SimDevice(d, cfg)
        boards.append(PoweredBoard(dev).start())
        return boards[-1], dev

    yield make
    for pb in boards:
        pb.stop()


@pytest.fixture
def board(make_board: Callable[..., tuple[PoweredBoard, SimDevice]]) -> tuple[PoweredBoard, SimDevice]:
    return make_board()


def _versions_ok(sender: Sender, allowed: set[str]) -> None:
    assert {v for _, v in sender.boots()} <= allowed, sender.boots()


def test_loader_result_codes_are_shared_protocol_s() -> None:
    spec = importlib.util.spec_from_file_location("fw_loader", ROOT / "firmware" / "otaslots.py")
    assert spec is not None and spec.loader is not None
    loader = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loader)
    assert loader.ROLLED_BACK_CRASH == ota.ROLLED_BACK_CRASH
    assert loader.ROLLED_BACK_UNCONFIRMED == ota.ROLLED_BACK_UNCONFIRMED


def test_power_cuts_and_a_bad_chunk_then_the_new_firmware_confirms(
    board: tuple[PoweredBoard, SimDevice], gateway: GatewayStub, key: bytes, fw_files: dict[str, bytes]
) -> None:
    pb, dev = board
    s = Sender(gateway, "dev1", key)
    assert s.wait_boots(1) == OLD_VERSION
    rel = release(fw_files, NEW_VERSION, 2)
    paths = [p for p, _ in rel.files]
    big = max(paths, key=lambda p: len(fw_files[p]))  # the file cut in the middle
    start, end = rel.file_span(big)
    bad = paths[3]  # the file whose chunk arrives altered
    bad_start = rel.file_span(bad)[0]

    # a chunk with a byte changed: the file is dropped at its end, the board asks from its start
    def flip(off: int, data: bytes) -> bytes:
        if off < bad_start + 10 < off + len(data) and not flipped:
            flipped.append(off)
            i = bad_start + 10 - off
            return data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :]
        return data

    flipped: list[int] = []
    a = s.run(7, rel, alter=flip)
    assert a["code"] == ota.BAD_HASH and a["offset"] == bad_start, a
    assert not (dev.flash / "a" / bad).exists()

    # power cut in the middle of a file (between two of its chunks): resumes from the flash
    a = s.run(7, rel, chunk=1000, stop=lambda off: start + 2000 <= off < end)
    held = a["offset"]
    assert a["result"] == "receiving" and start < held < end, (a, start, end)
    pb.power_cut()
    assert s.wait_boots(2) == OLD_VERSION
    a = s.begin(7, rel)
    assert (a["result"], a["offset"]) == ("receiving", held), a

    # power cut right after a file completed
    ends = rel.ends()
    after = next(e for e in ends if e > held + 5000)
    a = s.run(7, rel, stop=lambda off: off >= after)
    assert a["offset"] == after
    pb.power_cut()
    assert s.wait_boots(3) == OLD_VERSION
    assert s.begin(7, rel)["offset"] == after

    # power cut after a file's last bytes were written but before its check: checked at resume
    nxt = next(e for e in ends if e > after)
    name = next(p for p, _ in rel.files if rel.file_span(p) == (after, nxt))
    pb.power_cut(stay_off=True)
    (dev.flash / "a" / (name + ".part")).write_bytes(rel.stream[after:nxt])
    pb.power_on()
    assert s.wait_boots(4) == OLD_VERSION
    assert s.begin(7, rel)["offset"] == nxt
    assert (dev.flash / "a" / name).read_bytes() == fw_files[name]

    # the rest; the new firmware gets no ACK at first, so it stays on trial
    gateway.ack = False
    a = s.run(7, rel, stop=lambda off: off >= len(rel.stream) - 1)
    gateway.ack = True
    a = s.chunk(7, a["offset"], rel.stream[a["offset"] :]) if a["result"] == "receiving" else a
    assert a["result"] == "switching", a
    gateway.ack = False
    assert s.wait_boots(5) == NEW_VERSION
    assert pb.state() == {"active": "", "trial": "a", "starts": 1, "transfer": 7, "rolled_back": 0}

    # power cut after the switch, before the confirmation: the trial runs again (start 2)
    pb.power_cut()
    assert s.wait_boots(6) == NEW_VERSION
    gateway.ack = True  # DATA of this boot stored: confirmed
    a = s.next_answer(20)
    assert (a["transfer"], a["result"]) == (7, "confirmed"), a
    assert pb.state() == {"active": "a", "trial": "", "starts": 0, "transfer": 7, "rolled_back": 0}
    _versions_ok(s, {OLD_VERSION, NEW_VERSION})
    for p, data in rel.files:
        assert (dev.flash / "a" / p).read_bytes() == data, p
    assert not list((dev.flash / "a").rglob("*.part")) and not (dev.flash / "ota.rx").exists()

    # the same release again is a replay now
    assert s.run(8, rel)["result"] == "replayed"
    assert pb.state()["active"] == "a"  # type: ignore[index]


def test_refusals_change_nothing(
    board: tuple[PoweredBoard, SimDevice], gateway: GatewayStub, key: bytes, fw_files: dict[str, bytes]
) -> None:
    pb, dev = board
    s = Sender(gateway, "dev1", key)
    assert s.wait_boots(1) == OLD_VERSION
    rel = release(fw_files, NEW_VERSION, 2)
    # a BEGIN with another device's key (or altered on the way)
    a = s.begin(11, rel, key=bytes(32))
    assert a["result"] == "bad_tag", a
    assert not (dev.flash / "ota.rx").exists() and not (dev.flash / "a").exists()
    assert s.chunk(11, 0, rel.manifest)["result"] == "unknown_transfer"
    # manifests the tag covers but the board does not take: each dropped with its slot
    for transfer, other, result in (
        (12, release(fw_files, NEW_VERSION, 2, arch="xtensawin"), "wrong_arch"),
        (13, release(fw_files, NEW_VERSION, 2, device="dev2"), "bad_manifest"),
        (14, release(fw_files, NEW_VERSION, 0), "replayed"),
    ):
        a = s.run(transfer, other)
        assert a["result"] == result, a
        assert not (dev.flash / "ota.rx").exists() and not (dev.flash / "a").exists()
        assert s.chunk(transfer, len(other.manifest), b"x")["result"] == "unknown_transfer"
    # a manifest whose bytes differ from the hash BEGIN covers: sent again from 0
    a = s.begin(15, rel)
    a = s.chunk(15, 0, rel.manifest.replace(b"counter 2", b"counter 9"))
    assert (a["result"], a["offset"]) == ("bad_manifest", 0), a
    # a manifest (tag and all) naming a wrong hash: the file never passes, nothing switches
    first, data = rel.files[0]
    wrong = Release(rel.manifest.replace(hashlib.sha256(data).hexdigest().encode(), b"0" * 64, 1), rel.files)
    for _ in range(2):
        a = s.run(16, wrong)
        assert (a["result"], a["offset"]) == ("bad_hash", len(wrong.manifest)), a
    assert not (dev.flash / "a" / first).exists() and pb.state() is None
    # ABORT: the transfer and its slot are dropped
    assert (dev.flash / "a" / "fw.manifest").exists()
    s.send(ota.abort_arg(16))
    assert s.next_answer()["result"] == "unknown_transfer"
    assert not (dev.flash / "ota.rx").exists() and not (dev.flash / "a").exists()
    assert pb.state() is None
    assert {v for _, v in s.births()} == {OLD_VERSION}


def _broken(fw_files: dict[str, bytes], start_py: bytes) -> Release:
    files = {p: d for p, d in fw_files.items() if p != "sensorfw/start.mpy"}
    files["sensorfw/start.py"] = start_py
    return release(files, "sensorfw-broken", 3)


def test_firmware_that_raises_at_start_up_is_rolled_back(
    board: tuple[PoweredBoard, SimDevice], gateway: GatewayStub, key: bytes, fw_files: dict[str, bytes]
) -> None:
    pb, dev = board
    s = Sender(gateway, "dev1", key)
    assert s.wait_boots(1) == OLD_VERSION
    rel = _broken(fw_files, b"raise RuntimeError('this build is broken')\n")
    assert s.run(21, rel)["result"] == "switching"
    a = s.next_answer(30)
    assert (a["transfer"], a["result"]) == (21, "rolled_back_crash"), a
    assert s.wait_boots(2) == OLD_VERSION
    assert pb.state() == {"active": "", "trial": "", "starts": 0, "transfer": 21, "rolled_back": 0}
    assert "this build is broken" in dev.text()
    _versions_ok(s, {OLD_VERSION})


def test_boot_loop_is_rolled_back_unconfirmed(
    board: tuple[PoweredBoard, SimDevice], gateway: GatewayStub, key: bytes, fw_files: dict[str, bytes]
) -> None:
    pb, _ = board
    s = Sender(gateway, "dev1", key)
    assert s.wait_boots(1) == OLD_VERSION
    rel = _broken(fw_files, b"import sys\nsys.exit(%d)\n" % EXIT_RESET)  # resets at every start
    assert s.run(31, rel)["result"] == "switching"
    a = s.next_answer(30)
    assert (a["transfer"], a["result"]) == (31, "rolled_back_unconfirmed"), a
    assert s.wait_boots(2) == OLD_VERSION
    # the switch's reset, then two trial starts that reset, then the rollback
    assert pb.exits[:3] == [EXIT_RESET] * 3, pb.exits
    st = pb.state()
    assert st is not None and st["trial"] == "" and st["active"] == ""
    wait_until(lambda: json.loads((pb.dev.flash / "ota.json").read_text())["rolled_back"] == 0, what="report kept")


def test_trial_not_confirmed_in_time_restarts_and_is_rolled_back(
    make_board: Callable[..., tuple[PoweredBoard, SimDevice]],
    gateway: GatewayStub,
    key: bytes,
    fw_files: dict[str, bytes],
) -> None:
    """A new firmware that runs but gets no data through (no ACK: the gateway never stores
    any) restarts after ota_trial_s; the third start goes back to the old one."""
    pb, dev = make_board(ota_trial_s=2)
    s = Sender(gateway, "dev1", key)
    assert s.wait_boots(1) == OLD_VERSION
    rel = release(fw_files, NEW_VERSION, 2)
    gateway.ack = False
    assert s.run(51, rel)["result"] == "switching"
    a = s.next_answer(40)
    assert (a["transfer"], a["result"]) == (51, "rolled_back_unconfirmed"), a
    assert [v for _, v in s.boots()] == [OLD_VERSION, NEW_VERSION, NEW_VERSION, OLD_VERSION]
    assert dev.text().count("not confirmed within ota_trial_s: restarting") == 2
    assert pb.exits[:3] == [EXIT_RESET] * 3, pb.exits


def test_circuitpython_board_refuses_a_micropython_release(
    mosquitto: Mosquitto, gateway: GatewayStub, flash: Callable[[str], Path], key: bytes, fw_files: dict[str, bytes]
) -> None:
    """A CircuitPython board takes releases of arch circuitpython (sources,
    tests/circuitpython/test_cp_ota.py): a MicroPython build is refused as built for another
    architecture once its manifest is in, its slot dropped, and the board goes on."""
    fl = flash("cp1")
    (fl / BOARD_PATH).write_bytes(key)
    dev = CPDevice(fl, cp_config(mosquitto.port), EDGELINE_SIM_STOP_FILE=str(fl / "stop"))
    dev.power_on()
    dev.start()
    try:
        s = Sender(gateway, "cp1", key)
        s.wait_boots(1)
        assert s.run(41, release(fw_files, NEW_VERSION, 2, device="cp1"))["result"] == "wrong_arch"
        n = len(gateway.of(DATA))
        gateway.wait_for(lambda g: len(g.of(DATA)) > n + 2, what="DATA after the refusal")
        assert not (fl / "a").exists() and not (fl / "ota.json").exists()
    finally:
        (fl / "stop").write_text("")
        dev.wait(30)
