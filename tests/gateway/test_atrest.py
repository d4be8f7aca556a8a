"""Encryption at rest, in-process: the key ring's files and modes, nonces that never repeat (threads,
restarts, rotations), records bound to their place, and the raw log encrypted, tampered and mixed
with chunks written before encryption was on.  The forward queue and real processes:
tests/forward/test_atrest.py."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import time
from pathlib import Path

import pytest

from gateway.atrest import (
    FILE_SEALER_KEY,
    OVERHEAD,
    AtRestError,
    Cipher,
    EncryptionSettings,
    FileSealer,
    KeyRing,
    UnknownKeyError,
    key_id_of,
    key_name,
    open_keyring,
)
from gateway.config import ConfigError, from_dict
from gateway.rawlog import LogRow, RawLog, key_usage, read_all, read_frames

MARKER = b"EKRY!!SECRET-READING"


def _ring(tmp_path: Path, **kw: bool) -> KeyRing:
    return open_keyring(EncryptionSettings(key_dir=tmp_path / "keys"), create=True, **kw)


def _nonce(blob: bytes) -> bytes:
    return blob[5:17]


# --------------------------------------------------------------------------- key ring


def test_key_directory_is_private_and_holds_no_key_in_the_clear(tmp_path: Path) -> None:
    ring = _ring(tmp_path, writer=True)
    keys = tmp_path / "keys"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    names = sorted(p.name for p in keys.iterdir())
    assert names == sorted(
        [FILE_SEALER_KEY, f"key-{key_name(ring.active_id)}.sealed", "keyring.json", "keyring.lock", "writers.lock"]
    )
    for p in keys.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    # The data key is only in its sealed file, and only sealed.
    data_key = FileSealer(keys / FILE_SEALER_KEY).unseal((keys / f"key-{key_name(ring.active_id)}.sealed").read_bytes())
    assert len(data_key) == 32
    for p in keys.iterdir():
        assert data_key not in p.read_bytes(), p
    state = json.loads((keys / "keyring.json").read_text())
    assert state["sealer"] == "file" and state["active"] == ring.active_id
    ring.close()


def test_records_round_trip_and_are_bound_to_their_place(tmp_path: Path) -> None:
    ring = _ring(tmp_path)
    cipher = ring.cipher()
    blob = cipher.encrypt(MARKER, b"row 7")
    assert len(blob) == len(MARKER) + OVERHEAD and blob[0] == 1 and key_id_of(blob) == ring.active_id
    assert MARKER not in blob
    assert ring.decrypt(blob, b"row 7") == MARKER
    with pytest.raises(AtRestError, match="authentication failed"):
        ring.decrypt(blob, b"row 8")  # moved to another place
    for i in range(len(blob)):  # any byte flipped: header, nonce, ciphertext or tag
        bad = bytearray(blob)
        bad[i] ^= 0x01
        with pytest.raises(AtRestError):
            ring.decrypt(bytes(bad), b"row 7")
    with pytest.raises(AtRestError, match="too short"):
        ring.decrypt(blob[:20], b"row 7")


def test_nonces_never_repeat_across_writers_restarts_and_kill(tmp_path: Path) -> None:
    ring = _ring(tmp_path, writer=True)
    a, b = ring.cipher(), ring.cipher()  # two writing threads of one process
    blobs = [a.encrypt(b"x", b"") for _ in range(50)] + [b.encrypt(b"x", b"") for _ in range(50)]
    # A "restart" without close() (kill -9): a new ring on the same directory.
    again = _ring(tmp_path, writer=True)
    blobs += [again.cipher().encrypt(b"x", b"") for _ in range(3)]  # three writers, one record each
    nonces = [_nonce(x) for x in blobs]
    assert len(set(nonces)) == len(nonces)
    epochs = sorted({n[:4] for n in nonces})
    assert [int.from_bytes(e, "big") for e in epochs] == [0, 1, 2, 3, 4]
    assert [int.from_bytes(n[4:], "big") for n in nonces[:50]] == list(range(50))  # the counter
    # The next epoch is on disk before a record uses it.
    assert json.loads((tmp_path / "keys" / "keyring.json").read_text())["keys"][0]["next_epoch"] == 5
    ring.close()
    again.close()


def test_rotation_is_taken_up_by_a_running_writer(tmp_path: Path) -> None:
    now = [0.0]
    ring = _ring(tmp_path, writer=True)
    cipher = Cipher(ring, clock=lambda: now[0])  # the writer looks for a rotation once a second
    first = ring.active_id
    old = cipher.encrypt(b"before", b"")
    other_process = open_keyring(EncryptionSettings(key_dir=tmp_path / "keys"))
    second = other_process.rotate()
    assert second != first and key_id_of(cipher.encrypt(b"soon after", b"")) == first
    now[0] += 1.0
    new = cipher.encrypt(b"after", b"")
    assert key_id_of(new) == second
    assert ring.decrypt(old, b"") == b"before" and ring.decrypt(new, b"") == b"after"  # old keys still read
    assert [k.id for k in ring.infos()] == [first, second] and ring.infos()[1].active
    ring.close()
    other_process.close()


def test_retire_needs_every_writer_stopped_and_drops_the_key(tmp_path: Path) -> None:
    writer = _ring(tmp_path, writer=True)
    blob = writer.cipher().encrypt(b"old", b"")
    first = writer.active_id
    admin = open_keyring(EncryptionSettings(key_dir=tmp_path / "keys"))
    admin.rotate()
    with pytest.raises(AtRestError, match=r"running with the key directory .* stop it first"), admin.exclusive():
        pass
    writer.close()  # the gateway stopped
    with admin.exclusive():
        with pytest.raises(AtRestError, match="active key"):
            admin.retire(admin.active_id)
        admin.retire(first)
    assert not (tmp_path / "keys" / f"key-{key_name(first)}.sealed").exists()
    with pytest.raises(UnknownKeyError, match=f"key {key_name(first)} is not in the key ring") as err:
        admin.decrypt(blob, b"")
    assert err.value.key_id == first
    admin.close()


def test_bad_key_directories_are_refused_with_the_fix(tmp_path: Path) -> None:
    settings = EncryptionSettings(key_dir=tmp_path / "keys")
    with pytest.raises(AtRestError, match=r"no key ring in .* first `edgeline-gateway run`"):
        open_keyring(settings)
    _ring(tmp_path).close()
    os.chmod(tmp_path / "keys", 0o755)
    with pytest.raises(AtRestError, match="mode 0755, open to other users; run `chmod 700"):
        open_keyring(settings)
    os.chmod(tmp_path / "keys", 0o700)
    os.chmod(tmp_path / "keys" / FILE_SEALER_KEY, 0o644)
    with pytest.raises(AtRestError, match=r"file sealer key .* mode 0644.*chmod 600"):
        open_keyring(settings)
    # Another gateway's sealer key: the data keys do not unseal.
    (tmp_path / "keys" / FILE_SEALER_KEY).unlink()
    FileSealer(tmp_path / "keys" / FILE_SEALER_KEY, create=True)
    with pytest.raises(AtRestError, match=r"cannot be unsealed by the file sealer.*another gateway"):
        open_keyring(settings)
    with pytest.raises(AtRestError, match='sealed by the "file" sealer, but \\[encryption\\] sealer is "tpm"'):
        KeyRing.open(tmp_path / "keys", _FakeTpm())


class _FakeTpm:
    name = "tpm"

    def seal(self, secret: bytes) -> bytes:
        return secret

    def unseal(self, blob: bytes) -> bytes:
        return blob


def test_encryption_config_names_the_key(tmp_path: Path) -> None:
    base = {"gateway": {"id": "gw1", "site": "s1", "data_dir": str(tmp_path / "data")}}
    assert from_dict(base).encryption is None
    cfg = from_dict({**base, "encryption": {"enabled": True}})
    assert cfg.encryption == EncryptionSettings(key_dir=tmp_path / "data" / "keys")
    cfg = from_dict({**base, "encryption": {"enabled": True, "sealer": "tpm", "tpm_tcti": "swtpm:port=2321"}})
    assert cfg.encryption is not None and cfg.encryption.tpm_tcti == "swtpm:port=2321"
    bad = [
        ({"enabled": "yes"}, "encryption.enabled: expected true or false"),
        ({"enabled": True, "sealer": "hsm"}, "encryption.sealer: expected one of file, tpm"),
        ({"enabled": True, "tpm_tcti": "x"}, 'encryption.tpm_tcti: used only with sealer = "tpm"'),
        ({"enabled": False, "key_dri": "x"}, "encryption.key_dri: unknown key"),
    ]
    for table, message in bad:
        with pytest.raises(ConfigError, match=message.replace("[", "\\[")):
            from_dict({**base, "encryption": table})


# --------------------------------------------------------------------------- raw log


def _rows(device: str, first: int, n: int, t0: float) -> list[LogRow]:
    return [LogRow(device, 1, s, 2, 0, t0 + s, t0 + s, MARKER + bytes([s & 0xFF])) for s in range(first, first + n)]


def _file_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())


def test_rawlog_encrypted_leaves_no_plaintext_and_reads_back(tmp_path: Path) -> None:
    ring = _ring(tmp_path, writer=True)
    path = tmp_path / "rawlog.sqlite"
    log = RawLog(path, max_bytes=1 << 30, max_age_s=3600, cipher=ring.cipher())
    t0 = time.time()
    rows = _rows("pump-1", 1, 20, t0)
    log.commit_batch(rows[:10], now=t0)
    log.commit_batch(rows[10:], now=t0)
    assert MARKER not in _file_bytes(path)  # the database and its WAL, while the gateway runs
    assert log.frames("pump-1", t0, t0 + 100) == rows
    assert log.has("pump-1", 1, 7) and log.stored_seqs("pump-1", 1, since=0) == list(range(1, 21))
    assert log.received_between(t0, t0 + 100) == rows
    log.close()
    assert MARKER not in _file_bytes(path)
    assert read_frames(path, "pump-1", t0, t0 + 100, keys=ring) == rows
    assert read_all(path, "pump-1", keys=ring) == rows
    assert key_usage(path)[ring.active_id].chunks == 2
    # Without the keys nothing is read, and nothing crashes.
    assert read_all(path, "pump-1") == []
    ring.close()
    # The same rows without encryption do hold the marker (the check above can fail).
    plain = RawLog(tmp_path / "plain.sqlite", max_bytes=1 << 30, max_age_s=3600)
    plain.commit_batch(rows, now=t0)
    plain.close()
    assert MARKER in _file_bytes(tmp_path / "plain.sqlite")


def test_rawlog_tampered_or_swapped_chunks_are_counted_and_skipped(tmp_path: Path) -> None:
    ring = _ring(tmp_path, writer=True)
    path = tmp_path / "rawlog.sqlite"
    log = RawLog(path, max_bytes=1 << 30, max_age_s=3600, cipher=ring.cipher())
    t0 = time.time()
    a, b, c = _rows("pump-1", 1, 5, t0), _rows("pump-1", 6, 5, t0), _rows("pump-2", 1, 5, t0)
    for batch in (a, b, c):
        log.commit_batch(batch, now=t0)
    db = sqlite3.connect(path)
    ids = [r[0] for r in db.execute("SELECT id FROM chunks ORDER BY id")]
    frames = {r[0]: r[1] for r in db.execute("SELECT id, frames FROM chunks")}
    flipped = bytearray(frames[ids[0]])
    flipped[40] ^= 0x80
    with db:
        db.execute("UPDATE chunks SET frames = ? WHERE id = ?", (bytes(flipped), ids[0]))  # tampered
        db.execute("UPDATE chunks SET frames = ? WHERE id = ?", (frames[ids[1]], ids[2]))  # pump-1's frames as pump-2's
    db.close()
    assert log.frames("pump-1", t0, t0 + 100) == b  # the good neighbour is read
    assert log.frames("pump-2", t0, t0 + 100) == []
    assert log.stats().unreadable == 2
    assert log.stored_seqs("pump-1", 1, since=0) == list(range(1, 11))  # from the index, not the frames
    log.close()
    ring.close()


def test_rawlog_from_before_encryption_stays_readable_beside_encrypted_chunks(tmp_path: Path) -> None:
    path = tmp_path / "rawlog.sqlite"
    t0 = time.time()
    old, new = _rows("pump-1", 1, 5, t0), _rows("pump-1", 6, 5, t0)
    # A file as the gateway wrote it before encryption existed (no enc column).
    db = sqlite3.connect(path)
    db.executescript(
        """CREATE TABLE chunks (id INTEGER PRIMARY KEY, device TEXT NOT NULL, boot INTEGER NOT NULL,
        seq_first INTEGER NOT NULL, seq_last INTEGER NOT NULL, n INTEGER NOT NULL, t_first REAL NOT NULL,
        t_last REAL NOT NULL, received REAL NOT NULL, frames BLOB NOT NULL);"""
    )
    db.close()
    before = RawLog(path, max_bytes=1 << 30, max_age_s=3600)  # adds the column: plain chunks, enc 0
    before.commit_batch(old, now=t0)
    before.close()
    ring = _ring(tmp_path, writer=True)
    log = RawLog(path, max_bytes=1 << 30, max_age_s=3600, cipher=ring.cipher())
    log.commit_batch(new, now=t0)
    assert log.frames("pump-1", t0, t0 + 100) == old + new
    usage = key_usage(path)
    assert usage[0].frames == 5 and usage[ring.active_id].frames == 5
    # `keys retire plain --rawlog reencrypt`: the plaintext is re-encrypted and its pages zeroed.
    assert MARKER in _file_bytes(path)
    assert log.reencrypt(0, scrub=True) == (1, 0)
    assert MARKER not in _file_bytes(path)
    assert log.frames("pump-1", t0, t0 + 100) == old + new
    assert set(key_usage(path)) == {ring.active_id}
    log.close()
    ring.close()
