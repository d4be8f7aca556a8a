"""Raw frame log: every valid frame as received, in SQLite (WAL), bounded.

A frame committed here is durable (the WAL is fsynced at each commit), and only
then does the gateway ACK it to the device (which then trims its offline queue).
The log is bounded by the total stored bytes and by age; the oldest go first.

Frames are stored in chunks: one row per device and boot per commit, holding
that batch's frames back to back (each behind a 24-byte record header). One
row instead of one per frame keeps the cost of the log near a memcpy per frame,
which is what lets the gateway keep up with paho on one core. Duplicates are
not stored twice: the sequence tracker drops them, and its state is committed
in the same transaction as the frames, so a restarted gateway still recognises
replays of frames it holds.

It serves raw frames for a device and time span (raw windows on request, and
the readings around an alert): ``read_frames`` opens the file read-only, so
the CLI and the raw-window requests never contend with the writer.
"""

from __future__ import annotations

import json
import sqlite3
import struct
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

_SCHEMA = """
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY,
    device TEXT NOT NULL,
    boot INTEGER NOT NULL,
    seq_first INTEGER NOT NULL,   -- lowest and highest sequence number in the chunk
    seq_last INTEGER NOT NULL,
    n INTEGER NOT NULL,           -- frames in the chunk
    t_first REAL NOT NULL,        -- earliest and latest rebuilt frame time (s)
    t_last REAL NOT NULL,
    received REAL NOT NULL,       -- latest receive time (s): age bound
    frames BLOB NOT NULL          -- n x (record header + frame)
);
CREATE INDEX IF NOT EXISTS chunks_device_t ON chunks (device, t_last);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS seq_state (
    device TEXT PRIMARY KEY,
    current_boot INTEGER,
    streams TEXT NOT NULL
);
"""

# Record header before each frame in a chunk: length, type, flags, seq, t, received.
_REC = struct.Struct("<HBBIdd")

# Per device: (current boot, [(boot, lowest, highest, missing, lost, end)]), see gateway/sequence.py.
SeqStates = dict[
    str, tuple[int | None, list[tuple[int, int, int, list[tuple[int, int]], list[tuple[int, int, int]], int | None]]]
]


class LogRow(NamedTuple):
    device: str
    boot: int
    seq: int
    type: int
    flags: int
    t: float  # rebuilt wall-clock time of the frame (s)
    received: float  # gateway receive time (s)
    payload: bytes


@dataclass(frozen=True)
class RawLogStats:
    frames: int
    stored_bytes: int
    file_bytes: int
    inserted: int
    chunks: int
    evicted_size: int  # frames
    evicted_age: int  # frames
    commits: int


def _pack(rows: list[LogRow]) -> bytes:
    pack = _REC.pack
    return b"".join([pack(len(r.payload), r.type, r.flags, r.seq, r.t, r.received) + r.payload for r in rows])


def _unpack(device: str, boot: int, blob: bytes) -> Iterator[LogRow]:
    o = 0
    n = len(blob)
    unpack = _REC.unpack_from
    size = _REC.size
    while o < n:
        ln, typ, flags, seq, t, received = unpack(blob, o)
        o += size
        yield LogRow(device, boot, seq, typ, flags, t, received, blob[o : o + ln])
        o += ln


def _chunks(rows: Iterable[LogRow]) -> dict[tuple[str, int], list[LogRow]]:
    out: dict[tuple[str, int], list[LogRow]] = {}
    for r in rows:
        key = (r.device, r.boot)
        lst = out.get(key)
        if lst is None:
            out[key] = [r]
        else:
            lst.append(r)
    return out


def _query(
    db: sqlite3.Connection,
    device: str,
    t_from: float,
    t_to: float,
    *,
    types: tuple[int, ...] | None,
    limit: int,
) -> list[LogRow]:
    out: list[LogRow] = []
    for boot, blob in db.execute(
        "SELECT boot, frames FROM chunks WHERE device = ? AND t_last >= ? AND t_first <= ? ORDER BY id",
        (device, t_from, t_to),
    ):
        out.extend(r for r in _unpack(device, boot, blob) if t_from <= r.t <= t_to and (not types or r.type in types))
    out.sort(key=lambda r: (r.t, r.boot, r.seq))
    return out[:limit]


def read_frames(
    path: Path,
    device: str,
    t_from: float,
    t_to: float,
    *,
    types: tuple[int, ...] | None = None,
    limit: int = 1_000_000,
) -> list[LogRow]:
    """Frames of one device with rebuilt time in [t_from, t_to], from a raw log file (read-only)."""
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return _query(db, device, t_from, t_to, types=types, limit=limit)
    finally:
        db.close()


def read_all(path: Path, device: str) -> list[LogRow]:
    """Every stored frame of a device, in (boot, seq) order (tests, exports)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = [
            r
            for boot, blob in db.execute("SELECT boot, frames FROM chunks WHERE device = ? ORDER BY id", (device,))
            for r in _unpack(device, boot, blob)
        ]
    finally:
        db.close()
    rows.sort(key=lambda r: (r.boot, r.seq))
    return rows


class RawLog:
    def __init__(self, path: Path, *, max_bytes: int, max_age_s: float) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on stable storage (WAL fsynced) before it returns, so an ACK
        # survives a power cut of the gateway too. One fsync per commit; commits are
        # batched (and grouped by the writer thread under load).
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA journal_size_limit=8388608")
        self.db.executescript(_SCHEMA)
        self._recount()
        self._inserted = 0
        self._evicted_size = 0
        self._evicted_age = 0
        self._commits = 0
        self._last_age_check = 0.0

    def close(self) -> None:
        self.db.close()

    def _recount(self) -> None:
        row = self.db.execute("SELECT COUNT(*), COALESCE(SUM(n), 0), COALESCE(SUM(LENGTH(frames)), 0) FROM chunks")
        chunks, frames, size = row.fetchone()
        self._chunks, self._frames, self._bytes = int(chunks), int(frames), int(size)

    def commit_batch(self, rows: list[LogRow], seq_states: SeqStates | None = None, *, now: float | None = None) -> int:
        """Store rows (one chunk per device and boot) and the sequence state in one transaction."""
        db = self.db
        records = []
        for (device, boot), part in _chunks(rows).items():
            seqs = [r.seq for r in part]
            ts = [r.t for r in part]
            blob = _pack(part)
            records.append(
                (device, boot, min(seqs), max(seqs), len(part), min(ts), max(ts), max(r.received for r in part), blob)
            )
        db.execute("BEGIN")
        try:
            if records:
                db.executemany(
                    "INSERT INTO chunks (device, boot, seq_first, seq_last, n, t_first, t_last, received, frames)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    records,
                )
            if seq_states:
                db.executemany(
                    "INSERT OR REPLACE INTO seq_state (device, current_boot, streams) VALUES (?, ?, ?)",
                    [(d, cb, json.dumps(streams)) for d, (cb, streams) in seq_states.items()],
                )
            self._chunks += len(records)
            self._frames += len(rows)
            self._bytes += sum(len(r[8]) for r in records)
            self._evict(now if now is not None else time.time())
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            self._recount()
            raise
        self._inserted += len(rows)
        self._commits += 1
        return len(rows)

    def _delete(self, where: str, args: tuple[object, ...]) -> tuple[int, int]:
        """Delete chunks; returns (frames, bytes) removed."""
        cur = self.db.execute(f"DELETE FROM chunks WHERE {where} RETURNING n, LENGTH(frames), received", args)
        gone = cur.fetchall()
        frames = sum(r[0] for r in gone)
        size = sum(r[1] for r in gone)
        if gone:
            # Remember how far the log was cut: summary recovery must not take "no frames"
            # for "no readings" there (same transaction as the delete).
            self.db.execute(
                "INSERT INTO meta (key, value) VALUES ('evicted_through', ?) ON CONFLICT(key) DO UPDATE SET"
                " value = MAX(CAST(value AS REAL), CAST(excluded.value AS REAL))",
                (repr(max(r[2] for r in gone)),),
            )
        self._chunks -= len(gone)
        self._frames -= frames
        self._bytes -= size
        return frames, size

    def _evict(self, now: float) -> None:
        if now - self._last_age_check >= 1.0:
            # Chunks are appended in receive order, so the oldest are the lowest ids: walk
            # them by rowid (no index on the receive time to maintain on every insert).
            self._last_age_check = now
            cutoff = now - self.max_age_s
            while True:
                before = self._chunks
                frames, _ = self._delete(
                    "id IN (SELECT id FROM chunks ORDER BY id LIMIT 256) AND received < ?", (cutoff,)
                )
                self._evicted_age += frames
                if before - self._chunks < 256:
                    break
        while self._bytes > self.max_bytes and self._chunks > 0:
            excess = self._bytes - self.max_bytes
            avg = max(1, self._bytes // max(1, self._chunks))
            n = max(1, min(self._chunks, excess // avg + 1))
            frames, size = self._delete("id IN (SELECT id FROM chunks ORDER BY id LIMIT ?)", (n,))
            if not size:
                break
            self._evicted_size += frames

    def load_seq_states(self) -> SeqStates:
        out: SeqStates = {}
        for device, cb, streams in self.db.execute("SELECT device, current_boot, streams FROM seq_state"):
            parsed = [
                (
                    int(st[0]),
                    int(st[1]),
                    int(st[2]),
                    [(int(x), int(y)) for x, y in st[3]],
                    [(int(x), int(y), int(r)) for x, y, r in (st[4] if len(st) > 4 else [])],
                    int(st[5]) if len(st) > 5 and st[5] is not None else None,
                )
                for st in json.loads(streams)
            ]
            out[device] = (cb, parsed)
        return out

    def frames(
        self,
        device: str,
        t_from: float,
        t_to: float,
        *,
        types: tuple[int, ...] | None = None,
        limit: int = 1_000_000,
    ) -> list[LogRow]:
        """Frames of one device whose rebuilt time lies in [t_from, t_to], in time order."""
        return _query(self.db, device, t_from, t_to, types=types, limit=limit)

    def received_between(self, t_from: float, t_to: float, *, types: tuple[int, ...] = ()) -> list[LogRow]:
        """Frames of every device received in (t_from, t_to), in receive order (summary recovery).

        Chunks are appended in receive order, so the scan starts at the first chunk whose
        latest receive time reaches t_from (the rowid order is the receive order)."""
        out: list[LogRow] = []
        for device, boot, blob in self.db.execute(
            "SELECT device, boot, frames FROM chunks WHERE id >= COALESCE("
            "(SELECT MIN(id) FROM chunks WHERE received >= ?), 1 << 62) ORDER BY id",
            (t_from,),
        ):
            out.extend(
                r for r in _unpack(device, boot, blob) if t_from < r.received < t_to and (not types or r.type in types)
            )
        out.sort(key=lambda r: r.received)
        return out

    def evicted_through(self) -> float | None:
        """Latest receive time of a frame removed by the size or age limit (None: nothing removed)."""
        row = self.db.execute("SELECT value FROM meta WHERE key = 'evicted_through'").fetchone()
        return None if row is None else float(row[0])

    def around(self, device: str, t: float, *, before_s: float, after_s: float) -> list[LogRow]:
        """The frames around an instant (e.g. an alert's window time)."""
        return self.frames(device, t - before_s, t + after_s)

    def has(self, device: str, boot: int, seq: int) -> bool:
        for (blob,) in self.db.execute(
            "SELECT frames FROM chunks WHERE device = ? AND boot = ? AND seq_first <= ? AND seq_last >= ?",
            (device, boot, seq, seq),
        ):
            if any(r.seq == seq for r in _unpack(device, boot, blob)):
                return True
        return False

    def stored_seqs(self, device: str, boot: int, *, since: int) -> list[int]:
        """The sequence numbers >= since of (device, boot) held here, sorted (numbers are unique
        per chunk, so a chunk of n frames spanning n numbers holds all of them)."""
        out: set[int] = set()
        for first, last, n, blob in self.db.execute(
            "SELECT seq_first, seq_last, n, frames FROM chunks WHERE device = ? AND boot = ? AND seq_last >= ?",
            (device, boot, since),
        ):
            if n == last - first + 1:
                out.update(range(max(first, since), last + 1))
            else:
                out.update(r.seq for r in _unpack(device, boot, blob) if r.seq >= since)
        return sorted(out)

    def stats(self) -> RawLogStats:
        size = 0
        for suffix in ("", "-wal"):
            p = Path(str(self.path) + suffix)
            if p.exists():
                size += p.stat().st_size
        return RawLogStats(
            frames=self._frames,
            stored_bytes=self._bytes,
            file_bytes=size,
            inserted=self._inserted,
            chunks=self._chunks,
            evicted_size=self._evicted_size,
            evicted_age=self._evicted_age,
            commits=self._commits,
        )
