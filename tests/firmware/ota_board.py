"""Firmware OTA test parts: a simulated board that comes back after a reset or a power cut
(the real firmware on the unix port, main.py the A/B loader), and a sender that plays the
gateway's side of CMD_OTA with paho and shared_protocol.ota, as the rollout does."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared_protocol import BIRTH, CMD_OTA, EVENT, ota
from shared_protocol.gw_encode import encode_cmd
from shared_protocol.topics import topic
from tests.firmware.gateway_stub import GatewayStub
from tests.firmware.simdevice import EXIT_RESET, SimDevice
from tests.support.waiting import wait_until
from tools.flash.build import build
from tools.release.pack import LOADER_FILES

OLD_VERSION = "sensorfw 0.1.0"  # core/app.py FW_VERSION: the flat layout's firmware


@dataclass(frozen=True)
class Release:
    """A firmware release as the gateway streams it: the manifest, then the files."""

    manifest: bytes
    files: tuple[tuple[str, bytes], ...]

    @property
    def stream(self) -> bytes:
        return self.manifest + b"".join(data for _, data in self.files)

    def file_span(self, path: str) -> tuple[int, int]:
        """(start, end) of a file in the stream."""
        pos = len(self.manifest)
        for p, data in self.files:
            if p == path:
                return pos, pos + len(data)
            pos += len(data)
        raise KeyError(path)

    def ends(self) -> list[int]:
        """Stream offsets where the manifest or a file ends."""
        out = [len(self.manifest)]
        for _, data in self.files:
            out.append(out[-1] + len(data))
        return out


def native_build(dest: Path) -> dict[str, bytes]:
    """The firmware as the flash tool builds it for the unix port, minus the loader files."""
    out_dir, manifest = build("native", out_dir=dest)
    return {f.path: (out_dir / f.path).read_bytes() for f in manifest.files if f.path not in LOADER_FILES}


def release(
    files: dict[str, bytes], version: str, counter: int, *, device: str = "dev1", arch: str = "native"
) -> Release:
    ordered = tuple(sorted(files.items()))
    lines = [(p, len(d), hashlib.sha256(d).hexdigest()) for p, d in ordered]
    return Release(ota.manifest_text(version, counter, arch, device, lines).encode(), ordered)


class PoweredBoard:
    """A SimDevice on power: restarted after machine.reset (exit 4) and after a power cut
    (SIGKILL), as a board comes back; any other exit ends it."""

    def __init__(self, dev: SimDevice) -> None:
        self.dev = dev
        self.exits: list[int] = []
        self.stopping = False
        self.powered = threading.Event()  # cleared: off after a power cut until power_on()
        self.powered.set()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> PoweredBoard:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self.stopping:
            self.powered.wait()
            if self.stopping:
                return
            self.dev.start()
            assert self.dev.proc is not None
            rc = self.dev.proc.wait()
            self.dev._drained()  # its output read to the end, the pipe closed
            self.exits.append(rc)
            if rc not in {EXIT_RESET, -signal.SIGKILL}:
                return

    def power_cut(self, stay_off: bool = False) -> None:
        """kill -9: nothing flushed; the board restarts at once unless stay_off (then at
        power_on(), so a test can look at or change its flash meanwhile)."""
        proc = self.dev.proc
        assert proc is not None
        if stay_off:
            self.powered.clear()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def power_on(self) -> None:
        self.powered.set()

    def stop(self) -> None:
        self.stopping = True
        self.powered.set()
        proc = self.dev.proc
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        self._thread.join(10)

    def state(self) -> dict[str, Any] | None:
        path = self.dev.flash / "ota.json"
        return json.loads(path.read_text()) if path.exists() else None


class Sender:
    """The gateway's side of CMD_OTA for one device, over the stub's paho client."""

    def __init__(self, gw: GatewayStub, device: str, key: bytes) -> None:
        self.gw = gw
        self.device = device
        self.key = key
        self.cmd_id = 1000
        self.seen = 0  # answers consumed so far

    # -- what the board says ---------------------------------------------------------------
    def answers(self) -> list[dict[str, Any]]:
        """Every OTA answer the board sent, once each, in order."""
        out, keys = [], set()
        for r in self.gw.of(EVENT):
            key = (r.frame.boot, r.frame.seq)
            a = ota.read_answer(r.frame.fields["events"])
            if a is not None and key not in keys:
                keys.add(key)
                out.append(a)
        return out

    def next_answer(self, timeout: float = 15) -> dict[str, Any]:
        got = wait_until(lambda: self.answers()[self.seen :], timeout=timeout, what="an OTA answer")
        self.seen += 1
        return got[0]

    def births(self) -> list[tuple[int, str]]:
        """(boot, firmware version) of each BIRTH, once each, in order."""
        out, keys = [], set()
        for r in self.gw.of(BIRTH):
            key = (r.frame.boot, r.frame.seq)
            if not r.retained and key not in keys:
                keys.add(key)
                out.append((r.frame.boot, r.frame.fields["fw_version"]))
        return out

    def boots(self) -> list[tuple[int, str]]:
        """(boot, version of its first BIRTH) of each boot seen."""
        out: dict[int, str] = {}
        for boot, version in self.births():
            out.setdefault(boot, version)
        return list(out.items())

    def wait_boots(self, n: int, timeout: float = 30) -> str:
        """The firmware version of the n-th boot, once its BIRTH is in (the board is
        connected and subscribed from then on)."""
        wait_until(lambda: len(self.boots()) >= n, timeout=timeout, what=f"the BIRTH of boot number {n}")
        return self.boots()[n - 1][1]

    # -- what the gateway sends ------------------------------------------------------------
    def send(self, arg: bytes) -> None:
        self.cmd_id += 1
        buf = bytearray(64 + len(arg))
        n = encode_cmd(buf, 0, self.cmd_id, 0, self.cmd_id, CMD_OTA, arg)
        self.gw.client.publish(topic("el", self.gw.site, self.device, "cmd"), bytes(buf[:n]), qos=1)

    def begin(self, transfer: int, rel: Release, key: bytes | None = None) -> dict[str, Any]:
        msha = hashlib.sha256(rel.manifest).digest()
        mlen, total = len(rel.manifest), len(rel.stream)
        tag = ota.hmac_sha256(key or self.key, ota.tag_message(self.device, transfer, mlen, total, msha))
        self.send(ota.begin_arg(transfer, mlen, total, msha, tag))
        return self.next_answer()

    def chunk(self, transfer: int, offset: int, data: bytes) -> dict[str, Any]:
        self.send(ota.chunk_arg(transfer, offset, data))
        return self.next_answer()

    def run(
        self,
        transfer: int,
        rel: Release,
        *,
        chunk: int = 4096,
        stop: Callable[[int], bool] = lambda _: False,
        alter: Callable[[int, bytes], bytes] = lambda _, d: d,
    ) -> dict[str, Any]:
        """BEGIN, then chunks from the offset the board answers (each ends at the latest at
        the end of the manifest or a file), until SWITCHING, a refusal or stop(offset)."""
        stream, ends = rel.stream, rel.ends()
        a = self.begin(transfer, rel)
        while a["code"] == ota.RECEIVING and not stop(a["offset"]):
            off = a["offset"]
            end = min([off + chunk] + [e for e in ends if e > off])
            a = self.chunk(transfer, off, alter(off, stream[off:end]))
        return a
