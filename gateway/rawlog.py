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

Encryption at rest (``cipher``, gateway/atrest.py): a chunk's frames are sealed
with AES-GCM, one operation per chunk; the AAD is the chunk's row (id, device,
boot, sequence span, count, times), so a chunk moved to another row, device or
time fails authentication.  ``enc`` is the key id << 8 (0: plain, written
before encryption was on; such chunks stay readable).  A chunk that fails
authentication is logged and counted (``unreadable``) and skipped; the others
are read as usual.  Device ids, sequence numbers and times stay in the clear
(the index); the frames (readings, health, births) do not.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import struct
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from gateway.atrest import AtRestError, Cipher, KeyRing, key_id_of, key_name

log = logging.getLogger(__name__)

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
    enc INTEGER NOT NULL DEFAULT 0, -- key id << 8 of encrypted frames, 0: plain
    frames BLOB NOT NULL          -- n x (record header + frame), or those encrypted
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

# A chunk row as read: id, device, boot, seq_first, seq_last, n, t_first, t_last, received, enc, frames.
_COLS = "id, device, boot, seq_first, seq_last, n, t_first, t_last, received, enc, frames"
_COLS_BEFORE_ENC = _COLS.replace("enc,", "0,")  # a file written before encryption existed
ChunkRow = tuple[Any, ...]
_AAD = b"edgeline/rawlog/1\0"
_AAD_ROW = struct.Struct(">qqqqqddd")  # id, boot, seq_first, seq_last, n, t_first, t_last, received


def _chunk_aad(row: ChunkRow) -> bytes:
    """What a chunk's encrypted frames are bound to: every column of its row but enc and frames."""
    cid, device, boot, seq_first, seq_last, n, t_first, t_last, received = row[:9]
    return _AAD + _AAD_ROW.pack(cid, boot, seq_first, seq_last, n, t_first, t_last, received) + str(device).encode()


def _columns(db: sqlite3.Connection) -> str:
    has_enc = any(r[1] == "enc" for r in db.execute("PRAGMA table_info(chunks)"))
    return _COLS if has_enc else _COLS_BEFORE_ENC


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
    unreadable: int = 0  # chunks that failed authentication when read (see ChunkReader)


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


class ChunkReader:
    """Opens stored chunks: decrypts the encrypted ones (with ``keys``), counts and logs those that
    cannot be read (``unreadable``).  Owned by the thread that reads through it."""

    def __init__(self, keys: KeyRing | None) -> None:
        self.keys = keys
        self.unreadable = 0

    def blob(self, row: ChunkRow) -> bytes | None:
        enc, blob = int(row[9]), row[10]
        if not enc >> 8:
            return bytes(blob)
        try:
            if self.keys is None:
                raise AtRestError(f"encrypted under key {key_name(enc >> 8)} and encryption is off")
            plain: bytes = self.keys.decrypt(bytes(blob), _chunk_aad(row))
            return plain
        except AtRestError as exc:
            self.unreadable += 1
            log.error("raw log: chunk %d of %s (%d frames) is unreadable, skipped: %s", row[0], row[1], row[5], exc)
            return None

    def frames(self, row: ChunkRow) -> Iterator[LogRow]:
        blob = self.blob(row)
        if blob is not None:
            yield from _unpack(str(row[1]), int(row[2]), blob)


# Per device: (current boot, [(boot, lowest, highest, missing, lost, end)]), see gateway/sequence.py.
SeqStates = dict[
    str, tuple[int | None, list[tuple[int, int, int, list[tuple[int, int]], list[tuple[int, int, int]], int | None]]]
]


def _query(
    db: sqlite3.Connection,
    reader: ChunkReader,
    device: str,
    t_from: float,
    t_to: float,
    *,
    types: tuple[int, ...] | None,
    limit: int,
    cols: str = _COLS,
) -> list[LogRow]:
    out: list[LogRow] = []
    for row in db.execute(
        f"SELECT {cols} FROM chunks WHERE device = ? AND t_last >= ? AND t_first <= ? ORDER BY id",
        (device, t_from, t_to),
    ):
        out.extend(r for r in reader.frames(row) if t_from <= r.t <= t_to and (not types or r.type in types))
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
    keys: KeyRing | ChunkReader | None = None,
) -> list[LogRow]:
    """Frames of one device with rebuilt time in [t_from, t_to], from a raw log file (read-only).
    keys: the key ring of encrypted chunks (or a ChunkReader, to count the unreadable ones)."""
    if not path.exists():
        return []
    reader = keys if isinstance(keys, ChunkReader) else ChunkReader(keys)
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return _query(db, reader, device, t_from, t_to, types=types, limit=limit, cols=_columns(db))
    finally:
        db.close()


def read_all(path: Path, device: str, *, keys: KeyRing | None = None) -> list[LogRow]:
    """Every stored frame of a device, in (boot, seq) order (tests, exports)."""
    reader = ChunkReader(keys)
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        sql = f"SELECT {_columns(db)} FROM chunks WHERE device = ? ORDER BY id"
        rows = [r for row in db.execute(sql, (device,)) for r in reader.frames(row)]
    finally:
        db.close()
    rows.sort(key=lambda r: (r.boot, r.seq))
    return rows


@dataclass(frozen=True)
class KeyUse:
    """The chunks of a raw log under one key (``keys status``, ``keys retire``)."""

    chunks: int
    frames: int
    devices: int
    oldest: float  # receive times (s)
    newest: float


def key_usage(path: Path) -> dict[int, KeyUse]:
    """Chunks per key id (0: plain) in a raw log file, read-only."""
    if not path.exists():
        return {}
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        enc = "enc >> 8" if _columns(db) == _COLS else "0"
        rows = db.execute(
            f"SELECT {enc}, count(*), sum(n), count(DISTINCT device), min(received), max(received)"
            " FROM chunks GROUP BY 1"
        ).fetchall()
    finally:
        db.close()
    return {int(r[0]): KeyUse(int(r[1]), int(r[2]), int(r[3]), float(r[4]), float(r[5])) for r in rows}


class RawLog:
    def __init__(self, path: Path, *, max_bytes: int, max_age_s: float, cipher: Cipher | None = None) -> None:
        """cipher: encrypt the chunks written (and read the encrypted ones); one writer thread."""
        self.path = path
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.cipher = cipher
        self.reader = ChunkReader(cipher.ring if cipher is not None else None)  # the reading thread's
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on stable storage (WAL fsynced) before it returns, so an ACK
        # survives a power cut of the gateway too. One fsync per commit; commits are
        # batched (and grouped by the writer thread under load).
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA journal_size_limit=8388608")
        self.db.executescript(_SCHEMA)
        if _columns(self.db) != _COLS:  # a file from before encryption: plain chunks, marked so
            self.db.execute("ALTER TABLE chunks ADD COLUMN enc INTEGER NOT NULL DEFAULT 0")
        self._next_id = int(self.db.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM chunks").fetchone()[0])
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
            received = max(r.received for r in part)
            row = (self._next_id, device, boot, min(seqs), max(seqs), len(part), min(ts), max(ts), received)
            self._next_id += 1
            records.append((*row, *self._seal(row, _pack(part))))
        db.execute("BEGIN")
        try:
            if records:
                db.executemany(
                    f"INSERT INTO chunks ({_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    records,
                )
            if seq_states:
                db.executemany(
                    "INSERT OR REPLACE INTO seq_state (device, current_boot, streams) VALUES (?, ?, ?)",
                    [(d, cb, json.dumps(streams)) for d, (cb, streams) in seq_states.items()],
                )
            self._chunks += len(records)
            self._frames += len(rows)
            self._bytes += sum(len(r[10]) for r in records)
            self._evict(now if now is not None else time.time())
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            self._recount()
            raise
        self._inserted += len(rows)
        self._commits += 1
        return len(rows)

    def _seal(self, row: ChunkRow, blob: bytes) -> tuple[int, bytes]:
        """(enc, stored frames) of a chunk: encrypted under the active key when encryption is on."""
        if self.cipher is None:
            return 0, blob
        sealed = self.cipher.encrypt(blob, _chunk_aad(row))
        return key_id_of(sealed) << 8, sealed

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

    def reencrypt(self, key_id: int, *, scrub: bool = False) -> tuple[int, int]:
        """Re-encrypt the chunks under ``key_id`` (0: the plain ones) under the active key, 64 chunks a
        transaction (each chunk is under one key or the other at any moment; the ring holds both
        until ``keys retire`` drops the old one).  Unreadable chunks are deleted (counted).
        ``scrub``: zero the pages the old chunks leave and empty the WAL (plaintext left behind).
        Returns (re-encrypted, deleted).  Only while the gateway is stopped (``keys retire``)."""
        if self.cipher is None:
            raise AtRestError("raw log: re-encryption needs [encryption] enabled = true")
        done = failed = 0
        cur = 0
        if scrub:
            self.db.execute("PRAGMA secure_delete=ON")
        while True:
            rows = self.db.execute(
                f"SELECT {_COLS} FROM chunks WHERE id > ? AND enc >> 8 = ? ORDER BY id LIMIT 64", (cur, key_id)
            ).fetchall()
            if not rows:
                if scrub:
                    self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                return done, failed
            cur = int(rows[-1][0])
            updates: list[tuple[int, bytes, int]] = []
            bad: list[int] = []
            for row in rows:
                blob = self.reader.blob(row)
                if blob is None:
                    bad.append(int(row[0]))
                    continue
                updates.append((*self._seal(row[:9], blob), int(row[0])))
            self.db.execute("BEGIN")
            try:
                self.db.executemany("UPDATE chunks SET enc = ?, frames = ? WHERE id = ?", updates)
                for cid in bad:
                    self._delete("id = ?", (cid,))
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            finally:
                self._recount()
            done += len(updates)
            failed += len(bad)

    def drop_key(self, key_id: int, *, scrub: bool = False) -> int:
        """Delete the chunks under ``key_id`` (recorded as evicted, like the size and age limits do);
        returns the frames deleted.  ``scrub``: as for :meth:`reencrypt`.  Only while the gateway
        is stopped (``keys retire``)."""
        if scrub:
            self.db.execute("PRAGMA secure_delete=ON")
        self.db.execute("BEGIN")
        try:
            frames, _size = self._delete("enc >> 8 = ?", (key_id,))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            self._recount()
            raise
        if scrub:
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return frames

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
        return _query(self.db, self.reader, device, t_from, t_to, types=types, limit=limit)

    def received_between(self, t_from: float, t_to: float, *, types: tuple[int, ...] = ()) -> list[LogRow]:
        """Frames of every device received in (t_from, t_to), in receive order (summary recovery).

        Chunks are appended in receive order, so the scan starts at the first chunk whose
        latest receive time reaches t_from (the rowid order is the receive order)."""
        out: list[LogRow] = []
        for row in self.db.execute(
            f"SELECT {_COLS} FROM chunks WHERE id >= COALESCE("
            "(SELECT MIN(id) FROM chunks WHERE received >= ?), 1 << 62) ORDER BY id",
            (t_from,),
        ):
            out.extend(
                r for r in self.reader.frames(row) if t_from < r.received < t_to and (not types or r.type in types)
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
        for row in self.db.execute(
            f"SELECT {_COLS} FROM chunks WHERE device = ? AND boot = ? AND seq_first <= ? AND seq_last >= ?",
            (device, boot, seq, seq),
        ):
            if any(r.seq == seq for r in self.reader.frames(row)):
                return True
        return False

    def stored_seqs(self, device: str, boot: int, *, since: int) -> list[int]:
        """The sequence numbers >= since of (device, boot) held here, sorted (numbers are unique
        per chunk, so a chunk of n frames spanning n numbers holds all of them)."""
        out: set[int] = set()
        for row in self.db.execute(
            f"SELECT {_COLS} FROM chunks WHERE device = ? AND boot = ? AND seq_last >= ?",
            (device, boot, since),
        ):
            first, last, n = row[3], row[4], row[5]
            if n == last - first + 1:
                out.update(range(max(first, since), last + 1))
            else:
                out.update(r.seq for r in self.reader.frames(row) if r.seq >= since)
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
            unreadable=self.reader.unreadable,
        )
