"""Packing a release bundle (format: gateway/updates/bundle.py): the payload files, the canonical
metadata, its Ed25519 signature, one deterministic uncompressed tar."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.updates.bundle import (
    FORMAT,
    FORMAT_VERSION,
    METADATA,
    PAYLOAD,
    SIGNATURE,
    canonical_json,
    key_id,
    valid_payload_path,
)
from tools.release.errors import ReleaseError

DAY = 86400.0
#: files of a firmware build that stay on the board's root and are never sent over the air:
#: the entry points (MicroPython's main.py, CircuitPython's code.py, boot.py) and the A/B
#: loader's logic they share (firmware/otaslots.py: .mpy in a MicroPython build)
LOADER_FILES = frozenset({"main.py", "boot.py", "code.py", "otaslots.py", "otaslots.mpy"})


def metadata(
    *,
    kind: str,
    name: str,
    version: str,
    counter: int,
    files: Mapping[str, bytes],
    entry: str,
    key: Ed25519PrivateKey,
    sites: Sequence[str] = (),
    gateways: Sequence[str] = (),
    created: float | None = None,
    expires: float | None = None,
    firmware: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The metadata of a bundle of ``files`` (path -> content)."""
    for path in files:
        if not valid_payload_path(path):
            raise ReleaseError(
                f"payload path {path!r}: must be relative, '/'-separated, without '..' or odd characters"
            )
    created = time.time() if created is None else created
    meta: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "name": name,
        "version": version,
        "counter": counter,
        "created": int(created),
        "expires": int(created + 30 * DAY) if expires is None else int(expires),
        "target": {"sites": list(sites), "gateways": list(gateways)},
        "key_id": key_id(key.public_key()),
        "files": [
            {"path": p, "size": len(files[p]), "sha256": hashlib.sha256(files[p]).hexdigest()} for p in sorted(files)
        ],
        "entry": entry,
    }
    if firmware is not None:
        meta["firmware"] = firmware
    return meta


def write_tar(out: Path, meta_bytes: bytes, signature: bytes, files: Mapping[str, bytes], mtime: float) -> Path:
    """The bundle file: bundle.json, bundle.sig, then the payload sorted by path (same input, same bytes)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        members = [(METADATA, meta_bytes), (SIGNATURE, signature)]
        members += [(PAYLOAD + p, files[p]) for p in sorted(files)]
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = int(mtime)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(buf.getvalue())
    os.replace(tmp, out)
    return out


def build_bundle(out: Path, *, key: Ed25519PrivateKey, files: Mapping[str, bytes], **fields: Any) -> Path:
    """Sign and write a bundle; ``fields`` are those of :func:`metadata`. ``out`` may be a directory
    (then the file is ``<name>-<version>.bundle`` in it)."""
    meta = metadata(key=key, files=files, **fields)
    out = Path(out)
    if out.is_dir():
        out = out / f"{meta['name']}-{meta['version']}.bundle"
    meta_bytes = canonical_json(meta)
    return write_tar(out, meta_bytes, key.sign(meta_bytes), files, meta["created"])


def model_files(manifest: Path) -> tuple[dict[str, bytes], str]:
    """A model's manifest and the model file it names (checked by the gateway's own loader)."""
    from gateway.manifest import ModelError, load_manifest

    try:
        loaded = load_manifest(manifest)
    except ModelError as exc:
        raise ReleaseError(f"--manifest {manifest}: {exc}") from None
    files = {manifest.name: manifest.read_bytes(), loaded.model_file: loaded.model_path.read_bytes()}
    return files, manifest.name


def config_files(config: Path, public_keys: Sequence[Path] = ()) -> tuple[dict[str, bytes], str]:
    """gateway.toml, and release public keys it may name (key rotation, docs/updates.md): the
    gateway writes each ``NAME.pub`` beside its gateway.toml before it checks the new file."""
    try:
        files = {"gateway.toml": Path(config).read_bytes()}
    except OSError as exc:
        raise ReleaseError(f"--config {config}: cannot read ({exc.strerror})") from None
    for pub in public_keys:
        if not pub.name.endswith(".pub") or "/" in pub.name or pub.name == ".pub":
            raise ReleaseError(f"--public-key {pub}: expected a NAME.pub file of edgeline-release keygen")
        try:
            data = pub.read_bytes()
        except OSError as exc:
            raise ReleaseError(f"--public-key {pub}: cannot read ({exc.strerror})") from None
        if b"PRIVATE KEY" in data:
            raise ReleaseError(f"--public-key {pub}: this is a private key; give its .pub file")
        files[pub.name] = data
    return files, "gateway.toml"


def firmware_files(build_dir: Path, arch: str | None = None) -> tuple[dict[str, bytes], str]:
    """Every file of the build manifest except the loader files that stay on the board root;
    ``arch``: the build must be of that arch."""
    from tools.flash.build import BuildManifest
    from tools.flash.errors import FlashError

    try:
        manifest = BuildManifest.load(Path(build_dir))
    except FlashError as exc:
        raise ReleaseError(f"--build {build_dir}: {exc}") from None
    if arch is not None and manifest.arch != arch:
        raise ReleaseError(
            f"--build {build_dir} is a build for {manifest.arch}, not --arch {arch}: give the build of"
            f" {arch} (edgeline-flash build --arch {arch})"
        )
    files: dict[str, bytes] = {}
    for entry in manifest.files:
        if entry.path in LOADER_FILES:
            continue
        data = (Path(build_dir) / entry.path).read_bytes()
        if hashlib.sha256(data).hexdigest() != entry.sha256:
            raise ReleaseError(f"--build {build_dir}: {entry.path} differs from the build manifest; build again")
        files[entry.path] = data
    return files, ""


def firmware_metadata(
    *, arch: str, fw_version: str, devices: Sequence[str], canary: Sequence[str], wave: int, max_failure_rate: float
) -> dict[str, Any]:
    return {
        "arch": arch,
        "fw_version": fw_version,
        "rollout": {
            "devices": list(devices),
            "canary": list(canary),
            "wave": wave,
            "max_failure_rate": max_failure_rate,
        },
    }


def describe(meta: dict[str, Any]) -> str:
    return json.dumps(meta, indent=1, sort_keys=True)
