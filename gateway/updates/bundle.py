"""Release bundles: one uncompressed tar holding ``bundle.json`` (the metadata, canonical JSON),
``bundle.sig`` (64-byte Ed25519 signature over the exact bytes of bundle.json) and ``payload/<path>``
for each file the metadata lists, nothing else.

``verify_bundle`` checks a bundle file in this order and raises :class:`BundleError` with the first
failed check's ``reason``: ``too_large`` (before anything is read), ``bad_format`` (not a tar, a
member that is not a regular file, an extra, missing or duplicate member, a path escape, a
metadata field out of its rule), ``unknown_key``, ``bad_signature``, ``wrong_target``, ``expired``,
``replayed`` (counter not above the last accepted one of its kind and name) and ``bad_hash``.
Every member's size is checked against the metadata before it is read; nothing is extracted by
``tarfile`` itself: ``extract`` copies each payload member's bytes to a fresh directory,
re-checking every hash (the file may have changed since it was verified).

The release side (tools/release) builds bundles with :func:`canonical_json` and :func:`key_id`,
so both sides share one rule for the signed bytes and for a key's id.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tarfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.durable import write_json_durably
from gateway.errors import ConfigError, GatewayError

FORMAT = "edgeline-bundle"
FORMAT_VERSION = 1
METADATA = "bundle.json"
SIGNATURE = "bundle.sig"
PAYLOAD = "payload/"
KINDS = ("model", "config", "firmware")
ARCHES = ("xtensawin", "armv6m", "native", "circuitpython")  # circuitpython: sources
REASONS = ("too_large", "bad_format", "unknown_key", "bad_signature", "wrong_target", "expired", "replayed", "bad_hash")
MAX_METADATA_BYTES = 1 << 20
MAX_FILES = 4096
SIGNATURE_BYTES = 64

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,31}")
_KEY_ID = re.compile(r"[0-9a-f]{16}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_PATH_PART = re.compile(r"[A-Za-z0-9_.+-]{1,128}")


class BundleError(GatewayError):
    """A bundle refused: ``reason`` is one of :data:`REASONS`, the message says what to do."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class BundleFile:
    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Bundle:
    """The parsed, signature-checked metadata of a bundle."""

    kind: str
    name: str
    version: str
    counter: int
    created: float
    expires: float
    sites: tuple[str, ...]
    gateways: tuple[str, ...]
    key_id: str
    files: tuple[BundleFile, ...]
    entry: str
    firmware: dict[str, Any] | None
    bundle_id: str  # sha256 hex of the whole bundle file

    def describe(self) -> dict[str, Any]:
        """What a status page or a record shows of it (no key material)."""
        return {
            "kind": self.kind,
            "name": self.name,
            "version": self.version,
            "counter": self.counter,
            "bundle_id": self.bundle_id,
            "key_id": self.key_id,
        }


def canonical_json(meta: dict[str, Any]) -> bytes:
    """The one encoding of metadata that is signed."""
    return json.dumps(meta, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def key_id(public_key: Ed25519PublicKey) -> str:
    """First 8 bytes of sha256 over the raw 32-byte public key, hex."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def valid_payload_path(path: str) -> bool:
    """Relative, '/'-separated, no empty, '.' or '..' part, only plain characters."""
    if not path or len(path) > 255 or path.startswith("/"):
        return False
    parts = path.split("/")
    return all(_PATH_PART.fullmatch(p) and p not in (".", "..") for p in parts)


@dataclass(frozen=True)
class TrustedKeys:
    """Release public keys by key id."""

    keys: dict[str, Ed25519PublicKey]

    def get(self, kid: str) -> Ed25519PublicKey | None:
        return self.keys.get(kid)

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(sorted(self.keys))


def load_public_key(path: Path) -> Ed25519PublicKey:
    """An Ed25519 public key in PEM (what ``edgeline-release keygen`` writes as NAME.pub)."""
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except OSError as exc:
        raise ConfigError(f"updates.trusted_keys: cannot read {path} ({exc.strerror}); fix the path") from None
    except ValueError:
        raise ConfigError(
            f"updates.trusted_keys: {path} is not a PEM public key; name the .pub file of edgeline-release keygen"
        ) from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"updates.trusted_keys: {path} is not an Ed25519 key; make one with edgeline-release keygen")
    return key


def load_trusted_keys(paths: Iterable[Path]) -> TrustedKeys:
    keys: dict[str, Ed25519PublicKey] = {}
    for path in paths:
        key = load_public_key(path)
        keys[key_id(key)] = key
    return TrustedKeys(keys)


class Counters:
    """The last accepted anti-replay counter per (kind, name), in ``<state_dir>/counters.json``
    (written to a temporary file, fsynced, then os.replace: a power cut leaves the old or the new)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._values: dict[str, int] = {}
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        except OSError as exc:
            raise GatewayError(
                f"update counters {self.path}: cannot read ({exc.strerror}); fix its permissions"
            ) from None
        try:
            doc = json.loads(raw)
            if not isinstance(doc, dict) or not all(isinstance(v, int) for v in doc.values()):
                raise ValueError("expected an object of integers")
        except ValueError as exc:
            raise GatewayError(
                f"update counters {self.path}: unreadable ({exc}); restore it from a backup "
                "(deleting it lets an old bundle be installed again)"
            ) from None
        self._values = {str(k): int(v) for k, v in doc.items()}

    def last(self, kind: str, name: str) -> int:
        with self._lock:
            return self._values.get(f"{kind}/{name}", 0)

    def accept(self, kind: str, name: str, counter: int) -> None:
        with self._lock:
            if counter <= self._values.get(f"{kind}/{name}", 0):
                raise BundleError("replayed", f"{kind} {name}: counter {counter} is not above the last accepted")
            values = {**self._values, f"{kind}/{name}": counter}
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_json_durably(self.path, values)
            self._values = values


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def peek(path: Path) -> tuple[str, str] | None:
    """(kind, name) as an unverified bundle.json states them, to label a refusal; None if unreadable."""
    try:
        with _open_tar(Path(path)) as (tar, members):
            meta = json.loads(_read_member(tar, members, METADATA, MAX_METADATA_BYTES, Path(path).name))
    except (BundleError, ValueError, OSError):
        return None
    if not isinstance(meta, dict):
        return None
    kind, name = meta.get("kind"), meta.get("name")
    if kind in KINDS and isinstance(name, str) and _NAME.fullmatch(name):
        return str(kind), name
    return None


# --------------------------------------------------------------------------- verification


def verify_bundle(
    path: Path,
    *,
    keys: TrustedKeys,
    site: str,
    gateway_id: str,
    counters: Counters,
    now: float,
    max_bytes: int,
) -> Bundle:
    """Check everything about the bundle at ``path`` (reads it, writes nothing)."""
    path = Path(path)
    name = path.name
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise BundleError("bad_format", f"{name}: cannot read ({exc.strerror})") from None
    if size > max_bytes:
        raise BundleError(
            "too_large",
            f"{name}: {size} bytes is above updates.max_bundle_bytes = {max_bytes}; raise it or ship a smaller bundle",
        )
    bundle_id = file_sha256(path)
    with _open_tar(path) as (tar, members):
        meta_bytes = _read_member(tar, members, METADATA, MAX_METADATA_BYTES, name)
        signature = _read_member(tar, members, SIGNATURE, SIGNATURE_BYTES, name)
        meta = _check_signature(meta_bytes, signature, keys, name)
        bundle = _parse_metadata(meta, bundle_id, name)
        _check_applies(bundle, site=site, gateway_id=gateway_id, counters=counters, now=now, name=name)
        _check_members(bundle, members, name)
        for entry in bundle.files:
            digest = _hash_member(tar, members[PAYLOAD + entry.path], name)
            if digest != entry.sha256:
                raise BundleError(
                    "bad_hash",
                    f"{name}: payload {entry.path} does not match its sha256 in bundle.json; "
                    "the file was altered or damaged: pack and publish the bundle again",
                )
    return bundle


def extract(path: Path, bundle: Bundle, dest: Path) -> None:
    """Copy the payload of a verified bundle into ``dest`` (made fresh, 0700), re-checking every
    size and hash; on any failure ``dest`` is removed."""
    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True, mode=0o700)
    try:
        with _open_tar(Path(path)) as (tar, members):
            _check_members(bundle, members, Path(path).name)
            for entry in bundle.files:
                target = dest / entry.path
                target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                digest = hashlib.sha256()
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as out:
                    for block in _member_blocks(tar, members[PAYLOAD + entry.path], Path(path).name):
                        digest.update(block)
                        out.write(block)
                    out.flush()
                    os.fsync(out.fileno())
                if digest.hexdigest() != entry.sha256:
                    raise BundleError(
                        "bad_hash", f"{path}: payload {entry.path} changed after it was verified; deliver it again"
                    )
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise


@contextlib.contextmanager
def _open_tar(path: Path) -> Iterator[tuple[tarfile.TarFile, dict[str, tarfile.TarInfo]]]:
    """The tar's members by name; only regular files, each name once."""
    name = path.name
    try:
        tar = tarfile.open(path, mode="r:")  # noqa: SIM115 (closed below, after the caller's block)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BundleError("bad_format", f"{name}: not a bundle (an uncompressed tar) ({exc})") from None
    try:
        try:
            listed = tar.getmembers()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise BundleError("bad_format", f"{name}: truncated or damaged ({exc}); deliver it again") from None
        members: dict[str, tarfile.TarInfo] = {}
        for member in listed:
            if not member.isreg():
                raise BundleError("bad_format", f"{name}: member {member.name!r} is not a regular file")
            if member.name in members:
                raise BundleError("bad_format", f"{name}: member {member.name!r} appears twice")
            members[member.name] = member
        yield tar, members
    except (tarfile.TarError, EOFError) as exc:  # an OSError (disk full while extracting) stays one
        raise BundleError("bad_format", f"{name}: truncated or damaged ({exc}); deliver it again") from None
    finally:
        tar.close()


def _member_blocks(tar: tarfile.TarFile, member: tarfile.TarInfo, name: str) -> Iterator[bytes]:
    stream: IO[bytes] | None = tar.extractfile(member)
    if stream is None:
        raise BundleError("bad_format", f"{name}: member {member.name!r} has no data")
    left = member.size
    while left > 0:
        block = stream.read(min(left, 1 << 16))
        if not block:
            raise BundleError("bad_format", f"{name}: member {member.name!r} is truncated; deliver it again")
        left -= len(block)
        yield block


def _read_member(
    tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo], member: str, limit: int, name: str
) -> bytes:
    info = members.get(member)
    if info is None:
        raise BundleError("bad_format", f"{name}: no {member}; this is not a release bundle (edgeline-release pack)")
    if info.size > limit:
        raise BundleError("bad_format", f"{name}: {member} is {info.size} bytes, more than {limit}")
    return b"".join(_member_blocks(tar, info, name))


def _hash_member(tar: tarfile.TarFile, member: tarfile.TarInfo, name: str) -> str:
    digest = hashlib.sha256()
    for block in _member_blocks(tar, member, name):
        digest.update(block)
    return digest.hexdigest()


def _check_signature(meta_bytes: bytes, signature: bytes, keys: TrustedKeys, name: str) -> dict[str, Any]:
    if len(signature) != SIGNATURE_BYTES:
        raise BundleError("bad_format", f"{name}: bundle.sig is {len(signature)} bytes, expected {SIGNATURE_BYTES}")
    try:
        meta = json.loads(meta_bytes.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        meta = None
    kid = meta.get("key_id") if isinstance(meta, dict) else None
    if not isinstance(meta, dict) or not isinstance(kid, str):
        # Unparseable: a damaged or altered signed file is a bad signature unless a trusted key signed it.
        for candidate in keys.keys.values():
            with contextlib.suppress(InvalidSignature):
                candidate.verify(signature, meta_bytes)
                raise BundleError("bad_format", f"{name}: bundle.json is signed but not a JSON object with a key_id")
        raise BundleError(
            "bad_signature",
            f"{name}: bundle.json is damaged or altered (no trusted key signed it); deliver the bundle again",
        )
    key = keys.get(kid)
    if key is None:
        raise BundleError(
            "unknown_key",
            f"{name}: signed by key {kid}, not among updates.trusted_keys ({', '.join(keys.ids) or 'none'}); "
            "add its .pub file there (through a config bundle signed by a trusted key) or sign with a trusted key",
        )
    try:
        key.verify(signature, meta_bytes)
    except InvalidSignature:
        raise BundleError(
            "bad_signature",
            f"{name}: the signature of key {kid} does not match bundle.json (altered or damaged); "
            "pack and sign the bundle again",
        ) from None
    return meta


def _bad(name: str, field: str, rule: str, value: Any) -> BundleError:
    return BundleError("bad_format", f"{name}: bundle.json {field}: expected {rule}, got {value!r}")


def _number(meta: dict[str, Any], field: str, name: str) -> float:
    value = meta.get(field)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(name, field, "unix seconds", value)
    return float(value)


def _str_list(value: Any, field: str, name: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _bad(name, field, "a list of non-empty strings", value)
    return tuple(value)


def _parse_metadata(meta: dict[str, Any], bundle_id: str, name: str) -> Bundle:  # noqa: C901, PLR0912
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise _bad(
            name, "format", f"{FORMAT!r} version {FORMAT_VERSION}", (meta.get("format"), meta.get("format_version"))
        )
    kind = meta.get("kind")
    if kind not in KINDS:
        raise _bad(name, "kind", " | ".join(KINDS), kind)
    bundle_name = meta.get("name")
    if not isinstance(bundle_name, str) or not _NAME.fullmatch(bundle_name):
        raise _bad(name, "name", "1..64 of A-Z a-z 0-9 . _ -", bundle_name)
    if kind == "config" and bundle_name != "gateway":
        raise _bad(name, "name", '"gateway" for a config bundle', bundle_name)
    version = meta.get("version")
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        raise _bad(name, "version", "1..32 of A-Z a-z 0-9 . _ + -", version)
    counter = meta.get("counter")
    if isinstance(counter, bool) or not isinstance(counter, int) or counter < 1:
        raise _bad(name, "counter", "an integer >= 1", counter)
    created, expires = _number(meta, "created", name), _number(meta, "expires", name)
    target = meta.get("target")
    if not isinstance(target, dict) or set(target) != {"sites", "gateways"}:
        raise _bad(name, "target", '{"sites": [...], "gateways": [...]}', target)
    kid = meta.get("key_id")
    if not isinstance(kid, str) or not _KEY_ID.fullmatch(kid):
        raise _bad(name, "key_id", "16 hex digits", kid)
    raw_files = meta.get("files")
    if not isinstance(raw_files, list) or len(raw_files) > MAX_FILES:
        raise _bad(name, "files", f"a list of at most {MAX_FILES} files", type(raw_files).__name__)
    files: list[BundleFile] = []
    for item in raw_files:
        if not isinstance(item, dict) or set(item) != {"path", "size", "sha256"}:
            raise _bad(name, "files[]", '{"path", "size", "sha256"}', item)
        fpath, fsize, fhash = item["path"], item["size"], item["sha256"]
        if not isinstance(fpath, str) or not valid_payload_path(fpath):
            raise BundleError(
                "bad_format",
                f"{name}: bundle.json files: path {fpath!r} is not a plain relative path (no '..', no '/' first)",
            )
        if isinstance(fsize, bool) or not isinstance(fsize, int) or fsize < 0:
            raise _bad(name, f"files[{fpath}].size", "an integer >= 0", fsize)
        if not isinstance(fhash, str) or not _SHA256.fullmatch(fhash):
            raise _bad(name, f"files[{fpath}].sha256", "64 lower-case hex digits", fhash)
        files.append(BundleFile(fpath, fsize, fhash))
    paths = [f.path for f in files]
    if paths != sorted(set(paths)):
        raise _bad(name, "files", "paths sorted and each once", paths)
    entry = meta.get("entry")
    if not isinstance(entry, str) or (entry and entry not in paths) or (not entry and kind != "firmware"):
        raise _bad(name, "entry", "one of the files' paths", entry)
    if kind == "config" and entry != "gateway.toml":
        raise _bad(name, "entry", '"gateway.toml" for a config bundle', entry)
    firmware = meta.get("firmware")
    if kind == "firmware":
        firmware = _check_firmware(firmware, name)
    elif firmware is not None:
        raise _bad(name, "firmware", "absent for a model or config bundle", firmware)
    return Bundle(
        kind=str(kind),
        name=bundle_name,
        version=version,
        counter=counter,
        created=created,
        expires=expires,
        sites=_str_list(target["sites"], "target.sites", name),
        gateways=_str_list(target["gateways"], "target.gateways", name),
        key_id=kid,
        files=tuple(files),
        entry=entry,
        firmware=firmware,
        bundle_id=bundle_id,
    )


def _check_firmware(firmware: Any, name: str) -> dict[str, Any]:
    if not isinstance(firmware, dict):
        raise _bad(name, "firmware", "an object (arch, fw_version, rollout)", firmware)
    if firmware.get("arch") not in ARCHES:
        raise _bad(name, "firmware.arch", " | ".join(ARCHES), firmware.get("arch"))
    fw_version = firmware.get("fw_version")
    if not isinstance(fw_version, str) or not fw_version or len(fw_version.encode()) > 32:
        raise _bad(name, "firmware.fw_version", "1..32 bytes of text", fw_version)
    rollout = firmware.get("rollout")
    if not isinstance(rollout, dict):
        raise _bad(name, "firmware.rollout", "an object (devices, canary, wave, max_failure_rate)", rollout)
    _str_list(rollout.get("devices"), "firmware.rollout.devices", name)
    _str_list(rollout.get("canary"), "firmware.rollout.canary", name)
    wave = rollout.get("wave")
    if isinstance(wave, bool) or not isinstance(wave, int) or wave < 1:
        raise _bad(name, "firmware.rollout.wave", "an integer >= 1", wave)
    rate = rollout.get("max_failure_rate")
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0:
        raise _bad(name, "firmware.rollout.max_failure_rate", "a number in 0..1", rate)
    return firmware


def _check_applies(bundle: Bundle, *, site: str, gateway_id: str, counters: Counters, now: float, name: str) -> None:
    if bundle.sites and site not in bundle.sites:
        raise BundleError(
            "wrong_target",
            f"{name}: for sites {', '.join(bundle.sites)}, this is site {site!r}; pack it with --site {site}",
        )
    if bundle.gateways and gateway_id not in bundle.gateways:
        raise BundleError(
            "wrong_target",
            f"{name}: for gateways {', '.join(bundle.gateways)}, this is {gateway_id!r}; pack it with --gateway {gateway_id}",
        )
    if now >= bundle.expires:
        raise BundleError(
            "expired",
            f"{name}: expired at {bundle.expires:.0f} (now {now:.0f}); pack it again with a later --expires-days",
        )
    last = counters.last(bundle.kind, bundle.name)
    if bundle.counter <= last:
        raise BundleError(
            "replayed",
            f"{name}: {bundle.kind} {bundle.name} counter {bundle.counter} is not above the last accepted ({last}): "
            f"an old bundle sent again; pack the release with --counter {last + 1} or more",
        )


def _check_members(bundle: Bundle, members: dict[str, tarfile.TarInfo], name: str) -> None:
    expected = {PAYLOAD + f.path: f for f in bundle.files}
    for member, info in members.items():
        if member in (METADATA, SIGNATURE):
            continue
        entry = expected.get(member)
        if entry is None:
            raise BundleError(
                "bad_format", f"{name}: member {member!r} is not listed in bundle.json files (extra or path escape)"
            )
        if info.size != entry.size:
            raise BundleError(
                "bad_hash", f"{name}: payload {entry.path} is {info.size} bytes, bundle.json says {entry.size}"
            )
    missing = sorted(set(expected) - set(members))
    if missing:
        raise BundleError("bad_format", f"{name}: payload missing: {', '.join(missing)}; pack the bundle again")


__all__ = [
    "KINDS",
    "REASONS",
    "Bundle",
    "BundleError",
    "BundleFile",
    "Counters",
    "TrustedKeys",
    "canonical_json",
    "extract",
    "key_id",
    "load_trusted_keys",
    "verify_bundle",
]
