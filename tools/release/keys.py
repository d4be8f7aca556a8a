"""Release signing keys: ``NAME.key`` (PEM PKCS#8 Ed25519 private key, created 0600) and ``NAME.pub``
(PEM public key, what the gateway's ``[updates] trusted_keys`` lists)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.updates.bundle import key_id
from tools.release.errors import ReleaseError


def keygen(out: Path) -> tuple[Path, Path, str]:
    """Make ``<out>.key`` and ``<out>.pub``; returns both paths and the key id. Never overwrites."""
    out = Path(out)
    private_path, public_path = out.with_name(out.name + ".key"), out.with_name(out.name + ".pub")
    for path in (private_path, public_path):
        if path.exists():
            raise ReleaseError(f"{path} exists; choose another --out NAME (a release key is never overwritten)")
    if not out.parent.exists():
        out.parent.mkdir(parents=True, mode=0o700)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public = key.public_key()
    public_path.write_bytes(
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private_path, public_path, key_id(public)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """The signing key; refused when others may read it."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as exc:
        raise ReleaseError(f"--key {path}: cannot read ({exc.strerror}); name the .key file of keygen") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ReleaseError(f"--key {path}: readable by others (mode {stat.S_IMODE(mode):o}); run chmod 600 {path}")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise ReleaseError(f"--key {path}: not an unencrypted PEM private key; name the .key file of keygen") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ReleaseError(f"--key {path}: not an Ed25519 key; make one with edgeline-release keygen")
    return key
