"""Files that survive a power cut: written whole under a temporary name, fsynced, renamed over
the old one, and the directory fsynced, so after a crash the old file or the new one is there,
never a mix. The one way the gateway's small state files are written (key ring, update state,
model store, rollout, configuration on trial)."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any


def fsync_dir(path: Path) -> None:
    """Make a rename (or a new file) in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Replace ``path`` by a file holding ``data``, created with ``mode`` (0600 unless said
    otherwise: never loosened after the write), synced to disk before this returns."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()  # a leftover keeps its own mode under O_TRUNC: start from a new file
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_json_durably(path: Path, data: Any) -> None:
    """``write_durably`` of ``data`` as indented JSON (keys in the dicts' own order)."""
    write_durably(path, (json.dumps(data, indent=1) + "\n").encode())
