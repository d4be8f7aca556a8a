"""Copy a build to a board, skipping files whose content is already there.

The board keeps ``edgeline-manifest.json`` (path -> sha256 of what this tool wrote). A file is
skipped when the manifest has its hash and the board has a file of that size (a size alone
proves nothing); ``verify`` hashes every file on the board instead of trusting the manifest,
and corrects the manifest's claims from what it found. Before anything changes,
the manifest is rewritten without the entries about to change, so an interrupted deploy
leaves no claim about half-written files and the next run rewrites them. Copy order is
sorted by path, so two runs do the same thing in the same order.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tools.flash.board import BOARD_MANIFEST, BOARD_MANIFEST_FORMAT, Board, BoardInfo
from tools.flash.build import LIB_DIR, LIBRARIES, BuildManifest, compile_source, library, sha256_bytes
from tools.flash.devices import CONFIG_NAME
from tools.flash.errors import FlashError

#: umqtt.simple, pinned in tools/fetch_upy_deps.py
UMQTT = library("umqtt.simple")
UMQTT_BOARD_PATH = UMQTT.board_path
#: libraries live here: the pinned ones of the build, or those of --umqtt-from / --umqtt-mip
LIB_PREFIX = LIB_DIR + "/"
_MPY_VERSION = re.compile(r"mpy v(\d+)\.(\d+)")
#: hex digits of sha256 kept per file in the board manifest (64 bits: plenty to notice a
#: change, and half the bytes to send over a 115200-baud link on every deploy)
RECORDED_HASH = 16
#: --arch -> the native arch a board of that kind reports (sys.implementation._mpy)
BOARD_ARCH = {"armv6m": "armv6m", "xtensawin": "xtensawin"}


@dataclass(frozen=True)
class Payload:
    """A file to put on the board: board path, content hash, and how to get the bytes."""

    path: str
    sha256: str
    size: int
    load: Callable[[], bytes]


@dataclass
class DeployReport:
    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def _constant(data: bytes) -> Callable[[], bytes]:
    return lambda: data


def build_payloads(build_dir: Path, manifest: BuildManifest) -> list[Payload]:
    """The build's files, checked against its manifest (a file edited after the build would
    otherwise be recorded on the board under the wrong hash)."""
    out = []
    for entry in manifest.files:
        path = build_dir / entry.path
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise FlashError(f"build file {path} is unreadable ({exc.strerror}): rebuild") from None
        if sha256_bytes(data) != entry.sha256:
            raise FlashError(f"{path} changed after the build (its hash differs from manifest.json): rebuild")
        out.append(Payload(entry.path, entry.sha256, entry.size, _constant(data)))
    return out


def check_libraries(build_dir: Path, manifest: BuildManifest, skip: frozenset[str] = frozenset()) -> None:
    """Refuse a build whose libraries are not the pinned ones (made before the pin changed,
    or by an older edgeline-flash): the board must get what the tests run."""
    built = {entry.path: entry for entry in manifest.files}
    for lib in LIBRARIES:
        if lib.board_path in skip:
            continue
        entry = built.get(lib.board_path)
        if entry is None or entry.source != lib.source:
            was = f"from {entry.source}" if entry else "without it"
            raise FlashError(
                f"{build_dir} has {lib.board_path} {was}, but the pinned {lib.name} is {lib.source} "
                "(tools/fetch_upy_deps.py): rebuild (run without --no-build, or "
                f"`python -m tools.flash build --arch {manifest.arch}`)"
            )


def umqtt_payload(path: Path, arch: str) -> tuple[Payload, str]:
    """--umqtt-from: a umqtt/simple.py (the file, or a directory holding umqtt/simple.py),
    compiled for ``arch`` like the build, to replace the pinned one. Returns the payload and
    a line saying what it is."""
    candidates = [path, path / "umqtt" / "simple.py", path / "simple.py"]
    source = next((c for c in candidates if c.is_file()), None)
    if source is None:
        raise FlashError(
            f"--umqtt-from {path}: no umqtt/simple.py there. Give the file, or a directory that "
            "holds umqtt/simple.py; without --umqtt-from the pinned umqtt.simple is installed"
        )
    if source.suffix != ".py":
        raise FlashError(f"--umqtt-from {source}: give the source file (umqtt/simple.py); it is compiled for the board")
    try:
        text = source.read_bytes()
    except OSError as exc:
        raise FlashError(f"--umqtt-from {source}: unreadable ({exc.strerror})") from None
    data = compile_source(text, UMQTT.member, arch, shown=str(source))
    line = (
        f"{UMQTT.name} from {source} (--umqtt-from override, NOT the pinned {UMQTT.pin.version} "
        f"the tests run; source sha256 {sha256_bytes(text)}) -> {UMQTT.board_path}"
    )
    return Payload(UMQTT.board_path, sha256_bytes(data), len(data), _constant(data)), line


def check_compatible(info: BoardInfo, manifest: BuildManifest, port: str) -> None:
    """Refuse a build the board cannot load, with the fix in the message."""
    match = _MPY_VERSION.search(manifest.mpy_cross)
    board_major, _ = info.mpy_version
    if match and board_major and int(match.group(1)) != board_major:
        raise FlashError(
            f"the board on {port} runs MicroPython {info.version}, which loads .mpy "
            f"v{board_major}, but the build is .mpy v{match.group(1)}.{match.group(2)} "
            f"({manifest.mpy_cross}). Flash a MicroPython release matching mpy-cross "
            "(docs/flashing.md), or install the mpy-cross version matching the board"
        )
    want = BOARD_ARCH.get(manifest.arch)
    if want and info.arch not in ("none", want):
        suggestion = next((a for a, b in BOARD_ARCH.items() if b == info.arch), None)
        hint = f"use --arch {suggestion}" if suggestion else "check the board"
        raise FlashError(
            f"the board on {port} ({info.platform}) is {info.arch} but the build is for {manifest.arch}: {hint}"
        )


def _parents(path: str) -> list[str]:
    parts = path.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _write_manifest(board: Board, arch: str, files: dict[str, str]) -> None:
    doc = {"format": BOARD_MANIFEST_FORMAT, "arch": arch, "files": dict(sorted(files.items()))}
    board.write(BOARD_MANIFEST, json.dumps(doc, separators=(",", ":")).encode())


def deploy(
    board: Board,
    payloads: list[Payload],
    *,
    arch: str,
    verify: bool = False,
    say: Callable[[str], None] = print,
    released: frozenset[str] = frozenset(),
) -> DeployReport:
    """Copy ``payloads``. ``released``: paths another installer writes next (--umqtt-mip):
    their claims are withdrawn, the files left for it to replace (a failed install then
    leaves the previous file in place, unclaimed, and the next deploy rewrites it)."""
    payloads = sorted(payloads, key=lambda p: p.path)
    listing = board.listing()
    recorded: dict[str, str] = dict(board.manifest(listing).get("files", {}))
    wanted = {p.path: p.sha256[:RECORDED_HASH] for p in payloads}
    if len(wanted) != len(payloads):
        raise FlashError("two files map to the same board path; check --umqtt-from")

    def current(payload: Payload) -> bool:
        if listing.get(payload.path) != payload.size:
            return False
        if verify:
            return board.sha256(payload.path) == payload.sha256
        return recorded.get(payload.path) == payload.sha256[:RECORDED_HASH]

    to_write = {p.path for p in payloads if not current(p)}
    # Files this tool wrote that are no longer wanted (lib/ included: every deploy carries
    # the libraries, so an unwanted one was replaced, e.g. by --umqtt-mip).
    stale = sorted(
        p
        for p in recorded
        if p not in wanted and p not in released and p not in (CONFIG_NAME, BOARD_MANIFEST) and listing.get(p, -1) >= 0
    )
    unclaimed = sorted(p for p in recorded if p in released and p not in wanted)
    # A leftover X.py (copied by hand, or by an older edgeline-flash) is imported before our
    # X.mpy: remove it.
    shadows = sorted(
        p.path[: -len(".mpy")] + ".py"
        for p in payloads
        if p.path.endswith(".mpy")
        and listing.get(p.path[: -len(".mpy")] + ".py", -1) >= 0
        and p.path[: -len(".mpy")] + ".py" not in wanted
        and p.path[: -len(".mpy")] + ".py" not in stale
    )
    report = DeployReport()
    changing = to_write | set(stale) | set(shadows) | set(unclaimed)
    if changing & set(recorded):  # withdraw the claims about files that are about to change
        _write_manifest(board, arch, {k: v for k, v in recorded.items() if k not in changing})
    total = len(payloads)
    width = len(str(total))
    for index, payload in enumerate(payloads, 1):
        tag = f"[{index:>{width}}/{total}]"
        if payload.path in to_write:
            for parent in _parents(payload.path):
                if parent not in listing:
                    board.mkdir(parent)
                    listing[parent] = -1
            board.write(payload.path, payload.load())
            listing[payload.path] = payload.size
            report.written.append(payload.path)
            say(f"{tag} write     {payload.path} ({payload.size} B)")
        else:
            report.unchanged.append(payload.path)
            say(f"{tag} unchanged {payload.path}")
    for path in stale:
        board.remove(path)
        report.removed.append(path)
        say(f"      remove    {path} (no longer in the build)")
    for path in shadows:
        board.remove(path)
        report.removed.append(path)
        say(f"      remove    {path} (would shadow {path[:-3]}.mpy)")
    for path in unclaimed:
        say(f"      release   {path} (left to be replaced, no longer claimed)")
    claims = wanted  # every other claim was about a file just removed or released
    # Rewritten also when nothing was written but a claim was wrong (--verify found a file
    # right that the manifest described otherwise): later deploys and `status` trust it.
    if changing or not recorded or claims != recorded:
        _write_manifest(board, arch, claims)
    say(f"deploy: {len(report.written)} written, {len(report.unchanged)} unchanged, {len(report.removed)} removed")
    return report
