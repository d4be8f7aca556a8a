"""Secrets stay in their own files: a scan of a whole working tree after a run.

A secret file is a private key (PEM or DER) or a password file, found by its name or, for a
PEM key, its content. Each must be mode 0600 (or
0400). Its secret, in any form a program might print it (raw bytes, the text of a password,
each base64 line of a PEM body, base64 or hex of DER), must appear in no other file and in no
captured output.
"""

from __future__ import annotations

import base64
import stat
from dataclasses import dataclass
from pathlib import Path

KEY_SUFFIXES = (".key", ".password", ".secret")
PEM_KEY = b"PRIVATE KEY-----"


@dataclass(frozen=True)
class Secret:
    path: Path
    forms: tuple[bytes, ...]


def _forms(data: bytes) -> tuple[bytes, ...]:
    if PEM_KEY in data:
        body = [line for line in data.splitlines() if line and not line.startswith(b"-----")]
        return tuple(line for line in body if len(line) >= 32)
    text = data.strip()
    if not text:
        return ()
    if b"\n" not in text and len(text) < 200 and text.isascii():
        return (text,)  # a password
    # DER: raw, or printed as PEM-style base64 lines (whole 64-character lines: the first 48
    # characters of a PKCS#8 key are the same for every key) or as hex
    b64 = base64.b64encode(data)
    lines = [b64[i : i + 64] for i in range(0, len(b64) - 63, 64)]
    return (data, *lines, data.hex().encode())


def find_secrets(root: Path) -> list[Secret]:
    """Every key and password file under ``root``: by name (*.key, *.password, *.secret), or
    a PEM private key by content."""
    found = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        data = path.read_bytes()
        if path.name.endswith(KEY_SUFFIXES) or PEM_KEY in data:
            forms = _forms(data)
            if forms:
                found.append(Secret(path, forms))
    return found


def check_tree(root: Path, outputs: str = "") -> list[Secret]:
    """Assert every secret file under ``root`` is private, and no other file under ``root`` and
    no text of ``outputs`` holds any of the secrets. Returns the secrets found."""
    secrets = find_secrets(root)
    problems = []
    for secret in secrets:
        mode = stat.S_IMODE(secret.path.stat().st_mode)
        if mode & 0o077:
            problems.append(f"{secret.path}: mode {mode:04o}, readable by others")
    own = {s.path for s in secrets}
    text = outputs.encode()
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.is_symlink() or path in own:
            continue
        data = path.read_bytes()
        for secret in secrets:
            if any(form in data for form in secret.forms):
                problems.append(f"{path} holds the secret of {secret.path}")
    for secret in secrets:
        if any(form in text for form in secret.forms):
            problems.append(f"the output holds the secret of {secret.path}")
    assert not problems, "\n".join(problems)
    return secrets
