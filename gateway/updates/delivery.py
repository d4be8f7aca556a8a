"""Delivery of bundles from the cloud over the gateway's cloud MQTT link: retained, chunked,
resumable.

Topics, under ``<forward.topic_prefix>/<gateway_id>/bundles/`` (all retained; published with
QoS 1, subscribed with QoS 0: a message the link drops comes again, retained, on the reconnect)::

    <kind>/<name>/meta              {"bundle_id", "size", "chunk_size", "chunks", "chunk_sha256": [...]}
    <kind>/<name>/<bundle_id>/<i>   the raw bytes of chunk i (chunk_size bytes, the last one shorter)

The publisher (``edgeline-release publish``) sends the chunks first and the meta last, then clears
the chunks of the bundle it replaced. The gateway subscribes to the meta topics, then to the topic
of each chunk it lacks, a window at a time: a chunk it holds is never fetched again, also after a
restart or a lost link. Chunks are kept in
``<state_dir>/incoming/<bundle_id>/<i>`` (written to a temporary name, fsynced, renamed), each
checked against its sha256 from the meta; the assembled file must hash to ``bundle_id``. The meta
is not signed: it only says where the bytes are; the bundle's own signature decides (bundle.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.durable import write_durably
from gateway.updates.bundle import KINDS, BundleError

MAX_CHUNK = 1 << 20
DEFAULT_CHUNK = 64 * 1024
_HEX64 = re.compile(r"[0-9a-f]{64}")
_LEVEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def bundles_root(prefix: str, gateway_id: str) -> str:
    return f"{prefix}/{gateway_id}/bundles"


def meta_filter(prefix: str, gateway_id: str) -> str:
    return f"{bundles_root(prefix, gateway_id)}/+/+/meta"


def meta_topic(prefix: str, gateway_id: str, kind: str, name: str) -> str:
    return f"{bundles_root(prefix, gateway_id)}/{kind}/{name}/meta"


def chunk_topic(prefix: str, gateway_id: str, meta: Meta, index: int) -> str:
    return f"{bundles_root(prefix, gateway_id)}/{meta.kind}/{meta.name}/{meta.bundle_id}/{index}"


@dataclass(frozen=True)
class Meta:
    """Where a bundle's bytes are: what the ``meta`` topic says."""

    kind: str
    name: str
    bundle_id: str
    size: int
    chunk_size: int
    chunk_sha256: tuple[str, ...]

    @property
    def chunks(self) -> int:
        return len(self.chunk_sha256)

    def chunk_length(self, index: int) -> int:
        return min(self.chunk_size, self.size - index * self.chunk_size)

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "kind": self.kind,
                "name": self.name,
                "bundle_id": self.bundle_id,
                "size": self.size,
                "chunk_size": self.chunk_size,
                "chunks": self.chunks,
                "chunk_sha256": list(self.chunk_sha256),
            },
            separators=(",", ":"),
        ).encode()


def split(data: bytes, kind: str, name: str, chunk_size: int = DEFAULT_CHUNK) -> tuple[Meta, list[bytes]]:
    """The publisher's side: a bundle file's bytes as a meta and its chunks."""
    chunks = [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)] or [b""]
    meta = Meta(
        kind=kind,
        name=name,
        bundle_id=hashlib.sha256(data).hexdigest(),
        size=len(data),
        chunk_size=chunk_size,
        chunk_sha256=tuple(hashlib.sha256(c).hexdigest() for c in chunks),
    )
    return meta, chunks


def parse_meta(kind: str, name: str, payload: bytes, max_bytes: int) -> Meta:
    """The meta of the topic ``<kind>/<name>/meta``; BundleError (bad_format, too_large) when it is
    not one the gateway can fetch."""
    where = f"bundle meta {kind}/{name}"
    if kind not in KINDS or not _LEVEL.fullmatch(name):
        raise BundleError("bad_format", f"{where}: unknown kind or bad name; publish with edgeline-release publish")
    try:
        doc = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise BundleError("bad_format", f"{where}: not JSON; publish with edgeline-release publish") from None
    if not isinstance(doc, dict):
        raise BundleError("bad_format", f"{where}: not a JSON object")
    bundle_id, size, chunk_size, hashes = (doc.get(k) for k in ("bundle_id", "size", "chunk_size", "chunk_sha256"))
    if not isinstance(bundle_id, str) or not _HEX64.fullmatch(bundle_id):
        raise BundleError("bad_format", f"{where}: bundle_id is not a sha256 hex digest")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise BundleError("bad_format", f"{where}: size is not a byte count")
    if size > max_bytes:
        raise BundleError(
            "too_large",
            f"{where}: {size} bytes is above updates.max_bundle_bytes = {max_bytes}; raise it or ship a smaller bundle",
        )
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or not 1 <= chunk_size <= MAX_CHUNK:
        raise BundleError("bad_format", f"{where}: chunk_size is not 1..{MAX_CHUNK}")
    expected = max(1, -(-size // chunk_size))
    if (
        not isinstance(hashes, list)
        or len(hashes) != expected
        or doc.get("chunks") != expected
        or not all(isinstance(h, str) and _HEX64.fullmatch(h) for h in hashes)
    ):
        raise BundleError("bad_format", f"{where}: chunks / chunk_sha256 do not match size and chunk_size")
    return Meta(kind, name, bundle_id, size, chunk_size, tuple(hashes))


class ChunkStore:
    """The chunks held of one bundle, in ``<incoming>/<bundle_id>/`` (and its meta.json there)."""

    def __init__(self, incoming: Path, meta: Meta) -> None:
        self.meta = meta
        self.directory = Path(incoming) / meta.bundle_id
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        meta_path = self.directory / "meta.json"
        if not meta_path.exists():
            write_durably(meta_path, meta.to_json())
        self.have: set[int] = set()
        for entry in self.directory.iterdir():  # what an earlier run (or connection) fetched
            if entry.name.isdigit() and int(entry.name) < meta.chunks:
                self.have.add(int(entry.name))
            elif entry.name.endswith(".tmp"):
                entry.unlink()

    def missing(self) -> list[int]:
        return [i for i in range(self.meta.chunks) if i not in self.have]

    @property
    def complete(self) -> bool:
        return len(self.have) == self.meta.chunks

    def put(self, index: int, data: bytes) -> bool:
        """Keep chunk ``index``; False if held already. BundleError (bad_hash) if it is not the
        chunk the meta describes (damaged in transit, or the retained topic is stale)."""
        if not 0 <= index < self.meta.chunks:
            raise BundleError("bad_format", f"bundle {self.meta.bundle_id[:12]}: no chunk {index}")
        if index in self.have:
            return False
        if (
            len(data) != self.meta.chunk_length(index)
            or hashlib.sha256(data).hexdigest() != self.meta.chunk_sha256[index]
        ):
            raise BundleError(
                "bad_hash",
                f"{self.meta.kind} {self.meta.name}: chunk {index} of bundle {self.meta.bundle_id[:12]} is damaged "
                "(its hash differs from the meta); publish the bundle again (edgeline-release publish)",
            )
        write_durably(self.directory / str(index), data)
        self.have.add(index)
        return True

    def assemble(self, out: Path) -> Path:
        """The bundle file from its chunks; BundleError (bad_hash) unless it hashes to bundle_id."""
        digest = hashlib.sha256()
        tmp = out.with_name(out.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            for i in range(self.meta.chunks):
                data = (self.directory / str(i)).read_bytes()
                digest.update(data)
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if digest.hexdigest() != self.meta.bundle_id:
            tmp.unlink()
            raise BundleError(
                "bad_hash",
                f"{self.meta.kind} {self.meta.name}: the chunks of bundle {self.meta.bundle_id[:12]} do not hash "
                "to its id; publish the bundle again",
            )
        os.replace(tmp, out)
        return out

    def discard(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def held_transfers(incoming: Path) -> list[Meta]:
    """Transfers an earlier run left unfinished (their meta.json), to resume at start."""
    found: list[Meta] = []
    if not incoming.is_dir():
        return found
    for entry in sorted(incoming.iterdir()):
        meta_path = entry / "meta.json"
        try:
            doc: dict[str, Any] = json.loads(meta_path.read_bytes())
            found.append(parse_meta(str(doc["kind"]), str(doc["name"]), meta_path.read_bytes(), 1 << 62))
        except (OSError, ValueError, KeyError, TypeError, BundleError):
            if entry.is_dir():  # a transfer without its meta cannot be resumed: fetched again
                shutil.rmtree(entry, ignore_errors=True)
    return found
