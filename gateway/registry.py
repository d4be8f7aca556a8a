"""Device registry, persisted in SQLite.

Learns a device's channel schema and firmware version from BIRTH, keeps its
HEALTH history (bounded per device), marks it offline on DEATH (the broker
publishes it as the device's last will) or after a silence, and records when
it was last seen. The pipeline asks it for the schema before decoding DATA;
no schema means "ask the device to rebirth", never a guess.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SEEN_WRITE_S = 5.0
SEEN_SCAN_S = 1.0  # devices whose last_seen changed are looked at this often (not every batch)

# (name, unit, scale, offset, sample_type, rate_hz) as in shared_protocol.encode_birth
Channel = tuple[str, str, float, float, int, float]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    device TEXT PRIMARY KEY,
    boot INTEGER,
    fw_version TEXT,
    channels TEXT,
    birth_at REAL,
    births INTEGER NOT NULL DEFAULT 0,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    online INTEGER NOT NULL DEFAULT 0,
    state_reason TEXT NOT NULL DEFAULT 'new',
    state_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS health (
    id INTEGER PRIMARY KEY,
    device TEXT NOT NULL,
    at REAL NOT NULL,
    boot INTEGER NOT NULL,
    fields TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS health_device ON health (device, id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(slots=True)
class DeviceInfo:
    device: str
    first_seen: float
    last_seen: float
    boot: int | None = None
    fw_version: str | None = None
    channels: tuple[Channel, ...] | None = None
    birth_at: float | None = None
    births: int = 0
    online: bool = False
    state_reason: str = "new"
    state_at: float = 0.0
    last_health: dict[str, Any] = field(default_factory=dict)

    def facts(self) -> dict[str, Any]:
        """What operators see of the device everywhere (status page rows, local state topic)."""
        return {
            "device": self.device,
            "online": self.online,
            "state_reason": self.state_reason,
            "state_at": self.state_at,
            "last_seen": self.last_seen,
            "boot": self.boot,
            "fw_version": self.fw_version,
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.facts(),
            "channels": [list(c) for c in self.channels] if self.channels else None,
            "births": self.births,
            "first_seen": self.first_seen,
            "last_health": self.last_health,
        }


class Registry:
    """Known devices; in memory for the hot path, written through to SQLite."""

    def __init__(self, path: Path, *, health_history: int = 1000) -> None:
        self.path = path
        self.health_history = health_history
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        self.devices: dict[str, DeviceInfo] = {}
        self._dirty_seen: set[str] = set()
        self._pending: list[tuple[str, tuple[Any, ...]]] = []
        self._write_lock = threading.Lock()
        self._seen_written: dict[str, float] = {}
        self._next_seen_scan = 0.0
        self._tables: dict[tuple[Channel, ...], tuple[Channel, ...]] = {}
        for row in self.db.execute(
            "SELECT device, boot, fw_version, channels, birth_at, births, first_seen, last_seen,"
            " online, state_reason, state_at FROM devices"
        ):
            chans = tuple(tuple(c) for c in json.loads(row[3])) if row[3] else None
            self.devices[row[0]] = DeviceInfo(
                device=row[0],
                boot=row[1],
                fw_version=row[2],
                channels=chans,
                birth_at=row[4],
                births=row[5],
                first_seen=row[6],
                last_seen=row[7],
                online=bool(row[8]),
                state_reason=row[9],
                state_at=row[10],
            )

    def close(self) -> None:
        self._seen_written.clear()  # write every last_seen on the way out
        self._next_seen_scan = 0.0
        self.flush()
        self.db.close()

    # ------------------------------------------------------------------ events
    def _get(self, device: str, at: float) -> DeviceInfo:
        info = self.devices.get(device)
        if info is None:
            info = self.devices[device] = DeviceInfo(device=device, first_seen=at, last_seen=at, state_at=at)
            self._pending.append(
                (
                    "INSERT OR IGNORE INTO devices (device, first_seen, last_seen, state_at) VALUES (?, ?, ?, ?)",
                    (device, at, at, at),
                )
            )
        return info

    def schema(self, device: str) -> tuple[Channel, ...] | None:
        info = self.devices.get(device)
        return info.channels if info else None

    def on_birth(
        self, device: str, *, boot: int, fw_version: str, channels: list[Channel] | tuple[Channel, ...], at: float
    ) -> DeviceInfo:
        info = self._get(device, at)
        info.boot = boot
        info.fw_version = fw_version
        table = tuple((str(n), str(u), float(s), float(o), int(st), float(r)) for n, u, s, o, st, r in channels)
        info.channels = self._tables.setdefault(table, table)  # one copy per distinct channel table
        info.birth_at = at
        info.births += 1
        self._set_state(info, True, "birth", at)
        self.touch(device, at)
        self._pending.append(
            (
                "UPDATE devices SET boot = ?, fw_version = ?, channels = ?, birth_at = ?, births = ? WHERE device = ?",
                (boot, fw_version, json.dumps(info.channels), at, info.births, device),
            )
        )
        return info

    def on_health(self, device: str, *, boot: int, fields: dict[str, Any], at: float) -> DeviceInfo:
        info = self._get(device, at)
        info.last_health = dict(fields)
        self.touch(device, at)
        self._pending.append(
            (
                "INSERT INTO health (device, at, boot, fields) VALUES (?, ?, ?, ?)",
                (device, at, boot, json.dumps(fields, sort_keys=True, default=str)),
            )
        )
        self._pending.append(
            (
                "DELETE FROM health WHERE device = ? AND id <= "
                "(SELECT id FROM health WHERE device = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (device, device, self.health_history),
            )
        )
        return info

    def on_death(self, device: str, *, at: float) -> bool:
        """DEATH (last will or clean goodbye); True if this changed the state."""
        info = self._get(device, at)
        return self._set_state(info, False, "death", at)

    def touch(self, device: str, at: float) -> bool:
        """A frame arrived; True if the device came back online."""
        info = self._get(device, at)
        info.last_seen = max(info.last_seen, at)
        self._dirty_seen.add(device)
        if not info.online and at >= info.state_at:
            return self._set_state(info, True, "seen", at)
        return False

    def check_silence(self, now: float, offline_after_s: float) -> list[DeviceInfo]:
        """Mark devices silent for longer than offline_after_s offline; returns them."""
        gone = []
        for info in self.devices.values():
            if info.online and now - info.last_seen > offline_after_s:
                self._set_state(info, False, "silence", now)
                gone.append(info)
        return gone

    def _set_state(self, info: DeviceInfo, online: bool, reason: str, at: float) -> bool:
        changed = info.online != online
        info.online = online
        info.state_reason = reason
        info.state_at = at
        self._pending.append(
            (
                "UPDATE devices SET online = ?, state_reason = ?, state_at = ? WHERE device = ?",
                (int(online), reason, at, info.device),
            )
        )
        return changed

    def take_pending(self) -> list[tuple[str, tuple[Any, ...]]]:
        """Hand over the writes accumulated since the last call (for write(), maybe on another thread)."""
        ops = self._pending
        self._pending = []
        now = time.monotonic()
        if self._dirty_seen and (ops or now >= self._next_seen_scan):
            # last_seen is advisory on disk (memory is exact): write it at most every
            # SEEN_WRITE_S per device, and always together with a state change. Looked at
            # every SEEN_SCAN_S, so a batch's cost does not grow with the fleet.
            self._next_seen_scan = now + SEEN_SCAN_S
            keep: set[str] = set()
            for d in self._dirty_seen:
                info = self.devices[d]
                if info.last_seen - self._seen_written.get(d, 0.0) >= SEEN_WRITE_S or ops:
                    ops.append(("UPDATE devices SET last_seen = ? WHERE device = ?", (info.last_seen, d)))
                    self._seen_written[d] = info.last_seen
                else:
                    keep.add(d)
            self._dirty_seen = keep
        return ops

    def write(self, ops: list[tuple[str, tuple[Any, ...]]]) -> None:
        """Apply writes from take_pending() in one transaction."""
        if not ops:
            return
        with self._write_lock:
            db = self.db
            db.execute("BEGIN")
            try:
                for sql, args in ops:
                    db.execute(sql, args)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def flush(self) -> None:
        """Write pending changes and last-seen times now (same thread)."""
        self.write(self.take_pending())

    # ------------------------------------------------------------------ queries
    def health_history_of(self, device: str, limit: int = 100) -> list[tuple[float, int, dict[str, Any]]]:
        self.flush()
        with self._write_lock:
            rows = self.db.execute(
                "SELECT at, boot, fields FROM health WHERE device = ? ORDER BY id DESC LIMIT ?", (device, limit)
            ).fetchall()
        return [(r[0], r[1], json.loads(r[2])) for r in reversed(rows)]

    def get_meta(self, key: str) -> str | None:
        with self._write_lock:
            row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        """Written with the next batch of registry writes (take_pending)."""
        self._pending.append(("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value)))

    def next_gateway_boot(self) -> int:
        """The gateway's own boot counter (u16), for the frames it sends."""
        row = self.db.execute("SELECT value FROM meta WHERE key = 'gateway_boot'").fetchone()
        boot = (int(row[0]) + 1) & 0xFFFF if row else 1
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('gateway_boot', ?)", (str(boot),))
        return boot


def read_devices(path: Path) -> list[dict[str, Any]]:
    """Registry contents for `edgeline-gateway status` (read-only, no writer needed)."""
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        reg_rows = db.execute(
            "SELECT device, online, state_reason, state_at, boot, fw_version, last_seen FROM devices ORDER BY device"
        ).fetchall()
    finally:
        db.close()
    now = time.time()
    return [
        {
            "device": r[0],
            "online": bool(r[1]),
            "state": r[2],
            "since_s": round(now - r[3], 1),
            "boot": r[4],
            "fw_version": r[5],
            "last_seen_s": round(now - r[6], 1),
        }
        for r in reg_rows
    ]
