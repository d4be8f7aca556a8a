"""One device's firmware transfer over the air, the gateway's side (docs/updates.md).

The board's side and the bytes on the wire are in shared_protocol/ota.py. Here:

- the device's OTA key, read from ``<device_keys_dir>/<device>/ota.key`` (32 bytes, mode 0600,
  kept by the flash tool at provisioning); used for BEGIN's tag only, never logged or kept;
- the stream: the manifest for this device, then every file of the release in its order;
- the state machine: ``begin`` (BEGIN sent) -> ``transferring`` (CHUNKs, up to ``window`` in
  flight, sent from the offset the board answers with) -> ``switching`` (every file checked,
  the board restarts into the new slot) -> ``trial`` (its BIRTH shows the new version) ->
  ``confirmed`` (it published data the gateway stored) or ``failed`` (a refusal, no progress
  after ``max_retries`` resends, a rollback, or no confirmation within ``confirm_timeout_s``).

A lost chunk shows as an answer that does not move the board's offset while later chunks are
in flight: the window is sent again from that offset (once per offset); a lost answer, or a
silent board, as no progress for ``chunk_timeout_s``: the window is sent again from the last
offset the board answered with. The board writes only the chunk at the offset it expects, so a
resend costs bytes, never a wrong byte.

The board answers the last chunk with SWITCHING only after its restart into the new slot, so the
BIRTH of the new version may come first (it counts as the switch), and a resend meanwhile meets
a board that has forgotten the transfer: once every byte went out, that means "switched" (a
BEGIN would make it leave the new firmware it runs on trial), and its BIRTH is waited for.

Processing thread only (answers come from the control stage, ticks from the processing loop).
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.errors import GatewayError
from gateway.updates.settings import FirmwareSettings
from shared_protocol import ota

log = logging.getLogger(__name__)

KEY_FILE = "ota.key"
KEY_BYTES = 32

#: Send a CMD_OTA argument to a device (the outbox, with CMD_OTA).
Send = Callable[[str, bytes], object]

#: Every state of a device in a rollout; the last three are final.
ACTIVE = ("begin", "transferring", "switching", "trial")
FINAL = ("confirmed", "failed", "current")

#: What each refusal of the board means, for the reason a user reads.
REFUSALS = {
    "bad_tag": "the board's ota.key differs from the gateway's copy (re-provision the device with the flash tool, "
    "or fix [updates.firmware] device_keys_dir)",
    "bad_manifest": "the board could not read the manifest the gateway sent",
    "wrong_arch": "the release is built for another architecture than this board's: pack the build of its arch",
    "replayed": "the board runs a release with this counter or a higher one",
    "bad_hash": "a file's SHA-256 differed from the manifest too often",
    "no_space": "the board's flash cannot hold the new slot",
    "rolled_back_crash": "the new firmware raised at start-up: the board went back to its old firmware",
    "rolled_back_unconfirmed": "the board restarted before the new firmware confirmed: it went back to its old firmware",
}


class DeviceKeyError(GatewayError):
    """A device's OTA key is missing, unreadable or open to others (the message says what to do)."""


def read_device_key(keys_dir: Path | None, device: str) -> bytes:
    """The 32-byte OTA key of ``device``; DeviceKeyError if missing, other users may read it,
    or it is not 32 bytes. The key is never logged."""
    if keys_dir is None:
        raise DeviceKeyError(
            "[updates.firmware] device_keys_dir is not set: point it at the flash tool's devices "
            "directory, which holds <device>/ota.key of every provisioned board"
        )
    path = keys_dir / device / KEY_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise DeviceKeyError(
            f"no OTA key for device {device} at {path}: provision the device with the flash tool "
            "(it writes ota.key to the board and keeps this copy)"
        ) from None
    except OSError as exc:
        raise DeviceKeyError(f"cannot read the OTA key {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise DeviceKeyError(f"{path} is not a regular file")
        if st.st_mode & 0o077:
            raise DeviceKeyError(
                f"{path} may be read by other users (mode {stat.S_IMODE(st.st_mode):o}): "
                f"a device key must be private; run `chmod 600 {path}` (and check who had access)"
            )
        key = os.read(fd, KEY_BYTES + 1)
    finally:
        os.close(fd)
    if len(key) != KEY_BYTES:
        raise DeviceKeyError(f"{path} holds {len(key)} bytes, not {KEY_BYTES}: provision the device again")
    return key


@dataclass(frozen=True)
class FirmwareImage:
    """A firmware release: its files (in stream order) under ``root``."""

    version: str
    counter: int
    arch: str
    files: tuple[tuple[str, int, str], ...]  # (path, size, sha256 hex)
    root: Path

    def data(self) -> bytes:
        """Every file's bytes in order, each checked against its hash."""
        out = bytearray()
        for path, size, digest in self.files:
            raw = (self.root / path).read_bytes()
            if len(raw) != size or hashlib.sha256(raw).hexdigest() != digest:
                raise GatewayError(f"firmware file {self.root / path} changed since the bundle was verified")
            out += raw
        return bytes(out)

    def manifest(self, device: str) -> bytes:
        return ota.manifest_text(self.version, self.counter, self.arch, device, self.files).encode()


def new_transfer_id() -> int:
    return secrets.randbelow(ota.MAX_TRANSFER_ID) + 1


class Transfer:
    """One device's transfer; ``state`` and ``reason`` say where it is."""

    def __init__(
        self,
        device: str,
        image: FirmwareImage,
        data: bytes,
        key: bytes,
        *,
        settings: FirmwareSettings,
        send: Send,
        transfer_id: int | None = None,
    ) -> None:
        self.device = device
        self.version = image.version
        self.settings = settings
        self.send = send
        self.transfer_id = transfer_id or new_transfer_id()
        manifest = image.manifest(device)
        self.stream = manifest + data
        self.total = len(self.stream)
        digest = hashlib.sha256(manifest).digest()
        tag = ota.hmac_sha256(key, ota.tag_message(device, self.transfer_id, len(manifest), self.total, digest))
        self._begin = ota.begin_arg(self.transfer_id, len(manifest), self.total, digest, tag)
        self.state = "begin"
        self.reason: str | None = None
        self.code = ""  # why it failed, in a word: the board's result name, no_progress, not_confirmed, aborted
        self.acked = 0  # the offset the board last answered with
        self.sent = 0  # the next offset to send
        self.retries = 0  # resends without progress
        self.resends = 0  # chunks sent again (lost, out of order, timed out)
        self.chunks = 0  # chunks sent
        self.bytes_sent = 0  # CMD_OTA argument bytes sent (BEGIN and CHUNKs)
        self._rewound_at: int | None = None
        self.all_sent = False  # every byte of the stream went out at least once
        self._last_progress = 0.0
        self.started_at = 0.0
        self.switched_at = 0.0
        self.deadline = 0.0  # switching / trial: confirmed by then, or failed

    # ------------------------------------------------------------------ driving
    def start(self, now: float) -> None:
        self.started_at = self._last_progress = now
        self._send_begin()

    def resume(self, state: str, now: float, *, switched_at: float, deadline: float) -> None:
        """After a gateway restart: a device that was switching or in trial is waited for;
        one that was transferring gets its BEGIN again (the board answers with what it holds)."""
        if state in ("switching", "trial"):
            self.state = state
            self.started_at = self._last_progress = now
            self.switched_at = switched_at
            self.deadline = deadline
        else:
            self.start(now)

    def abort(self, reason: str) -> None:
        if self.state in ("begin", "transferring"):
            self._send(ota.abort_arg(self.transfer_id))
        self._fail(reason, "aborted")

    def _send(self, arg: bytes) -> None:
        self.bytes_sent += len(arg)
        self.send(self.device, arg)

    def _send_begin(self) -> None:
        self.state = "begin"
        self._send(self._begin)

    def _pump(self) -> None:
        step = self.settings.chunk_bytes
        limit = min(self.total, self.acked + self.settings.window * step)
        while self.sent < limit:
            end = min(self.sent + step, self.total)
            self._send(ota.chunk_arg(self.transfer_id, self.sent, self.stream[self.sent : end]))
            self.chunks += 1
            self.sent = end
        if self.sent == self.total:
            self.all_sent = True

    def _rewind(self, offset: int) -> None:
        """Send again from ``offset``."""
        if self.sent > offset:
            step = self.settings.chunk_bytes
            self.resends += (self.sent - offset + step - 1) // step
        self.sent = offset
        self._rewound_at = offset
        self._pump()

    def _fail(self, reason: str, code: str) -> None:
        self.state = "failed"
        self.reason = reason
        self.code = code

    def _no_progress(self, now: float, what: str) -> bool:
        """A retry; True (and failed) once they are used up."""
        self.retries += 1
        self._last_progress = now
        if self.retries > self.settings.max_retries:
            self._fail(
                f"{what} after {self.settings.max_retries} resends: is the device online and running?", "no_progress"
            )
            return True
        return False

    # ------------------------------------------------------------------ events
    def on_answer(self, answer: dict[str, Any], now: float) -> None:
        """An OTA answer of this device (shared_protocol.ota.read_answer), already matched
        to this transfer's id."""
        if self.state in FINAL:
            return
        code = int(answer["code"])
        offset = int(answer["offset"])
        if code == ota.RECEIVING:
            self._receiving(offset, now)
        elif code == ota.SWITCHING:
            if self.state in ("begin", "transferring"):
                self._switched(now)
        elif code == ota.CONFIRMED:
            self.state = "confirmed"
        elif code == ota.BAD_HASH and self.state in ("begin", "transferring"):
            # the board dropped the file that starts at `offset`: send it again
            if not self._no_progress(now, "files failed their hash"):
                self.state = "transferring"
                self.acked = offset
                self._rewind(offset)
        elif code == ota.UNKNOWN_TRANSFER:
            if self.state != "transferring":
                return  # answers to chunks sent before the BEGIN that is on its way
            if self.all_sent:
                # Every byte went out: the board most likely checked the last file, switched and
                # restarted (it sends SWITCHING after the restart), and now runs the new firmware
                # on trial; a BEGIN would make it leave that. Its BIRTH tells.
                self._switched(now)
            elif not self._no_progress(now, "the board kept forgetting the transfer"):
                # the board lost the transfer (a reset): BEGIN again, once for the whole window
                self.sent = self.acked = 0
                self._send_begin()
        elif code >= ota.REFUSED_MIN:
            name = answer["result"]
            self._fail(f"{name}: {REFUSALS.get(name, f'refused by the board (code {code})')}", name)

    def _switched(self, now: float) -> None:
        self.state = "switching"
        self.switched_at = now
        self.deadline = now + self.settings.confirm_timeout_s

    def _receiving(self, offset: int, now: float) -> None:
        if self.state not in ("begin", "transferring"):
            return
        if offset > self.total:
            self._fail(
                f"the board holds {offset} bytes of a {self.total}-byte stream: refused as malformed", "bad_offset"
            )
            return
        first = self.state == "begin"
        self.state = "transferring"
        if first or offset > self.acked:
            if offset > self.acked:
                self.retries = 0
            self._last_progress = now
            self.acked = offset
            self._rewound_at = None
            if first or self.sent < offset:
                self.sent = offset  # the answer to BEGIN: what the board holds already (a resume)
            self._pump()
        elif offset == self.acked and self.sent > offset and self._rewound_at != offset:
            self._rewind(offset)  # a chunk was lost: the later ones are refused until it comes

    def on_birth(self, fw_version: str | None, birth_at: float) -> None:
        """The device's registry entry after a BIRTH: the new version booted (on trial)."""
        if self.state in ("transferring", "switching") and fw_version == self.version and birth_at >= self.started_at:
            if self.state == "transferring":
                self.switched_at = birth_at
                self.deadline = birth_at + self.settings.confirm_timeout_s
            self.state = "trial"

    def tick(self, now: float) -> None:
        if self.state in ("switching", "trial"):
            if now >= self.deadline:
                self._fail(
                    f"not confirmed within {self.settings.confirm_timeout_s:g} s of the switch "
                    "(the board rolls back on its own if the new firmware does not confirm)",
                    "not_confirmed",
                )
            return
        if self.state not in ("begin", "transferring") or now - self._last_progress < self.settings.chunk_timeout_s:
            return
        if self.state == "begin":
            if not self._no_progress(now, "no answer to BEGIN"):
                self._send_begin()
        elif not self._no_progress(now, f"no progress at offset {self.acked}"):
            self._rewind(self.acked)

    def facts(self) -> dict[str, Any]:
        """What status and rollout.json show of it (no key material)."""
        return {
            "state": self.state,
            "reason": self.reason,
            "transfer": self.transfer_id,
            "offset": self.acked,
            "total": self.total,
            "chunks": self.chunks,
            "resends": self.resends,
            "retries": self.retries,
            "switched_at": self.switched_at,
            "deadline": self.deadline,
        }
