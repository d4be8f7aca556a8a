"""One device's firmware transfer (gateway/updates/fwota.py) against a model of the board's
receiver (tests/updates/ota_board_model.py): the gateway's state machine under lost chunks,
lost answers, a silent board, corrupted data, refusals and a board that forgets the transfer.
The real firmware's receiver: tests/updates/test_fwota_e2e.py."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from gateway.updates.fwota import DeviceKeyError, FirmwareImage, Transfer, read_device_key
from gateway.updates.settings import FirmwareSettings
from shared_protocol import ota
from tests.updates.ota_board_model import BoardModel, Frame, Link

KEY = bytes(range(32))
SETTINGS = FirmwareSettings(chunk_bytes=64, window=4, chunk_timeout_s=5.0, max_retries=3, confirm_timeout_s=60.0)


def image(tmp_path: Path, **over: Any) -> FirmwareImage:
    files = {"sensorfw/app.mpy": os.urandom(700), "lib/umqtt.mpy": os.urandom(130), "shared_protocol/x.mpy": b"x"}
    root = tmp_path / "fw"
    rows = []
    for path, data in sorted(files.items()):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
        rows.append((path, len(data), hashlib.sha256(data).hexdigest()))
    args: dict[str, Any] = {"version": "2.0", "counter": 5, "arch": "native", "files": tuple(rows), "root": root}
    return FirmwareImage(**{**args, **over})


class Run:
    """A transfer wired to a board model through a link, on a clock the test moves."""

    def __init__(self, tmp_path: Path, *, board: BoardModel | None = None, settings: FirmwareSettings = SETTINGS):
        self.image = image(tmp_path)
        self.board = board or BoardModel("dev1", KEY)
        self.link = Link({"dev1": self.board}, deliver=self.on_event)
        self.now = 1000.0
        self.transfer = Transfer("dev1", self.image, self.image.data(), KEY, settings=settings, send=self.link.send)

    def on_event(self, device: str, frame: Frame) -> None:
        answer = ota.read_answer(frame.fields["events"])
        assert answer is not None
        if answer["transfer"] == self.transfer.transfer_id:
            self.transfer.on_answer(answer, self.now)

    def start(self) -> None:
        self.transfer.start(self.now)
        self.link.run()

    def later(self, seconds: float) -> None:
        self.now += seconds
        self.transfer.tick(self.now)
        self.link.run()


def test_transfer_switches_boots_and_confirms(tmp_path: Path) -> None:
    run = Run(tmp_path)
    run.start()
    t = run.transfer
    assert t.state == "switching"
    assert run.board.switched == t.stream  # every byte, in order
    assert run.board.switched.startswith(run.image.manifest("dev1"))
    assert t.resends == 0 and t.retries == 0
    assert run.link.chunks_to("dev1") == -(-t.total // SETTINGS.chunk_bytes)
    assert 1 < run.link.in_flight_max <= SETTINGS.window  # a window, never more
    t.on_birth("1.0", run.now + 1)  # the old version (a BIRTH before the switch): still switching
    assert t.state == "switching"
    t.on_birth("2.0", run.now + 2)
    assert t.state == "trial"
    t.on_answer({"transfer": t.transfer_id, "code": ota.CONFIRMED, "result": "confirmed", "offset": t.total}, run.now)
    assert t.state == "confirmed"


def test_a_lost_chunk_is_sent_again_from_the_board_offset(tmp_path: Path) -> None:
    run = Run(tmp_path)
    lost: list[int] = []

    def drop(device: str, parsed: tuple[int, int, tuple[Any, ...]]) -> bool:
        if parsed[0] == ota.OTA_CHUNK and parsed[2][0] == 3 * 64 and not lost:
            lost.append(parsed[2][0])
            return True
        return False

    run.link.drop = drop
    run.start()
    assert lost, "the test dropped no chunk"
    assert run.transfer.state == "switching"
    assert run.board.switched == run.transfer.stream
    assert 0 < run.transfer.resends <= SETTINGS.window  # the window once, not once per later answer


def test_lost_answers_time_out_and_resend_from_the_offset(tmp_path: Path) -> None:
    run = Run(tmp_path)
    run.link.drop_answers = True
    run.start()  # BEGIN reached the board, its answer did not
    t = run.transfer
    assert t.state == "begin"
    run.later(SETTINGS.chunk_timeout_s - 0.1)
    assert run.link.begins_to("dev1") == [t.transfer_id]  # not yet
    run.link.drop_answers = False
    run.later(0.2)
    assert run.link.begins_to("dev1") == [t.transfer_id] * 2
    assert t.state == "switching" and run.board.switched == t.stream


def test_a_silent_board_fails_after_max_retries(tmp_path: Path) -> None:
    run = Run(tmp_path)
    run.start()
    run.board.reset()
    run.link.boards.clear()  # the board is gone: nothing answers
    t = run.transfer
    t.state, t.acked, t.sent = "transferring", 128, 384  # mid-transfer
    for _ in range(SETTINGS.max_retries):
        run.later(SETTINGS.chunk_timeout_s)
        assert t.state == "transferring"
    run.later(SETTINGS.chunk_timeout_s)
    assert t.state == "failed"
    assert "no progress at offset 128" in (t.reason or "")


def test_a_corrupted_file_is_dropped_by_the_board_and_sent_again(tmp_path: Path) -> None:
    run = Run(tmp_path)
    mangled: list[int] = []

    def mangle(device: str, arg: bytes) -> bytes:
        sub, _tr, f = ota.parse_arg(arg)
        if sub == ota.OTA_CHUNK and f[0] >= 600 and not mangled:
            mangled.append(f[0])
            return arg[:-1] + bytes([arg[-1] ^ 0xFF])
        return arg

    run.link.mangle = mangle
    run.start()
    assert mangled
    assert run.transfer.state == "switching" and run.board.switched == run.transfer.stream
    assert run.transfer.resends > 0


def test_a_board_that_forgot_the_transfer_gets_begin_again_and_resumes(tmp_path: Path) -> None:
    run = Run(tmp_path)
    half: list[int] = []

    def drop(device: str, parsed: tuple[int, int, tuple[Any, ...]]) -> bool:
        if parsed[0] == ota.OTA_CHUNK and parsed[2][0] >= 512 and not half:
            half.append(1)
            run.board.reset()  # power cut: RAM gone, flash kept
        return False

    run.link.drop = drop
    run.start()
    t = run.transfer
    assert half and t.state == "switching"
    assert run.link.begins_to("dev1") == [t.transfer_id] * 2
    assert run.board.switched == t.stream
    assert run.link.chunks_to("dev1") < 2 * -(-t.total // 64)  # resumed, not restarted from 0


@pytest.mark.parametrize(
    ("board", "result", "words"),
    [
        (BoardModel("dev1", bytes(32)), "bad_tag", "ota.key differs"),
        (BoardModel("dev1", KEY, arch="xtensawin"), "wrong_arch", "another architecture"),
        (BoardModel("dev1", KEY, counter=5), "replayed", "counter"),
    ],
)
def test_refusals_fail_with_the_reason(tmp_path: Path, board: BoardModel, result: str, words: str) -> None:
    run = Run(tmp_path, board=board)
    run.start()
    t = run.transfer
    assert t.state == "failed"
    assert (t.reason or "").startswith(result + ":") and words in (t.reason or "")
    sent = run.link.chunks_to("dev1")
    run.later(SETTINGS.chunk_timeout_s * 2)
    assert run.link.chunks_to("dev1") == sent  # nothing more is sent


def test_not_confirmed_in_time_fails(tmp_path: Path) -> None:
    run = Run(tmp_path)
    run.start()
    run.transfer.on_birth("2.0", run.now)
    run.later(SETTINGS.confirm_timeout_s - 1)
    assert run.transfer.state == "trial"
    run.later(2)
    assert run.transfer.state == "failed" and "not confirmed within 60 s" in (run.transfer.reason or "")


def test_a_rollback_fails_with_its_reason(tmp_path: Path) -> None:
    run = Run(tmp_path)
    run.start()
    t = run.transfer
    t.on_answer(
        {"transfer": t.transfer_id, "code": ota.ROLLED_BACK_CRASH, "result": "rolled_back_crash", "offset": 0}, run.now
    )
    assert t.state == "failed" and "raised at start-up" in (t.reason or "")


def test_device_key_rules(tmp_path: Path) -> None:
    keys = tmp_path / "devices"
    with pytest.raises(DeviceKeyError, match="provision the device"):
        read_device_key(keys, "dev1")
    with pytest.raises(DeviceKeyError, match="device_keys_dir is not set"):
        read_device_key(None, "dev1")
    (keys / "dev1").mkdir(parents=True)
    path = keys / "dev1" / "ota.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, KEY)
    os.close(fd)
    os.chmod(path, 0o644)  # the test makes a readable file on purpose
    with pytest.raises(DeviceKeyError, match="chmod 600") as info:
        read_device_key(keys, "dev1")
    assert KEY.hex() not in str(info.value)
    os.chmod(path, 0o600)
    assert read_device_key(keys, "dev1") == KEY
    short = keys / "dev2" / "ota.key"
    short.parent.mkdir()
    fd = os.open(short, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"abc")
    os.close(fd)
    with pytest.raises(DeviceKeyError, match="3 bytes, not 32"):
        read_device_key(keys, "dev2")


class RestartingBoard(BoardModel):
    """Answers SWITCHING only after its restart, as the firmware does: the last chunk's answer
    never comes before the board runs the new firmware (and has forgotten the transfer)."""

    def receive(self, arg: bytes) -> list[tuple[int, int, int]] | None:
        events = super().receive(arg)
        if events is not None and ota.read_answer(events)["code"] == ota.SWITCHING:  # type: ignore[index]
            self.reset()
            return None
        return events


def test_a_board_that_switched_before_answering_gets_no_begin_again(tmp_path: Path) -> None:
    run = Run(tmp_path, board=RestartingBoard("dev1", KEY))
    run.start()
    t = run.transfer
    assert run.board.switched == t.stream and t.state == "transferring"
    run.later(SETTINGS.chunk_timeout_s)  # no answer: the last window again; the board does not know it
    assert t.state == "switching"
    assert run.link.begins_to("dev1") == [t.transfer_id]  # no BEGIN that would make it leave the new slot
    t.on_birth("2.0", run.now)
    assert t.state == "trial"
