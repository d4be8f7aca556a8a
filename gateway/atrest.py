"""Encryption at rest: the gateway's data keys, and AES-256-GCM records under them.

Encrypted: forward queue bodies (gateway/forward/queue.py) and raw log chunks (gateway/rawlog.py).
docs/gateway.md "Encryption at rest" describes the scheme for users; this is the code's summary.

Record: version (1 byte) | key id (4, big-endian) | nonce (12) | ciphertext | GCM tag (16), 33
bytes more than the plaintext.  The 17-byte header is authenticated together with the caller's
AAD, which names the record's place (a queue row: its id, seq and epoch; a raw log chunk: its id,
device, boot, sequence span and times), so a record moved to another place, or given another key
id, fails authentication.

Nonce: epoch (4 bytes) | counter (8 bytes).  Each writer (a :class:`Cipher`, one per thread that
writes) takes the next epoch of the active key from ``keyring.json`` under an exclusive lock, and
that file is fsynced before the first record uses the epoch; the writer then counts its records
from 0.  So a nonce never repeats under one key: not across threads, processes, kill -9 (an epoch
taken is spent even if nothing was written with it) or restarts.  2^32 epochs per key, 2^64
records per epoch.  Random 96-bit nonces were not chosen: at raw log rates (thousands of chunks
a second on a big site) they reach NIST's limit of 2^32 messages per key within days.

Key directory (0700; every file 0600, created so): ``keyring.json`` (sealer, active key, each key's
id, creation time and next epoch), ``key-<id>.sealed`` (a 32-byte data key sealed by the sealer),
``file-sealer.key`` (the file sealer's own key), ``keyring.lock`` (held while keyring.json
changes) and ``writers.lock`` (held shared by every process that writes encrypted data, so that
``keys retire`` can tell that none runs).  Key ids are random 32-bit numbers: records from another
gateway's key directory show as "unknown key", not as failed authentication.

About 530 lines: the record format, the writers' nonces and the key ring share one rule (epochs
are taken from keyring.json under its lock), so they stay together; the file sealer and the
settings could move out.  This module imports nothing of the gateway but gateway.errors: the
forward queue uses it too.
``cryptography`` (7 MB of resident OpenSSL) is imported only once a key is used.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import json
import logging
import os
import secrets
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

from gateway.durable import write_durably
from gateway.errors import GatewayError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

log = logging.getLogger(__name__)

VERSION = 1
_HEADER = struct.Struct(">BI12s")  # version, key id, nonce
_TAG = 16
OVERHEAD = _HEADER.size + _TAG
"""Bytes an encrypted record takes beyond its plaintext (33)."""
_MAX_EPOCH = 0xFFFF_FFFF
_MAX_COUNTER = 0xFFFF_FFFF_FFFF_FFFF
REFRESH_S = 1.0
"""How often a writer looks for a rotated key (a stat of keyring.json)."""

RING_FILE = "keyring.json"
FILE_SEALER_KEY = "file-sealer.key"
_RING_LOCK = "keyring.lock"
_WRITERS_LOCK = "writers.lock"
SEALERS = ("file", "tpm")


class AtRestError(GatewayError):
    """A record or key that cannot be used: failed authentication, an unknown key, a bad key directory."""


class UnknownKeyError(AtRestError):
    """A record names a key id that the key ring does not hold (``key_id``)."""

    def __init__(self, message: str, key_id: int) -> None:
        super().__init__(message)
        self.key_id = key_id


class Sealer(Protocol):
    """Seals the data keys: the file sealer (here) or the TPM (``gateway.tpm.TpmSealer``)."""

    name: str

    def seal(self, secret: bytes) -> bytes: ...

    def unseal(self, blob: bytes) -> bytes: ...  # raises AtRestError on a wrong/tampered blob


def key_name(key_id: int) -> str:
    """How a key id is shown (8 hex digits) and named on disk."""
    return f"{key_id:08x}"


def key_id_of(blob: bytes) -> int:
    """The key id in an encrypted record's header (not authenticated until decrypted)."""
    if len(blob) < OVERHEAD or blob[0] != VERSION:
        raise AtRestError(f"not an encrypted record (format version {blob[:1].hex() or 'missing'}, {len(blob)} bytes)")
    return int.from_bytes(blob[1:5], "big")


def _aesgcm(key: bytes) -> AESGCM:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM(key)


def _invalid_tag() -> type[Exception]:
    from cryptography.exceptions import InvalidTag

    return InvalidTag


# --------------------------------------------------------------------------- private files


def _read_private(path: Path, what: str) -> bytes:
    """A key file's bytes; refused when group or others may access it."""
    try:
        st = path.stat()
        if st.st_mode & 0o077:
            raise AtRestError(
                f"{what} {path} has mode {st.st_mode & 0o777:04o}, open to other users; run `chmod 600 {path}`"
            )
        return path.read_bytes()
    except OSError as exc:
        raise AtRestError(f"{what}: cannot read {path} ({exc.strerror})") from exc


@contextlib.contextmanager
def _flock(path: Path, how: int) -> Iterator[int]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, how)
        yield fd
    finally:
        os.close(fd)  # releases the lock


# --------------------------------------------------------------------------- file sealer


class FileSealer:
    """Seals data keys with AES-256-GCM under a 32-byte key file (mode 0600).

    It keeps data keys out of the data files and their copies; it does not protect a pulled SD card
    when the key file is on it (the TPM sealer does: its key never leaves the TPM).
    """

    name = "file"
    _MAGIC = b"ELFS1"

    def __init__(self, key_file: Path, *, create: bool = False) -> None:
        self.key_file = key_file
        if create and not key_file.exists():
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, secrets.token_bytes(32))
                os.fsync(fd)
            finally:
                os.close(fd)
        key = _read_private(key_file, "file sealer key")
        if len(key) != 32:
            raise AtRestError(f"file sealer key {key_file} has {len(key)} bytes, expected 32: restore it from a backup")
        self._aead = _aesgcm(key)
        self._invalid_tag = _invalid_tag()

    def seal(self, secret: bytes) -> bytes:
        nonce = os.urandom(12)  # a handful of seals per key file: random nonces are safe here
        return self._MAGIC + nonce + self._aead.encrypt(nonce, secret, self._MAGIC)

    def unseal(self, blob: bytes) -> bytes:
        m = len(self._MAGIC)
        if blob[:m] != self._MAGIC or len(blob) < m + 12 + _TAG:
            raise AtRestError("not sealed by a file sealer (sealed by the TPM? see [encryption] sealer)")
        try:
            return self._aead.decrypt(blob[m : m + 12], blob[m + 12 :], self._MAGIC)
        except self._invalid_tag:
            raise AtRestError(
                f"sealed under another key than {self.key_file} (a key file of another gateway?) or damaged"
            ) from None


# --------------------------------------------------------------------------- key ring


@dataclass(frozen=True)
class KeyInfo:
    id: int
    created: float
    next_epoch: int  # epochs taken so far (writer starts under this key)
    active: bool


class KeyRing:
    """The data keys of one key directory: decrypts under any of them, hands writers epochs of
    the active one, rotates and retires keys.  Thread-safe.  Open with :meth:`open`."""

    def __init__(self, directory: Path, sealer: Sealer) -> None:
        self.directory = Path(directory)
        self.sealer = sealer
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._aeads: dict[int, AESGCM] = {}
        self._infos: tuple[KeyInfo, ...] = ()
        self._active = 0
        self._writer_fd: int | None = None
        self._invalid_tag = _invalid_tag()

    @classmethod
    def open(cls, directory: Path, sealer: Sealer, *, create: bool = False, writer: bool = False) -> KeyRing:
        """The key ring of ``directory`` (made, with a first key, when ``create`` and missing).
        ``writer``: this process writes encrypted data (holds writers.lock shared until close())."""
        ring = cls(directory, sealer)
        if create:
            ring._create()
        ring._check()
        if writer:
            fd = os.open(ring.directory / _WRITERS_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(fd, fcntl.LOCK_SH)  # waits while `keys retire` works
            ring._writer_fd = fd
        ring.refresh(force=True)
        return ring

    def close(self) -> None:
        if self._writer_fd is not None:
            os.close(self._writer_fd)
            self._writer_fd = None

    @property
    def active_id(self) -> int:
        return self._active

    def infos(self) -> tuple[KeyInfo, ...]:
        return self._infos

    def __contains__(self, key_id: int) -> bool:
        return key_id in self._aeads

    # -- records ---------------------------------------------------------------------------
    def decrypt(self, blob: bytes, aad: bytes) -> bytes:
        """The plaintext of a record sealed with ``aad``; raises AtRestError (UnknownKeyError)."""
        if len(blob) < OVERHEAD:
            raise AtRestError(f"record too short to be encrypted ({len(blob)} bytes)")
        version, key_id, nonce = _HEADER.unpack_from(blob)
        if version != VERSION:
            raise AtRestError(f"unknown record format version {version} (written by a newer gateway?)")
        aead = self._aeads.get(key_id)
        if aead is None and self.refresh():
            aead = self._aeads.get(key_id)
        if aead is None:
            raise UnknownKeyError(
                f"key {key_name(key_id)} is not in the key ring {self.directory} (retired, or another gateway's key)",
                key_id,
            )
        try:
            return aead.decrypt(nonce, blob[_HEADER.size :], blob[: _HEADER.size] + aad)
        except self._invalid_tag:
            raise AtRestError(
                f"authentication failed under key {key_name(key_id)}: the record was altered or moved"
            ) from None

    def cipher(self) -> Cipher:
        """A writer of records (one per thread that writes)."""
        return Cipher(self)

    # -- keyring.json ----------------------------------------------------------------------
    def refresh(self, *, force: bool = False) -> bool:
        """Reload keyring.json if it changed (a rotation or retirement by another process);
        True when it did."""
        path = self.directory / RING_FILE
        try:
            st = path.stat()
        except OSError as exc:
            raise AtRestError(f"key ring: cannot read {path} ({exc.strerror})") from exc
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp == self._stamp and not force:
            return False
        with self._lock:
            state = self._read_state()
            aeads = {kid: aead for kid, aead in self._aeads.items() if any(k["id"] == kid for k in state["keys"])}
            for k in state["keys"]:
                if k["id"] not in aeads:
                    aeads[k["id"]] = _aesgcm(self._unseal(k["id"]))
            self._aeads = aeads  # swapped whole: readers on other threads see the old or the new dict
            self._active = int(state["active"])
            self._infos = tuple(
                KeyInfo(int(k["id"]), float(k["created"]), int(k["next_epoch"]), k["id"] == self._active)
                for k in state["keys"]
            )
            self._stamp = stamp
        return True

    def take_epoch(self) -> tuple[int, int, AESGCM]:
        """(active key id, a fresh epoch of it, its AEAD): the epoch is on disk before this returns."""
        with _flock(self.directory / _RING_LOCK, fcntl.LOCK_EX):
            state = self._read_state()
            active = int(state["active"])
            entry = next(k for k in state["keys"] if k["id"] == active)
            epoch = int(entry["next_epoch"])
            if epoch > _MAX_EPOCH:
                raise AtRestError(
                    f"key {key_name(active)} has used all its 2^32 epochs: run `edgeline-gateway keys rotate`"
                )
            entry["next_epoch"] = epoch + 1
            self._write_state(state)
        self.refresh()
        aead = self._aeads.get(active)
        if aead is None:  # pragma: no cover - refresh() just loaded it
            raise AtRestError(f"key {key_name(active)} could not be loaded")
        return active, epoch, aead

    def rotate(self) -> int:
        """Make a new active key; the old ones stay for reading.  Returns its id."""
        with _flock(self.directory / _RING_LOCK, fcntl.LOCK_EX):
            state = self._read_state()
            kid = self._new_key({int(k["id"]) for k in state["keys"]})
            state["keys"].append({"id": kid, "created": time.time(), "next_epoch": 0})
            state["active"] = kid
            self._write_state(state)
        self.refresh()
        return kid

    def retire(self, key_id: int) -> None:
        """Delete an old key.  Call inside :meth:`exclusive`, once nothing needs it any more."""
        with _flock(self.directory / _RING_LOCK, fcntl.LOCK_EX):
            state = self._read_state()
            if key_id == int(state["active"]):
                raise AtRestError(f"key {key_name(key_id)} is the active key: run `edgeline-gateway keys rotate` first")
            if not any(k["id"] == key_id for k in state["keys"]):
                raise AtRestError(f"key {key_name(key_id)} is not in the key ring {self.directory}")
            state["keys"] = [k for k in state["keys"] if k["id"] != key_id]
            self._write_state(state)
            (self.directory / f"key-{key_name(key_id)}.sealed").unlink()
        self.refresh()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """While no process writes with this key directory (a running gateway or forwarder holds
        writers.lock); refuses at once otherwise."""
        fd = os.open(self.directory / _WRITERS_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise AtRestError(
                    f"a gateway or forwarder is running with the key directory {self.directory}: stop it first"
                    " (systemctl stop edgeline-gateway), then run this again"
                ) from None
            yield
        finally:
            os.close(fd)

    # -- internals -------------------------------------------------------------------------
    def _create(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        with _flock(self.directory / _RING_LOCK, fcntl.LOCK_EX):
            if (self.directory / RING_FILE).exists():
                return
            if any(self.directory.glob("key-*.sealed")):
                raise AtRestError(
                    f"key directory {self.directory} holds sealed keys but no {RING_FILE}: restore {RING_FILE}"
                    " from a backup (a new key ring would leave the data under those keys unreadable)"
                )
            kid = self._new_key(set())
            self._write_state(
                {
                    "format": 1,
                    "sealer": self.sealer.name,
                    "active": kid,
                    "keys": [{"id": kid, "created": time.time(), "next_epoch": 0}],
                }
            )
            log.info("key ring created in %s (sealer %s), key %s", self.directory, self.sealer.name, key_name(kid))

    def _check(self) -> None:
        path = self.directory / RING_FILE
        if not path.exists():
            raise AtRestError(
                f"no key ring in {self.directory} ({RING_FILE} missing): it is made by the first"
                " `edgeline-gateway run` with [encryption] enabled = true"
            )
        mode = self.directory.stat().st_mode & 0o777
        if mode & 0o077:
            raise AtRestError(
                f"key directory {self.directory} has mode {mode:04o}, open to other users;"
                f" run `chmod 700 {self.directory}`"
            )

    def _new_key(self, taken: set[int]) -> int:
        kid = 0
        while kid == 0 or kid in taken or (self.directory / f"key-{key_name(kid)}.sealed").exists():
            kid = secrets.randbits(32)
        write_durably(self.directory / f"key-{key_name(kid)}.sealed", self.sealer.seal(secrets.token_bytes(32)))
        return kid

    def _unseal(self, key_id: int) -> bytes:
        path = self.directory / f"key-{key_name(key_id)}.sealed"
        blob = _read_private(path, f"key {key_name(key_id)}")
        try:
            key = self.sealer.unseal(blob)
        except AtRestError as exc:
            raise AtRestError(
                f"key {key_name(key_id)} ({path}) cannot be unsealed by the {self.sealer.name} sealer: {exc}"
            ) from exc
        if len(key) != 32:
            raise AtRestError(f"key {key_name(key_id)} ({path}) unsealed to {len(key)} bytes, expected 32")
        return key

    def _read_state(self) -> dict[str, Any]:
        path = self.directory / RING_FILE
        try:
            state = json.loads(path.read_bytes())
            keys = state["keys"]
            active = int(state["active"])
            sealer = str(state["sealer"])
            ok = isinstance(keys, list) and all(isinstance(k["id"], int) and int(k["next_epoch"]) >= 0 for k in keys)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise AtRestError(f"key ring {path} is unreadable ({exc}): restore it from a backup") from exc
        if not ok or not any(k["id"] == active for k in keys):
            raise AtRestError(f"key ring {path} is inconsistent (no active key): restore it from a backup")
        if sealer != self.sealer.name:
            raise AtRestError(
                f'key ring {self.directory} is sealed by the "{sealer}" sealer, but [encryption] sealer is'
                f' "{self.sealer.name}": set sealer = "{sealer}"'
            )
        return state  # type: ignore[no-any-return]

    def _write_state(self, state: dict[str, Any]) -> None:
        path = self.directory / RING_FILE
        try:
            write_durably(path, (json.dumps(state, indent=1) + "\n").encode())
        except OSError as exc:
            raise AtRestError(
                f"key ring: cannot write {path} ({exc.strerror}); is the disk full or read-only?"
            ) from exc


class Cipher:
    """One writer's records: encrypts under the active key with its own nonce sequence (see the
    module docstring), decrypts under any key of the ring.  Not thread-safe: one per writing thread.

    A key rotated by another process is taken up within :data:`REFRESH_S`.
    """

    def __init__(self, ring: KeyRing, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.ring = ring
        self._clock = clock
        self._key_id = 0
        self._aead: AESGCM | None = None
        self._prefix = b""
        self._counter = 0
        self._next_check = 0.0

    @property
    def key_id(self) -> int:
        """The key new records are written under (0 before the first)."""
        return self._key_id

    def encrypt(self, plaintext: bytes, aad: bytes) -> bytes:
        """Raises AtRestError when a new epoch cannot be taken (keyring.json not writable): no
        record is ever written under a nonce that is not on disk first."""
        now = self._clock()
        if now >= self._next_check:
            self._next_check = now + REFRESH_S
            try:
                self.ring.refresh()
            except AtRestError as exc:  # keeps writing under the key it has; said once a second at most
                log.error("key ring: cannot look for a rotated key: %s", exc)
        if self._aead is None or self.ring.active_id != self._key_id or self._counter > _MAX_COUNTER:
            self._key_id, epoch, self._aead = self.ring.take_epoch()
            self._prefix = epoch.to_bytes(4, "big")
            self._counter = 0
        nonce = self._prefix + self._counter.to_bytes(8, "big")
        self._counter += 1
        header = _HEADER.pack(VERSION, self._key_id, nonce)
        return header + self._aead.encrypt(nonce, plaintext, header + aad)

    def decrypt(self, blob: bytes, aad: bytes) -> bytes:
        return self.ring.decrypt(blob, aad)


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class EncryptionSettings:
    """``[encryption]`` of the gateway TOML when ``enabled = true`` (gateway/config.py reads it)."""

    key_dir: Path
    sealer: str = "file"
    tpm_tcti: str = "device:/dev/tpmrm0"


def make_sealer(settings: EncryptionSettings, *, create: bool = False) -> Sealer:
    if settings.sealer == "tpm":
        # tpm2-pytss is imported only when asked for (gateway/tpm.py)
        tpm = importlib.import_module("gateway.tpm")
        return cast(Sealer, tpm.TpmSealer(settings.tpm_tcti))
    # A new file sealer key only with a new key ring: beside an existing one it could unseal nothing.
    fresh = create and not (settings.key_dir / RING_FILE).exists()
    if fresh:
        settings.key_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    return FileSealer(settings.key_dir / FILE_SEALER_KEY, create=fresh)


def open_keyring(settings: EncryptionSettings, *, writer: bool = False, create: bool = False) -> KeyRing:
    """The key ring ``settings`` name; ``create`` makes it (and the file sealer's key) if missing."""
    if not create and not (settings.key_dir / RING_FILE).exists():
        raise AtRestError(
            f"encryption.key_dir: no key ring in {settings.key_dir}: it is made by the first"
            " `edgeline-gateway run` with [encryption] enabled = true"
        )
    return KeyRing.open(settings.key_dir, make_sealer(settings, create=create), create=create, writer=writer)
