"""The forward queue encrypted at rest, in-process: a queue of plain records switched to encryption
(both read; ``retire plain`` leaves no plaintext on disk), files the ring cannot read refused at
open with the fix, and encrypted summaries compacted like plain ones."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gateway.atrest import OVERHEAD, EncryptionSettings, KeyRing, key_name, open_keyring
from gateway.forward.errors import QueueError
from gateway.forward.queue import ALERT, SUMMARY, ForwardQueue, Pending, key_usage, summary_level

MARKER = "ZQX-CONFIDENTIAL-READING"


def _ring(tmp_path: Path, name: str = "keys") -> KeyRing:
    return open_keyring(EncryptionSettings(key_dir=tmp_path / name), create=True, writer=True)


def _on_disk(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in (db, Path(f"{db}-wal")) if p.exists())


def _items(first: int, n: int) -> list[Pending]:
    """Records short enough to be stored as they are (not deflated): the marker is visible in a plain file."""
    return [Pending(ALERT, 100.0 + i, json.dumps({"n": i, "note": MARKER}), 0) for i in range(first, first + n)]


def test_plain_records_stay_readable_beside_encrypted_ones_and_retire_plain_scrubs_them(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    q = ForwardQueue(db, budget_bytes=8 << 20)
    q.open()
    q.commit(_items(0, 10))
    q.close()
    assert MARKER.encode() in _on_disk(db)  # written before encryption was on
    ring = _ring(tmp_path)
    q = ForwardQueue(db, budget_bytes=8 << 20, cipher=ring.cipher())
    assert q.open().state == "ok" and q.row_overhead == 64 + OVERHEAD
    q.commit(_items(10, 10))
    assert {k: sum(v) for k, v in key_usage(db).items()} == {0: 10, ring.active_id: 10}
    got = q.fetch(ALERT, -1, 100)
    assert [json.loads(r.body)["n"] for r in got] == list(range(20))
    assert all(json.loads(r.body)["note"] == MARKER for r in got)
    # `keys retire plain`: the plain bodies re-encrypted, the pages they leave zeroed, the WAL emptied.
    assert q.reencrypt(0, scrub=True) == (10, 0)
    assert MARKER.encode() not in _on_disk(db)
    assert set(key_usage(db)) == {ring.active_id}
    assert [r.body for r in q.fetch(ALERT, -1, 100)] == [r.body for r in got]
    q.close()
    ring.close()


def test_a_queue_the_keys_cannot_read_is_refused_with_the_fix(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    ring = _ring(tmp_path)
    q = ForwardQueue(db, budget_bytes=8 << 20, cipher=ring.cipher())
    q.open()
    q.commit(_items(0, 3))
    q.close()
    name = key_name(ring.active_id)
    with pytest.raises(QueueError, match=f"encrypted under key\\(s\\) {name}, but encryption is off"):
        ForwardQueue(db, budget_bytes=8 << 20).open()
    other = _ring(tmp_path, "other-keys")  # another gateway's key directory
    with pytest.raises(QueueError, match=f"under key\\(s\\) {name}, which the key ring .* restore key-{name}.sealed"):
        ForwardQueue(db, budget_bytes=8 << 20, cipher=other.cipher()).open()
    # Nothing was changed: the right keys read every record.
    q = ForwardQueue(db, budget_bytes=8 << 20, cipher=ring.cipher())
    q.open()
    assert [json.loads(r.body)["n"] for r in q.fetch(ALERT, -1, 10)] == [0, 1, 2]
    q.close()
    ring.close()
    other.close()


def test_encrypted_summaries_are_compacted_under_the_budget(tmp_path: Path) -> None:
    ring = _ring(tmp_path)
    db = tmp_path / "q.db"
    q = ForwardQueue(db, budget_bytes=300 * 1024, cipher=ring.cipher())
    q.open()
    values = np.arange(10.0)
    stats = {"count": 10, "min": 0.0, "max": 9.0, "mean": float(values.mean()), "std": float(values.std())}
    summaries = []
    for i in range(1200):
        rec = {
            "device": "d1",
            "unit": "g",
            "start": 10.0 * i,
            "end": 10.0 * (i + 1),
            "stats": {"x": stats},
            "note": MARKER,
        }
        summaries.append(Pending(SUMMARY, 100.0 + i, json.dumps(rec), summary_level(SUMMARY, rec)))
    for start in range(0, 1200, 40):
        batch = summaries[start : start + 40]
        incoming = sum(q.estimate_bytes(p) for p in batch)
        if q.needs_room(incoming):
            q.enforce_budget({}, incoming=incoming)
        q.commit(batch)
    assert q.counters.get("compacted.summary", 0) > 0
    merged = [json.loads(r.body) for r in q.fetch(SUMMARY, -1, 1000)]
    assert any(r.get("compaction", {}).get("level", 0) >= 1 for r in merged)
    assert sum(r["stats"]["x"]["count"] for r in merged) == 1200 * 10  # every reading kept, merged
    assert set(key_usage(db)) == {ring.active_id} and MARKER.encode() not in _on_disk(db)
    q.close()
    ring.close()


def test_a_key_ring_that_cannot_hand_out_a_nonce_epoch_fails_the_commit_not_the_queue(tmp_path: Path) -> None:
    ring = _ring(tmp_path)
    ring_file = tmp_path / "keys" / "keyring.json"
    good = ring_file.read_bytes()
    q = ForwardQueue(tmp_path / "q.db", budget_bytes=8 << 20, cipher=ring.cipher())
    q.open()
    ring_file.write_bytes(b"{")  # keyring.json damaged: no epoch can be taken, so nothing is encrypted
    with pytest.raises(QueueError, match=r"cannot encrypt \(key ring .*keyring.json is unreadable"):
        q.commit(_items(0, 3))
    assert q.counts[ALERT] == 0 and q.fetch(ALERT, -1, 10) == []
    ring_file.write_bytes(good)  # restored: the records (kept in memory by the forwarder) go in
    q.commit(_items(0, 3))
    assert [json.loads(r.body)["n"] for r in q.fetch(ALERT, -1, 10)] == [0, 1, 2]
    q.close()
    ring.close()
