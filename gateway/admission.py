"""Admission: which device ids get state (registry row, sequence tracking, windows) here.

A broker with per-device credentials already refuses unknown clients; this stage is
what bounds the gateway's memory and disk when it is not (an open broker, a leaked
credential, a firmware bug that invents ids). A device id is admitted when it is
already known (the registry), or listed in ``devices_file`` when one is configured
(a Mosquitto password file, or one id per line), or, without a list, while fewer
than ``max_devices`` ids are admitted. Every other id is quarantined: its frames are
counted per id in a bounded table (the oldest id is forgotten and counted), nothing
is stored, ACKed or asked of it, so its device keeps its frames until it is admitted.
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_RELOAD_S = 1.0


def read_device_ids(path: Path) -> set[str]:
    """Ids in a Mosquitto password file (``id:hash`` lines) or a plain list (one per line)."""
    out: set[str] = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        name = line.split("#", 1)[0].split(":", 1)[0].strip()
        if _ID_RE.match(name):
            out.add(name)
    return out


class Admission:
    def __init__(
        self,
        known: Iterable[str],
        *,
        max_devices: int,
        devices_file: Path | None = None,
        quarantine_size: int = 256,
    ) -> None:
        self.max_devices = max_devices
        self.devices_file = devices_file
        self.quarantine_size = quarantine_size
        self.admitted: set[str] = set(known)
        self.quarantine: OrderedDict[str, int] = OrderedDict()
        self.quarantined_frames = 0
        self.quarantine_forgotten = 0  # ids pushed out of the bounded table
        self.refused_full = 0  # ids refused because max_devices were admitted
        self._allowed: set[str] | None = None
        self._file_stamp: tuple[int, int] | None = None
        self._next_check = 0.0
        self.file_error: str | None = None

    def admit(self, device: str, now: float) -> bool:
        """True when frames of `device` may be processed; otherwise they are counted."""
        if device in self.admitted:
            return True
        allowed = self._allowed_ids(now)
        if (allowed is None or device in allowed) and len(self.admitted) < self.max_devices:
            self.admitted.add(device)
            self.quarantine.pop(device, None)
            return True
        if allowed is None or device in allowed:
            self.refused_full += 1
        self.quarantined_frames += 1
        q = self.quarantine
        q[device] = q.pop(device, 0) + 1
        if len(q) > self.quarantine_size:
            q.popitem(last=False)
            self.quarantine_forgotten += 1
        return False

    def _allowed_ids(self, now: float) -> set[str] | None:
        path = self.devices_file
        if path is None:
            return None
        if now >= self._next_check:
            self._next_check = now + _RELOAD_S
            try:
                st = os.stat(path)
                stamp = (st.st_mtime_ns, st.st_size)
                if stamp != self._file_stamp:
                    self._allowed = read_device_ids(path)
                    self._file_stamp = stamp
                self.file_error = None
            except (OSError, UnicodeError) as exc:
                # Keep the last good list: a file being rewritten must not lock devices out.
                self.file_error = f"registry.devices_file {path}: {exc}"
        return self._allowed if self._allowed is not None else set()

    def stats(self) -> dict[str, Any]:
        return {
            "admitted": len(self.admitted),
            "max_devices": self.max_devices,
            "quarantined_frames": self.quarantined_frames,
            "quarantined_ids": len(self.quarantine),
            "quarantine_forgotten": self.quarantine_forgotten,
            "refused_full": self.refused_full,
            "quarantine_sample": dict(list(self.quarantine.items())[-10:]),
            "devices_file_error": self.file_error,
        }
