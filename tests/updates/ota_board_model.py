"""A small model of a board's OTA receiver, built on shared_protocol.ota, and a lossy link
between it and the gateway's transfers. For the gateway's state machine only (lost chunks,
timeouts, resends, window, refusals): the real receiver is the firmware's, tested end to end
in tests/updates/test_fwota_e2e.py.

The model keeps what it received per manifest hash (its "flash"), so a BEGIN again after a
reset resumes from there, as the real board does."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shared_protocol import ota


@dataclass
class Frame:
    """What the control stage hands on for an EVENT: fields["events"] = [(channel, ticks, value)]."""

    fields: dict[str, Any]


class BoardModel:
    def __init__(self, device: str, key: bytes, *, arch: str = "native", counter: int = 0, version: str = "0.9"):
        self.device = device
        self.key = key
        self.arch = arch
        self.counter = counter
        self.version = version
        self.transfer: int | None = None
        self.begin: tuple[int, int, bytes] | None = None  # manifest_len, total, manifest sha
        self.flash: dict[bytes, bytearray] = {}  # manifest sha -> stream bytes held
        self.files: list[tuple[int, int, str]] = []  # (start, end, sha) of the stream's files
        self.switched: bytes | None = None  # the stream that was switched to
        self.received_chunks = 0

    def reset(self) -> None:
        """Power cycle: the transfer in RAM is gone, the flash stays."""
        self.transfer = None
        self.begin = None

    def answer(self, code: int, offset: int) -> list[tuple[int, int, int]]:
        return [(ch, 0, v) for ch, v in ota.answer_events(self.transfer or 0, code, offset)]

    def receive(self, arg: bytes) -> list[tuple[int, int, int]] | None:
        sub, transfer, f = ota.parse_arg(arg)
        if sub == ota.OTA_ABORT:
            if transfer == self.transfer:
                self.reset()
            return None
        if sub == ota.OTA_BEGIN:
            return self._begin(transfer, f)
        return self._chunk(transfer, f)

    def _begin(self, transfer: int, f: tuple[Any, ...]) -> list[tuple[int, int, int]]:
        mlen, total, msha, tag = f
        want = ota.hmac_sha256(self.key, ota.tag_message(self.device, transfer, mlen, total, msha))
        self.transfer = transfer
        if not ota.same_digest(want, tag):
            self.transfer = None
            return [(ch, 0, v) for ch, v in ota.answer_events(transfer, ota.BAD_TAG, 0)]
        self.begin = (mlen, total, msha)
        held = self.flash.setdefault(msha, bytearray())
        return self.answer(ota.RECEIVING, len(held))

    def _chunk(self, transfer: int, f: tuple[Any, ...]) -> list[tuple[int, int, int]]:
        if transfer != self.transfer or self.begin is None:
            return [(ch, 0, v) for ch, v in ota.answer_events(transfer, ota.UNKNOWN_TRANSFER, 0)]
        offset, data = f
        mlen, total, msha = self.begin
        held = self.flash[msha]
        if offset != len(held) or len(held) + len(data) > total:
            return self.answer(ota.RECEIVING, len(held))
        self.received_chunks += 1
        before = len(held)
        held += bytes(data)
        if before < mlen <= len(held):
            refusal = self._manifest(bytes(held[:mlen]), msha)
            if refusal is not None:
                del self.flash[msha]
                self.reset()
                return [(ch, 0, v) for ch, v in ota.answer_events(transfer, refusal, 0)]
        for start, end, sha in self.files:
            if before < end <= len(held) and hashlib.sha256(bytes(held[start:end])).hexdigest() != sha:
                del held[start:]
                return self.answer(ota.BAD_HASH, start)
        if len(held) == total:
            self.switched = bytes(held)
            return self.answer(ota.SWITCHING, total)
        return self.answer(ota.RECEIVING, len(held))

    def _manifest(self, raw: bytes, msha: bytes) -> int | None:
        if hashlib.sha256(raw).digest() != msha:
            return ota.BAD_MANIFEST
        lines = raw.decode().rstrip("\n").split("\n")
        head = dict(ota.parse_header_line(i, lines[i]) for i in range(5))
        if head["device"] != self.device:
            return ota.BAD_MANIFEST
        if head["arch"] != self.arch:
            return ota.WRONG_ARCH
        if head["counter"] <= self.counter:
            return ota.REPLAYED
        pos = len(raw)
        self.files = []
        for line in lines[5:]:
            _path, size, sha = ota.parse_file_line(line)
            self.files.append((pos, pos + size, sha))
            pos += size
        return None


@dataclass
class Link:
    """Gateway -> board CMDs and board -> gateway answers, delivered on ``run()``; ``drop`` and
    ``mangle`` decide per CMD (given the parsed argument) whether it is lost or altered."""

    boards: dict[str, BoardModel]
    deliver: Callable[[str, Frame], None] | None = None  # the gateway's on_event(device, frame)
    drop: Callable[[str, tuple[int, int, tuple[Any, ...]]], bool] = lambda d, a: False
    mangle: Callable[[str, bytes], bytes] = lambda d, arg: arg
    drop_answers: bool = False
    queue: list[tuple[str, bytes]] = field(default_factory=list)
    sent: list[tuple[str, tuple[int, int, tuple[Any, ...]]]] = field(default_factory=list)
    in_flight_max: int = 0  # most CHUNK bytes beyond the board's offset at a send, in chunks

    def send(self, device: str, arg: bytes) -> None:
        parsed = ota.parse_arg(arg)
        self.sent.append((device, parsed))
        board = self.boards.get(device)
        if board is not None and parsed[0] == ota.OTA_CHUNK and board.begin is not None:
            held = len(board.flash.get(board.begin[2], b""))
            queued = sum(1 for d, a in self.queue if d == device and ota.parse_arg(a)[0] == ota.OTA_CHUNK)
            if parsed[2][0] >= held:
                self.in_flight_max = max(self.in_flight_max, queued + 1)
        self.queue.append((device, arg))

    def run(self) -> int:
        """Deliver until nothing moves; returns the messages delivered."""
        n = 0
        while self.queue:
            device, arg = self.queue.pop(0)
            parsed = ota.parse_arg(arg)
            if self.drop(device, parsed) or device not in self.boards:
                continue
            events = self.boards[device].receive(self.mangle(device, arg))
            n += 1
            if events is not None and not self.drop_answers and self.deliver is not None:
                self.deliver(device, Frame({"events": events}))
        return n

    def chunks_to(self, device: str) -> int:
        return sum(1 for d, a in self.sent if d == device and a[0] == ota.OTA_CHUNK)

    def begins_to(self, device: str) -> list[int]:
        return [a[1] for d, a in self.sent if d == device and a[0] == ota.OTA_BEGIN]
