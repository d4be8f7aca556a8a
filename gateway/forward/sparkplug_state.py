"""What the Sparkplug edge node keeps across restarts: the ``bdSeq`` of its last MQTT CONNECT and the
devices it knows (their metric definitions, online or not), in one small JSON file beside the queue.

``bdSeq`` is written (and fsynced) before every CONNECT that carries it in its will, so a restart,
even after kill -9 or a power cut, never reuses the number of a session a host may still hold: the
next CONNECT has the stored value + 1 (0 after 255).  The device catalogue is written when it
changed, at most every ``save_interval_s`` and at stop; a catalogue lost with a crash costs only
births sent later (a device is born again with its next record).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("edgeline.forward")

FORMAT = 1


class SparkplugState:
    def __init__(self, path: Path, *, save_interval_s: float = 5.0) -> None:
        self.path = path
        self.save_interval_s = save_interval_s
        self.bd_seq: int | None = None  # of the last CONNECT (None: never connected)
        self.devices: dict[str, dict[str, Any]] = {}
        self._dirty = False
        self._saved_at = 0.0
        self._lock = threading.Lock()  # next_bd_seq: network thread; the catalogue: store thread
        self._load()

    def next_bd_seq(self) -> int:
        """The bdSeq of the next CONNECT (previous + 1, wrapping at 256), written before it is used."""
        self.bd_seq = 0 if self.bd_seq is None else (self.bd_seq + 1) % 256
        self._write()
        return self.bd_seq

    def set_device(self, device: str, entry: dict[str, Any] | None) -> None:
        """Record (None: forget) what is known of ``device``: written within ``save_interval_s``."""
        with self._lock:
            if entry is None:
                self.devices.pop(device, None)
            else:
                self.devices[device] = entry
            self._dirty = True

    def save_if_due(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if self._dirty and now - self._saved_at >= self.save_interval_s:
            self._write()

    def save(self) -> None:
        if self._dirty:
            self._write()

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            # Unreadable: start afresh (hosts only compare a death's bdSeq with the birth before it).
            log.warning("sparkplug state %s unreadable (%s): bdSeq starts at 0, devices are born again", self.path, exc)
            return
        bd_seq = data.get("bdSeq") if isinstance(data, dict) else None
        if isinstance(bd_seq, int) and 0 <= bd_seq <= 255:
            self.bd_seq = bd_seq
        devices = data.get("devices") if isinstance(data, dict) else None
        if isinstance(devices, dict):
            self.devices = {k: v for k, v in devices.items() if isinstance(v, dict)}

    def _write(self) -> None:
        with self._lock:
            body = json.dumps({"format": FORMAT, "bdSeq": self.bd_seq, "devices": self.devices}, separators=(",", ":"))
            self._dirty = False
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            log.error("sparkplug state %s not written: %s", self.path, exc)
            with contextlib.suppress(OSError):
                tmp.unlink()
            self._dirty = True
            return
        self._saved_at = time.monotonic()
