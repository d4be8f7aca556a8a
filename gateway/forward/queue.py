"""The durable forward queue: one SQLite file in WAL mode, four lanes, a disk budget.

Layout: one rowid table ``records``.  A record's rowid is ``lane << 48 | position``: the rows of a
lane sit together in the B-tree in arrival order, so draining or dropping the oldest rows of a lane
frees whole pages instead of punching holes into pages shared with the other lanes.

Durability: ``synchronous=NORMAL`` in WAL mode.  A commit is atomic; a power cut may lose the
last commits (the WAL frames not yet synced) but never corrupts committed data.  The forwarder
groups records into commits (``commit_policy.py``), so there is no fsync per record.

Pages: a new file gets 1 KB pages (:data:`PAGE_SIZE`).  Every commit writes each page it touches
into the WAL whole; with 4 KB pages a commit of one alert cost 4 KB, with 1 KB pages 1 KB (the
trickle benchmark writes about half as much).  A file created with another page size keeps it.

Sequence numbers: ``seq`` increases per lane and is never reused after a crash, even when every
row of the lane was acknowledged and deleted.  The ``lanes`` table holds, per lane, a limit that
every seq (and position) used so far is below: a commit that reaches the limit raises it by
:data:`SEQ_BLOCK` in the same transaction (one small write per 1024 records of a lane, not one per
commit), and a start continues from the limit.  So after a crash or kill -9 ``seq`` may jump ahead
(by less than 1024); after a clean stop it continues without a gap (the exact next values are saved).

Disk budget, on the files as they are on disk: the database file is capped with
``max_page_count`` (free pages included, SQLite enforces it), the WAL gets an allowance of its own
that no write transaction can push it past (transactions are bounded in size, and the WAL is
checkpointed and emptied first when the next one might not fit), and the WAL index (``-shm``)
is counted too.  Budget enforcement (compaction, drops) works on the pages in use.

Encryption at rest (``cipher``, gateway/atrest.py): each body is deflated (when that saves bytes),
then sealed with AES-GCM; its AAD names the row (id, seq, epoch, created, compression), so a body
moved to another row fails authentication.  ``enc`` holds the compression in its low byte and the
key id above it (0: a plain body, written before encryption was on; such rows stay readable).  A
body that fails authentication is counted (``events.decrypt_failed``), logged and deleted when it
is fetched: the records around it are sent as usual.

Only one thread touches a ``ForwardQueue`` (the forwarder's store thread).

About 1,050 lines: one class owns the SQLite connection and its invariants (ids, seq limits, the
budget's arithmetic); salvage of a damaged file (``_salvage`` .. ``_copy_lane``) and the budget's
compaction and drops are the parts that could move to modules of their own.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import secrets
import sqlite3
import struct
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from gateway.atrest import OVERHEAD, AtRestError, Cipher, key_id_of, key_name
from gateway.forward.compaction import group_key, is_mergeable, merge_summaries
from gateway.forward.errors import QueueError

log = logging.getLogger("edgeline.forward")

LANES: tuple[str, ...] = ("alert", "registry", "summary", "raw")
"""Lanes in priority order: a lane is sent only when every lane before it is empty or in flight."""
LANE_INDEX: dict[str, int] = {name: i for i, name in enumerate(LANES)}
ALERT, REGISTRY, SUMMARY, RAW = range(4)
LANE_SHIFT = 48
UNMERGEABLE = 1 << 30
"""``level`` of a summary that does not have the documented shape (it is never merged)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records(
    id INTEGER PRIMARY KEY,
    seq INTEGER NOT NULL,
    epoch TEXT NOT NULL,
    created REAL NOT NULL,
    level INTEGER NOT NULL,
    crc INTEGER NOT NULL,
    enc INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS lanes(lane INTEGER PRIMARY KEY, next_seq INTEGER NOT NULL, next_pos INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS counters(name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

# Drop / compaction work is done in chunks of this many rows, re-measuring the file in between.
_CHUNK = 256
# Sequence numbers (and positions) reserved per write of the lanes table (see the module docstring).
SEQ_BLOCK = 1024
# The WAL index (-shm) beside a WAL of up to ~4000 frames; counted in the budget.
SHM_BYTES = 32 * 1024
# Pages a write transaction may touch beyond the pages its rows fill: per lane touched a partly
# filled leaf and its interior pages, page 1, a freelist trunk page, the lanes and counters tables.
_TXN_OVERHEAD_PAGES = 16
# Bytes of a row beyond its stored body (cell header, seq, epoch, created, level, crc, enc): 45 measured.
ROW_OVERHEAD = 64
_WAL_FRAME_HEADER = 24
PAGE_SIZE = 1024
"""Page size of a new queue file (SQLite's default is 4096; see the module docstring)."""
_WAL_HEADER = 32


def lane_lo(lane: int) -> int:
    return lane << LANE_SHIFT


def lane_hi(lane: int) -> int:
    return (lane + 1) << LANE_SHIFT


class QueuedRecord(NamedTuple):
    id: int
    lane: int
    seq: int
    epoch: str
    created: float
    body: str


class Pending(NamedTuple):
    """A record accepted by ``submit`` and not committed yet (``ticket`` 0: an internal record)."""

    lane: int
    created: float
    body: str
    level: int
    ticket: int = 0


@dataclass
class RecoveryReport:
    """What :meth:`ForwardQueue.open` found.  ``state``: ok | fresh | salvaged | replaced."""

    state: str
    path: str
    moved_aside: str | None = None
    error: str | None = None
    recovered_records: int = 0
    unreadable_regions: int = 0
    bad_rows: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "path": self.path,
            "moved_aside": self.moved_aside,
            "error": self.error,
            "recovered_records": self.recovered_records,
            "unreadable_regions": self.unreadable_regions,
            "bad_rows": self.bad_rows,
        }


@dataclass
class BudgetResult:
    """What one budget enforcement did, per lane name."""

    compacted: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    dropped_seq_ranges: dict[str, list[list[int]]] = field(default_factory=dict)
    touched: set[int] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.compacted or self.dropped)


class DiskFullError(QueueError):
    """SQLite reported "database or disk is full"; the transaction was rolled back.

    ``reason`` is ``"disk_budget"`` when the queue's own page cap (the budget) stopped the write
    while the file system still had room, else ``"disk_full"``.
    """

    def __init__(self, message: str, reason: str = "disk_full") -> None:
        super().__init__(message)
        self.reason = reason


class ForwardQueue:
    """SQLite store of the forward queue.  Single-threaded: the forwarder's store thread owns it."""

    def __init__(
        self,
        path: Path,
        *,
        budget_bytes: int,
        compaction_factor: int = 4,
        compaction_max_level: int = 4,
        max_page_count: int | None = None,
        clock: Callable[[], float] = time.time,
        page_size: int = PAGE_SIZE,
        cipher: Cipher | None = None,
    ) -> None:
        """cipher: encrypt new bodies (and read encrypted ones); None: plain bodies, and a file that
        holds encrypted ones is refused at open()."""
        self.path = Path(path)
        self.cipher = cipher
        # Bytes of a row beyond its deflated body: an encrypted body is OVERHEAD bytes longer.
        self.row_overhead = ROW_OVERHEAD + (OVERHEAD if cipher is not None else 0)
        self.new_page_size = page_size  # for a new file only
        self.budget_bytes = int(budget_bytes)
        # The files on disk: database (capped), WAL (its own allowance), WAL index (fixed size).
        self.wal_limit_bytes = int(min(4 * 1024 * 1024, max(128 * 1024, self.budget_bytes // 8)))
        self.db_budget_bytes = self.budget_bytes - self.wal_limit_bytes - SHM_BYTES
        if self.db_budget_bytes < 64 * 1024:
            raise QueueError(
                f"forward queue: a disk budget of {self.budget_bytes} bytes leaves {self.db_budget_bytes} bytes for"
                f" the database after the WAL allowance ({self.wal_limit_bytes}) and its index ({SHM_BYTES});"
                " use at least 256 KB (disk_budget_mb = 0.25)"
            )
        # Bytes of new rows (bodies + ROW_OVERHEAD) per commit: a quarter of the WAL allowance, so
        # it fits beside what the WAL holds, and a small share of the database budget, so the 15%
        # headroom left by budget enforcement takes several commits.
        self.max_commit_bytes = max(4096, min(self.wal_limit_bytes // 4, self.db_budget_bytes // 32))
        self.compaction_factor = compaction_factor
        self.compaction_max_level = compaction_max_level
        self.max_page_count = max_page_count
        self.clock = clock
        self.epoch = ""
        self.counts = [0] * len(LANES)
        self.counters: dict[str, int] = {}
        self._next_seq = [1] * len(LANES)
        self._next_pos = [0] * len(LANES)
        # What the lanes table holds: every seq / position used so far is below these.
        self._seq_limit = [1] * len(LANES)
        self._pos_limit = [0] * len(LANES)
        self.commits = 0  # successful commit() calls
        self.discarded: list[tuple[int, int]] = []  # (lane, seq) of unreadable rows deleted, not reported yet
        self._conn: sqlite3.Connection | None = None
        self._counters_dirty = False
        self._page_size = 4096
        self._budget_pages = self.db_budget_bytes // self._page_size

    @property
    def max_txn_bytes(self) -> int:
        """Bytes of rows one write transaction may touch (insert, update or delete) so that its pages,
        written into an emptied WAL, stay within the WAL allowance."""
        frames = (self.wal_limit_bytes - _WAL_HEADER) // (self._page_size + _WAL_FRAME_HEADER)
        return (frames - 1 - _TXN_OVERHEAD_PAGES) * (self._page_size - 8)

    @property
    def max_record_bytes(self) -> int:
        """Largest stored size (deflated body + row overhead) of one record: its transaction must fit
        the WAL allowance, and it may take at most a quarter of the database budget.  Larger
        records are refused (counted lost) instead of breaking the budget."""
        return min(self.max_txn_bytes, self.db_budget_bytes // 4)

    def stored_bytes(self, item: Pending) -> int:
        """What ``item`` takes in the file (body as stored + row overhead); deflates only long records."""
        if len(item.body) + self.row_overhead <= self.max_record_bytes:
            return len(item.body) + self.row_overhead  # an upper bound: a stored body is never longer than its JSON
        return len(encode_body(item.body)[1]) + self.row_overhead

    def estimate_bytes(self, item: Pending) -> int:
        """Upper bound of what a record that fits (see :attr:`max_record_bytes`) takes in the file."""
        return min(len(item.body) + self.row_overhead, self.max_record_bytes)

    # -- open / recovery -------------------------------------------------------------------
    def open(self) -> RecoveryReport:
        """Open (or create) the queue file; recover what is intact from a damaged one."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        report = RecoveryReport(state="ok" if self.path.exists() else "fresh", path=str(self.path))
        if report.state == "ok":
            problem = self._check_file()
            if problem is not None:
                report = self._salvage(problem)
        conn = self._connect(self.path, capped=True)
        conn.executescript(_SCHEMA)
        self._conn = conn
        self._load_state(report)
        return report

    def _connect(self, path: Path, *, capped: bool) -> sqlite3.Connection:
        # Only this connection writes; a short busy timeout turns a foreign lock into a quick,
        # retried QueueError instead of a stalled store thread.
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=1.0)
        conn.execute(f"PRAGMA page_size={int(self.new_page_size)}")  # no effect on an existing file
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        # Deleted rows are zeroed inside the pages written anyway, but freed pages are not zeroed
        # and written to the WAL (Debian's SQLite defaults to secure_delete=ON): deleting large
        # rows writes about half the pages.
        conn.execute("PRAGMA secure_delete=FAST")
        self._page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        self._budget_pages = self.db_budget_bytes // self._page_size
        # The WAL is checkpointed (and reset) once it holds a quarter of its allowance, and cut back
        # to that size on reset: it stays small, and a write transaction always finds room in it.
        frame = self._page_size + _WAL_FRAME_HEADER
        conn.execute(f"PRAGMA wal_autocheckpoint={max(4, self.wal_limit_bytes // 4 // frame)}")
        conn.execute(f"PRAGMA journal_size_limit={self.wal_limit_bytes // 4}")
        caps = [self.max_page_count] if self.max_page_count is not None else []
        if capped:
            caps.append(self._budget_pages)
        if caps:
            # SQLite refuses ("database or disk is full") to grow the file beyond this many pages.
            conn.execute(f"PRAGMA max_page_count={int(min(caps))}")
        return conn

    def _check_file(self) -> str | None:
        """None when the file opens and passes ``quick_check``; else what is wrong."""
        try:
            conn = sqlite3.connect(str(self.path), isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                rows = [str(r[0]) for r in conn.execute("PRAGMA quick_check")]
                tables = {str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            return f"{type(exc).__name__}: {exc}"
        if rows != ["ok"]:
            return f"quick_check found {len(rows)} problem(s), first: " + "; ".join(r[:120] for r in rows[:3])
        if tables and "records" not in tables:
            return "the file is an SQLite database but has no forward-queue table"
        return None

    def _salvage(self, problem: str) -> RecoveryReport:
        """Copy every readable record into a new file, move the damaged one aside, report."""
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(self.clock()))
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while aside.exists():
            n += 1
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
        salvage_path = self.path.with_name(self.path.name + ".salvage")
        for suffix in ("", "-wal", "-shm"):
            _unlink(Path(str(salvage_path) + suffix))
        report = RecoveryReport(state="salvaged", path=str(self.path), error=problem)
        # Not capped by the budget: what was readable is kept (it fitted the file it comes from).
        new = self._connect(salvage_path, capped=False)
        new.executescript(_SCHEMA)
        try:
            old = sqlite3.connect(str(self.path), isolation_level=None)
            # Lets SQLite read a file shorter than its header says (a truncated file) instead of
            # refusing it whole; this connection never writes.
            old.execute("PRAGMA writable_schema=ON")
            old.execute("PRAGMA cell_size_check=ON")
        except sqlite3.DatabaseError:
            old = None
        new.execute("BEGIN")
        if old is not None:
            try:
                self._copy_readable(old, new, report)
            finally:
                old.close()
        new.execute("COMMIT")
        new.close()
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(self.path) + suffix)
            if src.exists():
                os.replace(src, Path(str(aside) + suffix))
        os.replace(salvage_path, self.path)
        for suffix in ("-wal", "-shm"):
            _unlink(Path(str(salvage_path) + suffix))
        report.moved_aside = str(aside)
        if report.recovered_records == 0 and report.unreadable_regions > 0:
            report.state = "replaced"
        return report

    def _copy_readable(self, old: sqlite3.Connection, new: sqlite3.Connection, report: RecoveryReport) -> None:
        lanes = _try_fetch_all(old, "SELECT lane, next_seq, next_pos FROM lanes")
        counters = _try_fetch_all(old, "SELECT name, value FROM counters")
        if lanes is None:
            # Harmless for idempotency (every start has a new epoch); positions come from the rows.
            report.unreadable_regions += 1
        else:
            new.executemany("INSERT OR REPLACE INTO lanes VALUES(?,?,?)", lanes)
        if counters is not None:
            new.executemany("INSERT OR REPLACE INTO counters VALUES(?,?)", counters)
        for lane in range(len(LANES)):
            self._copy_lane(old, new, lane, report)

    def _copy_lane(self, old: sqlite3.Connection, new: sqlite3.Connection, lane: int, report: RecoveryReport) -> None:
        cur, end = lane_lo(lane) - 1, lane_hi(lane)
        sql = "SELECT id, seq, epoch, created, level, crc, enc, body FROM records WHERE id > ? AND id < ? ORDER BY id"
        last_fail, step = -2, 1
        while cur < end:
            try:
                for row in old.execute(sql, (cur, end)):
                    cur = int(row[0]) if isinstance(row[0], int) else cur + 1
                    if _valid_row(row, lane):
                        new.execute("INSERT OR IGNORE INTO records VALUES(?,?,?,?,?,?,?,?)", row)
                        report.recovered_records += 1
                    else:
                        report.bad_rows += 1
                return
            except sqlite3.DatabaseError:
                report.unreadable_regions += 1
            # Skip the damaged region: probe further and further ahead for a readable row
            # (further than last time when the scan failed again at the same place).
            step = step * 2 if cur == last_fail else 1
            last_fail = cur
            while cur + step < end:
                try:
                    found = old.execute(
                        "SELECT id FROM records WHERE id >= ? AND id < ? ORDER BY id LIMIT 1", (cur + step, end)
                    ).fetchone()
                except sqlite3.DatabaseError:
                    step *= 2
                    continue
                if found is None:
                    return
                cur = max(cur, int(found[0]) - 1)
                break
            else:
                return

    def _load_state(self, report: RecoveryReport) -> None:
        conn = self._db()
        # A new epoch on every open: records committed by this run carry it in their idempotency
        # key.  Should a power cut take the last commits away (synchronous=NORMAL), sequence
        # numbers get reused, but never within the same epoch, so no key is ever reused.
        self.epoch = secrets.token_hex(4)
        lanes = {int(r[0]): (int(r[1]), int(r[2])) for r in conn.execute("SELECT lane, next_seq, next_pos FROM lanes")}
        keys: set[int] = set()
        for lane in range(len(LANES)):
            lo, hi = lane_lo(lane), lane_hi(lane)
            max_id, max_seq, count, lo_key, hi_key = conn.execute(
                "SELECT max(id), max(seq), count(*), min(enc >> 8), max(enc >> 8) FROM records WHERE id >= ? AND id < ?",
                (lo, hi),
            ).fetchone()
            if lo_key is not None:
                keys.update({int(lo_key), int(hi_key)})
                if lo_key != hi_key:  # more than one key in the lane (rare: a rotation): which ones
                    sql = "SELECT DISTINCT enc >> 8 FROM records WHERE id >= ? AND id < ?"
                    keys.update(int(r[0]) for r in conn.execute(sql, (lo, hi)))
            self.counts[lane] = int(count)
            stored_seq, stored_pos = lanes.get(lane, (1, 0))
            # Continue from the limits of the lanes table (every seq and position used is below
            # them, see commit()), or above the rows when a lanes table was lost in a salvage.
            self._next_pos[lane] = max(stored_pos, (int(max_id) - lo + 1) if max_id is not None else 0)
            self._next_seq[lane] = max(stored_seq, (int(max_seq) + 1) if max_seq is not None else 1)
        self._check_keys(keys - {0})
        self.counters = {str(r[0]): int(r[1]) for r in conn.execute("SELECT name, value FROM counters")}
        if report.state in ("salvaged", "replaced"):
            self.counters["recoveries"] = self.counters.get("recoveries", 0) + 1
        self._begin(0)
        self._save_lanes(conn)
        self._save_counters(conn)
        conn.execute("COMMIT")
        self._seq_limit, self._pos_limit = list(self._next_seq), list(self._next_pos)

    def _check_keys(self, keys: set[int]) -> None:
        """Refuse to run over records that could never be read (they would be lost silently)."""
        if not keys:
            return
        names = ", ".join(key_name(k) for k in sorted(keys))
        if self.cipher is None:
            self._conn_close()
            raise QueueError(
                f"forward queue {self.path} holds records encrypted under key(s) {names}, but encryption is off:"
                " set [encryption] enabled = true with its key_dir again (until the queue is empty)"
            )
        missing = sorted(k for k in keys if k not in self.cipher.ring)
        if missing:
            self._conn_close()
            raise QueueError(
                f"forward queue {self.path} holds records under key(s) {', '.join(key_name(k) for k in missing)},"
                f" which the key ring {self.cipher.ring.directory} does not hold: restore"
                f" {', '.join(f'key-{key_name(k)}.sealed' for k in missing)} and keyring.json from this gateway's"
                " backup (or point encryption.key_dir at its key directory); without them these records cannot be"
                " read: to give them up, move the queue file aside"
            )

    def _conn_close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- encryption ------------------------------------------------------------------------
    def _seal(self, place: bytes, enc: int, blob: bytes) -> tuple[int, bytes]:
        """(enc, stored body) of a deflated or plain body at ``place`` (:func:`_place`): encrypted
        under the active key when encryption is on."""
        if self.cipher is None:
            return enc, blob
        try:
            sealed = self.cipher.encrypt(blob, place + bytes((enc,)))
        except AtRestError as exc:  # as a write error: the records stay in memory and are retried
            raise QueueError(f"forward queue: cannot encrypt ({exc})") from exc
        return enc | key_id_of(sealed) << 8, sealed

    def _unseal(self, place: bytes, enc: int, stored: bytes) -> bytes:
        """The deflated or plain body of a stored one; raises AtRestError (authentication)."""
        if not enc >> 8:
            return bytes(stored)
        if self.cipher is None:
            raise AtRestError(f"encrypted under key {key_name(enc >> 8)} and encryption is off")
        return self.cipher.decrypt(bytes(stored), place + bytes((enc & 0xFF,)))

    def _open(self, place: bytes, enc: int, stored: bytes) -> str:
        """A stored body's JSON text; raises AtRestError (authentication), zlib.error or
        UnicodeDecodeError (a damaged plain body), QueueError (an unknown encoding)."""
        return decode_body(enc & 0xFF, self._unseal(place, enc, stored))

    def reencrypt(self, key_id: int, *, scrub: bool = False) -> tuple[int, int]:
        """Re-encrypt every body under ``key_id`` (0: the plain ones) under the active key; returns
        (re-encrypted, unreadable: counted and deleted as by :meth:`fetch`).  ``scrub``: zero the
        pages the old bodies leave (secure_delete) and empty the WAL, for plaintext left behind.

        In transactions bounded like every other (the WAL allowance): each body is under the old or
        the new key at any moment, and the ring holds both until the caller retires the old one, so
        an interruption loses nothing (run it again)."""
        if self.cipher is None:
            raise QueueError("forward queue: re-encryption needs [encryption] enabled = true")
        conn = self._db()
        done = failed = 0
        cur = -1
        sql = "SELECT id, seq, epoch, created, enc, body FROM records WHERE id > ? AND enc >> 8 = ? ORDER BY id LIMIT ?"
        if scrub:
            conn.execute("PRAGMA secure_delete=ON")
        while True:
            rows = conn.execute(sql, (cur, key_id, _CHUNK)).fetchall()
            rows = _first_within(rows, lambda r: 2 * (len(r[5]) + self.row_overhead), self.max_txn_bytes)
            if not rows:
                if scrub:
                    conn.execute("PRAGMA secure_delete=FAST")
                    self.checkpoint()
                return done, failed
            cur = int(rows[-1][0])
            updates: list[tuple[int, int, bytes, int]] = []
            bad: dict[int, list[tuple[int, int, str]]] = {}
            for rid, seq, epoch, created, enc, body in rows:
                place = _place(int(rid), int(seq), str(epoch), float(created))
                try:
                    plain = self._unseal(place, int(enc), body)
                except AtRestError as exc:
                    bad.setdefault(int(rid) >> LANE_SHIFT, []).append((int(rid), int(seq), str(exc)))
                    continue
                new_enc, blob = self._seal(place, int(enc) & 0xFF, plain)
                updates.append((zlib.crc32(blob), new_enc, blob, int(rid)))
            try:
                self._begin(sum(len(r[5]) + self.row_overhead for r in rows))
                conn.executemany("UPDATE records SET crc=?, enc=?, body=? WHERE id=?", updates)
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise self._queue_error(exc) from exc
            done += len(updates)
            for lane, rows_bad in bad.items():
                self._discard(lane, rows_bad)
                failed += len(rows_bad)

    # -- writes ----------------------------------------------------------------------------
    def commit(
        self, items: Sequence[Pending], acked_through: dict[int, int] | None = None, *, delete_bytes: int = 0
    ) -> tuple[list[QueuedRecord], dict[int, int]]:
        """Append ``items`` and delete acknowledged rows (``lane -> highest acked id``, about
        ``delete_bytes`` of rows) in one transaction.

        Returns the new records (with their ids and sequence numbers) and the number of rows
        deleted per lane.  Raises :class:`DiskFullError` / :class:`QueueError` after a rollback:
        nothing of this call is kept then, and everything committed before stays.  Keep ``items``
        within :attr:`max_commit_bytes` (or one record) and items and deletes together within
        :attr:`max_txn_bytes` (:meth:`estimate_bytes`), so the WAL stays within its allowance.
        """
        conn = self._db()
        next_seq = list(self._next_seq)
        next_pos = list(self._next_pos)
        seq_limit, pos_limit = list(self._seq_limit), list(self._pos_limit)
        new: list[QueuedRecord] = []
        rows: list[tuple[int, int, str, float, int, int, int, bytes]] = []
        stored = 0
        for item in items:
            lane = item.lane
            rid = lane_lo(lane) + next_pos[lane]
            seq = next_seq[lane]
            next_pos[lane] += 1
            next_seq[lane] += 1
            enc, blob = self._seal(_place(rid, seq, self.epoch, item.created), *encode_body(item.body))
            stored += len(blob) + ROW_OVERHEAD
            rows.append((rid, seq, self.epoch, item.created, item.level, zlib.crc32(blob), enc, blob))
            new.append(QueuedRecord(rid, lane, seq, self.epoch, item.created, item.body))
        deleted: dict[int, int] = {}
        try:
            self._begin(stored + delete_bytes)
            if rows:
                conn.executemany(
                    "INSERT INTO records(id, seq, epoch, created, level, crc, enc, body) VALUES(?,?,?,?,?,?,?,?)", rows
                )
            for lane in range(len(LANES)):
                # Seqs used must stay below the limit in the file, or a kill -9 after these rows are
                # acknowledged and deleted would hand the same seqs out again.
                if next_seq[lane] > seq_limit[lane] or next_pos[lane] > pos_limit[lane]:
                    seq_limit[lane], pos_limit[lane] = next_seq[lane] + SEQ_BLOCK, next_pos[lane] + SEQ_BLOCK
                    self._save_lane(conn, lane, seq_limit[lane], pos_limit[lane])
            for lane, through in (acked_through or {}).items():
                cur = conn.execute("DELETE FROM records WHERE id >= ? AND id <= ?", (lane_lo(lane), through))
                deleted[lane] = cur.rowcount
            if self._counters_dirty:
                self._save_counters(conn)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise self._queue_error(exc) from exc
        self._next_seq, self._next_pos = next_seq, next_pos
        self._seq_limit, self._pos_limit = seq_limit, pos_limit
        self.commits += 1
        for record in new:
            self.counts[record.lane] += 1
        for lane, n in deleted.items():
            self.counts[lane] -= n
        return new, deleted

    def bump(self, name: str, n: int = 1) -> None:
        """Add ``n`` to a persisted counter (saved with the next :meth:`save_counters`)."""
        self.counters[name] = self.counters.get(name, 0) + n
        self._counters_dirty = True

    def save_counters(self) -> None:
        conn = self._db()
        try:
            self._begin(0)
            self._save_counters(conn)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise self._queue_error(exc) from exc

    # -- reads -----------------------------------------------------------------------------
    def fetch(self, lane: int, after_id: int, limit: int) -> list[QueuedRecord]:
        """The oldest records of ``lane`` with an id greater than ``after_id`` (fewer than ``limit``
        only when the lane holds no more).  A body that fails authentication (or does not inflate)
        is counted, logged and deleted (:meth:`_discard`); the others are returned."""
        out: list[QueuedRecord] = []
        cur = max(after_id, lane_lo(lane) - 1)
        sql = "SELECT id, seq, epoch, created, enc, body FROM records WHERE id > ? AND id < ? ORDER BY id LIMIT ?"
        while len(out) < limit:
            want = limit - len(out)
            rows = self._db().execute(sql, (cur, lane_hi(lane), want)).fetchall()
            bad: list[tuple[int, int, str]] = []
            for rid, seq, epoch, created, enc, body in rows:
                try:
                    text = self._open(_place(int(rid), int(seq), str(epoch), float(created)), int(enc), body)
                except (AtRestError, zlib.error, UnicodeDecodeError) as exc:
                    bad.append((int(rid), int(seq), str(exc)))
                    continue
                out.append(QueuedRecord(int(rid), lane, int(seq), str(epoch), float(created), text))
            if bad:
                self._discard(lane, bad)
            if len(rows) < want:
                break
            cur = int(rows[-1][0])
        return out

    def _discard(self, lane: int, bad: list[tuple[int, int, str]]) -> None:
        """Delete unreadable rows ((id, seq, why)) of ``lane``, counted as ``unreadable.<lane>`` and
        kept in :attr:`discarded` for the forwarder's loss report.  Logged without key material."""
        name = LANES[lane]
        log.error(
            "forward queue: %d %s record(s) unreadable, dropped (seq %s): %s",
            len(bad),
            name,
            ", ".join(str(seq) for _rid, seq, _why in bad[:10]) + (" ..." if len(bad) > 10 else ""),
            bad[0][2],
        )
        conn = self._db()
        self.bump(f"unreadable.{name}", len(bad))
        try:
            self._begin(0)
            conn.executemany("DELETE FROM records WHERE id=?", [(rid,) for rid, _seq, _why in bad])
            self._save_counters(conn)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:  # counted again when read again
            self._rollback()
            self.counters[f"unreadable.{name}"] -= len(bad)
            log.error("forward queue: could not delete the unreadable records: %s", exc)
            return
        self.counts[lane] -= len(bad)
        self.discarded.extend((lane, seq) for _rid, seq, _why in bad)

    def oldest_created(self, lane: int) -> float | None:
        row = (
            self._db()
            .execute(
                "SELECT created FROM records WHERE id >= ? AND id < ? ORDER BY id LIMIT 1",
                (lane_lo(lane), lane_hi(lane)),
            )
            .fetchone()
        )
        return None if row is None else float(row[0])

    def used_bytes(self) -> int:
        """Bytes of the database in use (pages minus free pages): what budget enforcement works on."""
        conn = self._db()
        pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
        free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
        return (pages - free) * self._page_size

    def file_bytes(self) -> tuple[int, int, int]:
        """Sizes of the database file, its WAL and the WAL index (-shm) on disk."""
        return _size(self.path), _size(self._wal_path()), _size(Path(str(self.path) + "-shm"))

    def needs_room(self, incoming_bytes: int) -> bool:
        """True when ``incoming_bytes`` of new rows (:meth:`estimate_bytes`) would not fit under the budget."""
        return self.used_bytes() + incoming_bytes + self._slack_bytes() > self.db_budget_bytes

    def _slack_bytes(self) -> int:
        # Pages a commit may start beyond its rows' bytes (a leaf, an interior page); row bytes are
        # overestimated already (JSON length, not the deflated body).
        return 2 * self._page_size

    # -- disk budget -----------------------------------------------------------------------
    def enforce_budget(
        self, protect: dict[int, int], *, incoming: int = 0, force: bool = False, result: BudgetResult | None = None
    ) -> BudgetResult:
        """Make room for ``incoming`` bytes of new rows: compact summaries, then drop raw, summary,
        registry, alert, until the rows in use and ``incoming`` take at most 85% of the budget.

        ``protect`` maps lane -> highest id in flight: those rows are never touched.  ``force``
        frees space even under budget (used after "disk full", when the disk is smaller than the budget).
        Each chunk of work is a transaction of its own: on an error, ``result`` (when given) holds
        what was committed before it.
        """
        result = BudgetResult() if result is None else result
        used = self.used_bytes()
        if not force and not self.needs_room(incoming):
            return result
        # Down to 85% of the budget with the incoming rows in: the next commits fit without work.
        base = min(self.db_budget_bytes, used) if force else self.db_budget_bytes
        target = int(base * 0.85) - incoming - self._slack_bytes()
        steps: list[Callable[[], bool]] = [
            lambda: self._compact_chunk(protect, result),
            lambda: self._drop_chunk(RAW, protect, result),
            lambda: self._drop_chunk(SUMMARY, protect, result),
            lambda: self._drop_chunk(REGISTRY, protect, result),
            lambda: self._drop_chunk(ALERT, protect, result),
        ]
        for step in steps:
            while self.used_bytes() > target:
                if not step():
                    break
            if self.used_bytes() <= target:
                break
        return result

    def _compact_chunk(self, protect: dict[int, int], result: BudgetResult) -> bool:
        conn = self._db()
        lo = max(lane_lo(SUMMARY) - 1, protect.get(SUMMARY, -1))
        # The transaction rewrites the pages holding these rows: a quarter of the WAL allowance at most.
        rows = _first_within(
            conn.execute(
                "SELECT id, seq, epoch, created, enc, body FROM records"
                " WHERE id > ? AND id < ? AND level < ? ORDER BY id LIMIT ?",
                (lo, lane_hi(SUMMARY), self.compaction_max_level, _CHUNK),
            ).fetchall(),
            lambda row: len(row[5]) + ROW_OVERHEAD,
            self.wal_limit_bytes // 4,
        )
        groups: dict[tuple[str, str, str, int], list[tuple[int, int, float, dict[str, Any]]]] = {}
        unmergeable: list[int] = []
        for rid, seq, epoch, created, enc, body in rows:
            try:
                place = _place(int(rid), int(seq), str(epoch), float(created))
                record = json.loads(self._open(place, int(enc), body))
            except (AtRestError, zlib.error, ValueError):  # unreadable: left to fetch(), which counts it
                unmergeable.append(int(rid))
                continue
            if not is_mergeable(record):
                unmergeable.append(int(rid))
                continue
            groups.setdefault(group_key(record), []).append((int(rid), int(seq), float(created), record))
        updates: list[tuple[int, str, int, int, int, bytes, int]] = []
        removed: list[int] = []
        next_seq = self._next_seq[SUMMARY]
        for members in groups.values():
            for start in range(0, len(members), self.compaction_factor):
                chunk = members[start : start + self.compaction_factor]
                if len(chunk) < 2:
                    continue
                merged = merge_summaries([m[3] for m in chunk], [m[1] for m in chunk])
                level = int(merged["compaction"]["level"])
                # A merged record is new data: a fresh sequence number keeps idempotency keys unique.
                text = json.dumps(merged, separators=(",", ":"))
                place = _place(chunk[0][0], next_seq, self.epoch, chunk[0][2])
                new_enc, blob = self._seal(place, *encode_body(text))
                updates.append((next_seq, self.epoch, level, zlib.crc32(blob), new_enc, blob, chunk[0][0]))
                next_seq += 1
                removed.extend(m[0] for m in chunk[1:])
        if not updates and not unmergeable:
            return False
        try:
            self._begin(sum(len(r[5]) + ROW_OVERHEAD for r in rows))
            # Deletes first: the space they free takes the merged records, even at the page cap.
            conn.executemany("DELETE FROM records WHERE id=?", [(r,) for r in removed])
            conn.executemany("UPDATE records SET seq=?, epoch=?, level=?, crc=?, enc=?, body=? WHERE id=?", updates)
            conn.executemany("UPDATE records SET level=? WHERE id=?", [(UNMERGEABLE, r) for r in unmergeable])
            reserve = next_seq > self._seq_limit[SUMMARY]
            if reserve:  # merged records take new seqs: keep them below the limit (see commit())
                self._save_lane(conn, SUMMARY, next_seq + SEQ_BLOCK, self._pos_limit[SUMMARY])
            self.bump("compacted.summary", len(removed))
            self._save_counters(conn)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            self.counters["compacted.summary"] = self.counters.get("compacted.summary", 0) - len(removed)
            raise self._queue_error(exc) from exc
        self._next_seq[SUMMARY] = next_seq
        if reserve:
            self._seq_limit[SUMMARY] = next_seq + SEQ_BLOCK
        self.counts[SUMMARY] -= len(removed)
        if removed:
            result.compacted["summary"] = result.compacted.get("summary", 0) + len(removed)
            result.touched.add(SUMMARY)
        return bool(updates) or bool(unmergeable)

    def _drop_chunk(self, lane: int, protect: dict[int, int], result: BudgetResult) -> bool:
        conn = self._db()
        lo = max(lane_lo(lane) - 1, protect.get(lane, -1))
        # A delete rewrites (most of) the pages the rows are on: a quarter of the WAL allowance at most.
        rows = _first_within(
            conn.execute(
                "SELECT id, seq, length(body) FROM records WHERE id > ? AND id < ? ORDER BY id LIMIT ?",
                (lo, lane_hi(lane), _CHUNK),
            ).fetchall(),
            lambda row: int(row[2]) + ROW_OVERHEAD,
            self.wal_limit_bytes // 4,
        )
        if not rows:
            return False
        name = LANES[lane]
        through = int(rows[-1][0])
        try:
            self._begin(sum(int(r[2]) + ROW_OVERHEAD for r in rows))
            conn.execute("DELETE FROM records WHERE id > ? AND id <= ?", (lo, through))
            self.bump(f"dropped.{name}", len(rows))
            self._save_counters(conn)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            self.counters[f"dropped.{name}"] -= len(rows)
            raise self._queue_error(exc) from exc
        self.counts[lane] -= len(rows)
        result.dropped[name] = result.dropped.get(name, 0) + len(rows)
        ranges = result.dropped_seq_ranges.setdefault(name, [])
        for _rid, seq, _length in rows:
            if ranges and ranges[-1][1] + 1 == seq:
                ranges[-1][1] = int(seq)
            else:
                ranges.append([int(seq), int(seq)])
        result.touched.add(lane)
        return True

    # -- housekeeping ----------------------------------------------------------------------
    def checkpoint(self) -> None:
        self._db().execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        """Save lane positions and counters, then close (the WAL is checkpointed by SQLite)."""
        if self._conn is not None:
            try:
                with contextlib.suppress(sqlite3.Error):
                    self._begin(0)
                    self._save_lanes(self._conn)
                    self._save_counters(self._conn)
                    self._conn.execute("COMMIT")
                self._rollback()
                self._conn.close()
            finally:
                self._conn = None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise QueueError(f"forward queue {self.path} is not open: call open() first")
        return self._conn

    def _rollback(self) -> None:
        conn = self._db()
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")

    def _begin(self, row_bytes: int) -> None:
        """BEGIN a write transaction that touches about ``row_bytes`` of rows.  When its pages could
        push the WAL file past its allowance, checkpoint and empty the WAL first (rare with a
        budget of a few MB or more: the WAL is checkpointed on its own at a quarter of it)."""
        conn = self._db()
        frames = row_bytes // (self._page_size - 8) + 1 + _TXN_OVERHEAD_PAGES
        if _size(self._wal_path()) + frames * (self._page_size + _WAL_FRAME_HEADER) > self.wal_limit_bytes:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("BEGIN")

    def _wal_path(self) -> Path:
        return Path(str(self.path) + "-wal")

    def _queue_error(self, exc: sqlite3.Error) -> QueueError:
        error = _queue_error(exc)
        if isinstance(error, DiskFullError) and self._budget_cap_binds():
            error.reason = "disk_budget"
        return error

    def _budget_cap_binds(self) -> bool:
        """After SQLITE_FULL: was it the budget's page cap (the file system still has room)?"""
        if self.max_page_count is not None and self.max_page_count <= self._budget_pages:
            return False  # the caller's own cap (a small disk) is the tighter one
        try:
            st = os.statvfs(self.path.parent)
        except OSError:
            return False
        return st.f_bavail * st.f_frsize > self.wal_limit_bytes

    def _save_lane(self, conn: sqlite3.Connection, lane: int, next_seq: int, next_pos: int) -> None:
        conn.execute("INSERT OR REPLACE INTO lanes(lane, next_seq, next_pos) VALUES(?,?,?)", (lane, next_seq, next_pos))

    def _save_lanes(self, conn: sqlite3.Connection) -> None:
        conn.executemany(
            "INSERT OR REPLACE INTO lanes(lane, next_seq, next_pos) VALUES(?,?,?)",
            [(lane, self._next_seq[lane], self._next_pos[lane]) for lane in range(len(LANES))],
        )

    def _save_counters(self, conn: sqlite3.Connection) -> None:
        conn.executemany("INSERT OR REPLACE INTO counters(name, value) VALUES(?,?)", sorted(self.counters.items()))
        self._counters_dirty = False


ENC_TEXT, ENC_DEFLATE = 0, 1
_DEFLATE_MIN = 64


def encode_body(text: str) -> tuple[int, bytes]:
    """Stored form of a record's JSON: raw deflate (1 KB window, fast setup) when it saves bytes.

    Fewer bytes written per record is fewer bytes of SD card worn: JSON summaries shrink to about
    half.  Short records are stored as they are.
    """
    raw = text.encode()
    if len(raw) < _DEFLATE_MIN:
        return ENC_TEXT, raw
    packer = zlib.compressobj(1, zlib.DEFLATED, -10, 2)
    packed = packer.compress(raw) + packer.flush()
    return (ENC_DEFLATE, packed) if len(packed) < len(raw) else (ENC_TEXT, raw)


def decode_body(enc: int, blob: bytes) -> str:
    if enc == ENC_TEXT:
        return bytes(blob).decode()
    if enc == ENC_DEFLATE:
        return zlib.decompress(blob, -15).decode()
    raise QueueError(f"forward queue: unknown body encoding {enc} (written by a newer version?)")


_AAD = b"edgeline/forward/1\0"
_AAD_ROW = struct.Struct(">qqdB")  # id, seq, created, length of the epoch


def key_usage(path: Path) -> dict[int, list[int]]:
    """Records per key id (0: plain bodies) and lane in a queue file, read-only (``keys status``)."""
    if not path.exists():
        return {}
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute(f"SELECT enc >> 8, id >> {LANE_SHIFT}, count(*) FROM records GROUP BY 1, 2").fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return {}
        raise QueueError(f"forward queue {path}: {exc}") from exc
    finally:
        conn.close()
    usage: dict[int, list[int]] = {}
    for key_id, lane, count in rows:
        if 0 <= int(lane) < len(LANES):
            usage.setdefault(int(key_id), [0] * len(LANES))[int(lane)] = int(count)
    return usage


def _place(rid: int, seq: int, epoch: str, created: float) -> bytes:
    """What an encrypted body is bound to (its AAD, with its compression byte after): its row (the
    id: lane and position), seq and epoch (its idempotency key) and creation time."""
    return _AAD + _AAD_ROW.pack(rid, seq, created, len(epoch)) + epoch.encode()


def _queue_error(exc: sqlite3.Error) -> QueueError:
    text = str(exc)
    if "full" in text.lower():
        return DiskFullError(f"forward queue: {text} (disk budget or file system full)")
    return QueueError(f"forward queue: {type(exc).__name__}: {text}")


def _valid_row(row: Sequence[Any], lane: int) -> bool:
    rid, seq, epoch, created, level, crc, enc, body = row
    if not isinstance(rid, int) or not lane_lo(lane) <= rid < lane_hi(lane):
        return False
    if not isinstance(epoch, str) or not epoch:
        return False
    if not isinstance(seq, int) or not isinstance(level, int):
        return False
    if not isinstance(created, (int, float)) or not math.isfinite(created):
        return False
    if not isinstance(body, bytes) or crc != zlib.crc32(body) or not isinstance(enc, int):
        return False  # the row's bytes were damaged (SQLite itself has no checksum per row)
    if enc >> 8:
        return True  # encrypted: authenticated when fetched (the key ring is not needed to salvage)
    try:
        json.loads(decode_body(enc, body))
    except (ValueError, zlib.error, QueueError):
        return False
    return True


def _first_within(rows: list[Any], size: Callable[[Any], int], limit: int) -> list[Any]:
    """The first of ``rows`` whose sizes add up to at most ``limit`` (at least one row)."""
    total = 0
    for i, row in enumerate(rows):
        total += size(row)
        if total > limit and i > 0:
            return rows[:i]
    return rows


def _try_fetch(conn: sqlite3.Connection, sql: str) -> tuple[Any, ...] | None:
    try:
        row = conn.execute(sql).fetchone()
    except sqlite3.DatabaseError:
        return None
    return None if row is None else tuple(row)


def _try_fetch_all(conn: sqlite3.Connection, sql: str) -> list[tuple[Any, ...]] | None:
    try:
        return [tuple(r) for r in conn.execute(sql)]
    except sqlite3.DatabaseError:
        return None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def summary_level(lane: int, record: Any) -> int:
    """The ``level`` column of a new record: its compaction level for summaries, else 0."""
    if lane != SUMMARY:
        return 0
    if not is_mergeable(record):
        return UNMERGEABLE
    info = record.get("compaction")
    return int(info.get("level", 0)) if isinstance(info, dict) else 0


def iter_lane_names(lanes: Iterable[int]) -> list[str]:
    return [LANES[i] for i in lanes]
