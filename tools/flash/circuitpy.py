"""``circuitpy``: put edgeline on a CircuitPython board through its mounted CIRCUITPY drive.

What lands on the drive (CircuitPython cannot load MicroPython's .mpy, so all are sources):

- ``code.py`` and ``boot.py`` from firmware/cp/, and ``otaslots.py`` from firmware/ (the A/B
  loader's logic, shared with MicroPython's main.py): the loader files, never sent over the air;
- ``lib/sensorfw/``: firmware/sensorfw without MicroPython's machine layer (``port/``)
  and the unix-port simulation boards (``boards/sim*.py``, ``boards/cp_sim.py``);
- ``lib/shared_protocol/``: the modules the MicroPython build takes (build.EXCLUDE);
- ``lib/``: the pinned CircuitPython libraries (tools/fetch_upy_deps.CP_PINS), read from
  their archives after checking the sha256, as the MicroPython build reads umqtt.simple;
- ``settings.toml`` from devices.toml (cpsettings.py);
- with ``broker.tls``: ``certs/ca.pem``, ``certs/device.pem`` and ``certs/device-key.pem``
  (mode 0600 where the drive has modes), from the fleet CA (device_certs.obtain: reused
  while good). PEM, not the DER files of MicroPython boards: CircuitPython's ``ssl`` reads
  the key and certificate by path, parses them at every connect with a length one byte past
  the data (a DER key fails), and takes the CA as a string read up to its first NUL byte.
  They are written before settings.toml, which names them.

Everything is read, checked and rendered before the first write. A file whose bytes are
already on the drive is skipped; a changed one is written under a temporary name in its
folder, flushed to the drive, and renamed over the old one, so a drive pulled out mid-copy
never holds half a file under the real name. Files under ``lib/sensorfw/`` and
``lib/shared_protocol/`` that the build no longer has are removed, and so is the A/B loader's
``ota.json`` (the board then runs the code just copied, not a slot an update over the air
wrote); nothing else is touched.

With the device's private folder (``[ca] dir`` or ``--ca-dir``), its OTA key goes to the
drive as ``ota.key`` (tools/flash/ota_key.py), as ``provision`` writes it on MicroPython.

``build --arch circuitpython`` (:func:`build`) writes the files that are the same on every
board (libraries, packages, loader files) with a build manifest to a folder, for
``edgeline-release pack firmware --arch circuitpython``: a release carries the sources, as
``/a/lib/...`` or ``/b/lib/...`` on the drive.
"""

from __future__ import annotations

import copy
import errno
import os
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tools.fetch_upy_deps import CP_PINS, FetchError, Pin, read_archive, unpack
from tools.flash import ota_key
from tools.flash.build import MANIFEST_NAME, BuildManifest, FileEntry, board_sources, sha256_bytes
from tools.flash.cpsettings import SETTINGS_NAME, Check, Settings, load_rule, parse, render_settings
from tools.flash.device_certs import obtain
from tools.flash.devices import Device
from tools.flash.errors import FlashError
from tools.flash.pki import DeviceCredentials, FleetCA

#: firmware/ folder of the CircuitPython entry points, copied to the drive's root
ENTRY_DIR = Path("firmware") / "cp"
#: in write order: code.py last, so the auto-reload after it runs the complete new set
ENTRY_POINTS = ("boot.py", "code.py")
#: the A/B loader's logic (from firmware/), beside code.py at the drive's root
LOADER = "otaslots.py"
#: files at the drive's root that an update over the air never replaces
LOADER_FILES = (*ENTRY_POINTS, LOADER)
#: the arch of a CircuitPython build and firmware bundle (sources: CircuitPython's .mpy
#: format is not MicroPython's); what core/ota.py answers on a CircuitPython board
BUILD_ARCH = "circuitpython"
#: the A/B loader's state and its temporary name (firmware/otaslots.py)
OTA_STATE_FILES = (ota_key.OTA_STATE, ota_key.OTA_STATE + ".tmp")
LIB_DIR = "lib"
#: the packages that go to lib/ (board paths of build.board_sources)
PACKAGES = ("sensorfw/", "shared_protocol/")
#: firmware/ folders that are no CircuitPython library code: the unix-port simulation
#: modules, the entry points (copied to the root instead), MicroPython's machine layer
EXCLUDE_DIRS = ("cpsim/", "cp/", "sensorfw/port/")
#: the simulation boards of the unix port (MicroPython's and CircuitPython's) and their parts
EXCLUDE_GLOBS = ("sensorfw/boards/sim*.py", "sensorfw/boards/cp_sim*.py")
#: the drive folders this command owns: files there that the build lacks are removed
OWNED = tuple(f"{LIB_DIR}/{package}" for package in PACKAGES)
#: CircuitPython writes it at every start; its absence means the path is not a CIRCUITPY drive
BOOT_OUT = "boot_out.txt"
#: suffix of the temporary name a file is written under before the rename
PART_SUFFIX = ".edgeline-part"
CIRCUITPY_DOC = "docs/circuitpython.md"
DRIVE_EXAMPLES = "/media/$USER/CIRCUITPY on Linux, /Volumes/CIRCUITPY on macOS, E:\\ on Windows"
#: broker.tls on the drive: PEM files (see the module docstring), named in settings.toml
TLS_FILES = {"ca": "certs/ca.pem", "cert": "certs/device.pem", "key": "certs/device-key.pem"}

Say = Callable[[str], None]


@dataclass(frozen=True)
class DriveFile:
    """A file to put on the drive: its path there, its bytes, where it comes from."""

    path: str
    data: bytes
    source: str
    private: bool = False  # holds secrets: mode 0600, never shown


@dataclass
class DriveReport:
    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------ the files


def package_files(root: Path) -> list[DriveFile]:
    """lib/sensorfw/... and lib/shared_protocol/..., as sources, sorted."""
    out = []
    for source, board_path in board_sources(root, exclude_dirs=EXCLUDE_DIRS, exclude_globs=EXCLUDE_GLOBS):
        if not board_path.startswith(PACKAGES):
            continue  # main.py: MicroPython's entry point
        shown = source.relative_to(root).as_posix()
        out.append(DriveFile(f"{LIB_DIR}/{board_path}", _read(source, shown), shown))
    return out


def _read(path: Path, shown: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise FlashError(f"{shown} is missing") from None
    except OSError as exc:
        raise FlashError(f"{shown} is unreadable ({exc.strerror})") from None


def describe(pin: Pin) -> str:
    """One line naming a pinned library, its hash and where it goes on the drive."""
    tops = sorted({m.split("/")[0] + ("/" if "/" in m else "") for m in pin.members})
    where = ", ".join(f"{LIB_DIR}/{top}" for top in tops)
    return f"{pin.project} {pin.version} (pinned, sha256 {pin.sha256}) -> {where}"


def library_files(archives: Path) -> list[DriveFile]:
    """The pinned CircuitPython libraries, from their archives after the sha256 check."""
    out = []
    for pin in CP_PINS:
        try:
            members = unpack(pin, read_archive(pin, archives))
        except FetchError as exc:
            raise FlashError(f"{pin.project} {pin.version} (pinned): {exc}") from None
        for member, data in sorted(members.items()):
            out.append(DriveFile(f"{LIB_DIR}/{member}", data, f"{pin.filename}:{member}"))
    return out


def entry_files(root: Path) -> list[DriveFile]:
    """boot.py, otaslots.py and code.py, in write order."""
    out = []
    for name in ENTRY_POINTS:
        shown = (ENTRY_DIR / name).as_posix()
        path = root / ENTRY_DIR / name
        if not path.is_file():
            raise FlashError(
                f"{shown} is missing: CircuitPython's entry points ({' and '.join(ENTRY_POINTS)}) live there"
            )
        out.append(DriveFile(name, _read(path, shown), shown))
    shown = f"firmware/{LOADER}"
    out.insert(1, DriveFile(LOADER, _read(root / shown, shown), shown))
    return out


def common_files(root: Path, archives: Path) -> list[DriveFile]:
    """The files that are the same on every board, in write order: libraries, packages,
    loader files (code.py last)."""
    files = [*library_files(archives), *package_files(root)]
    entries = entry_files(root)
    check_syntax(files + entries)
    return files + entries


def build(root: Path, archives: Path, out_dir: Path | None = None) -> tuple[Path, BuildManifest]:
    """``build --arch circuitpython``: the common files and a build manifest (arch
    ``circuitpython``, sources) in ``out_dir`` (default build/circuitpython/), made in a
    fresh sibling folder and swapped in, as the MicroPython build does."""
    files = common_files(root, archives)
    dest = out_dir if out_dir is not None else root / "build" / BUILD_ARCH
    staging = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        for item in files:
            target = staging / item.path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(item.data)
        entries = sorted(
            (FileEntry(f.path, sha256_bytes(f.data), len(f.data), f.source) for f in files), key=lambda e: e.path
        )
        manifest = BuildManifest(arch=BUILD_ARCH, mpy_cross="none (sources)", files=tuple(entries))
        (staging / MANIFEST_NAME).write_text(manifest.to_json(), encoding="utf-8")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(dest, ignore_errors=True)
    staging.rename(dest)
    return dest, manifest


def check_syntax(files: list[DriveFile]) -> None:
    """Refuse a .py file that does not parse, before anything is written."""
    for item in files:
        if not item.path.endswith(".py"):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # SyntaxWarning (escapes) is not the board's concern
                compile(item.data, item.source, "exec", dont_inherit=True)
        except SyntaxError as exc:
            raise FlashError(
                f"{item.source}:{exc.lineno}: {exc.msg}: fix the source (nothing was written to the drive)"
            ) from None


# ------------------------------------------------------------------------------ the drive


def check_drive(drive: Path, *, force: bool) -> str | None:
    """Refuse a path that is not a writable CIRCUITPY drive (``force``: one without
    boot_out.txt); return the first line of boot_out.txt (CircuitPython version and board)."""
    if not drive.exists():
        raise FlashError(
            f"--drive {drive} does not exist: plug the board in and give its mounted CIRCUITPY drive ({DRIVE_EXAMPLES})"
        )
    if not drive.is_dir():
        raise FlashError(f"--drive {drive} is not a directory: give the mounted CIRCUITPY drive ({DRIVE_EXAMPLES})")
    first: str | None = None
    boot_out = drive / BOOT_OUT
    if boot_out.is_file():
        lines = boot_out.read_text(encoding="utf-8", errors="replace").splitlines()
        first = lines[0].strip()[:120] if lines else ""
    elif not force:
        raise FlashError(
            f"--drive {drive} has no {BOOT_OUT}, which CircuitPython writes at every start: it does not look "
            "like a CIRCUITPY drive. Check the path (is the board running CircuitPython?), or add --force to "
            "write there anyway"
        )
    if not os.access(drive, os.W_OK):
        raise FlashError(_read_only(drive))
    return first


def _read_only(drive: Path) -> str:
    return (
        f"--drive {drive} is not writable. edgeline's boot.py gives CIRCUITPY to the firmware, and the "
        "computer then gets it read-only, unless the USB-write pin is held while the board resets: "
        f"hold it, press reset, run again ({CIRCUITPY_DOC}). Otherwise check how the drive is mounted"
    )


def _write_problem(drive: Path, path: str, exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        why = "the drive is full: delete files it does not need (other projects' lib/ folders) and run again"
    elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        why = _read_only(drive)
    elif exc.errno in (errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
        why = "a file or folder on the drive is in the way of edgeline's: move it"
    else:
        why = f"{exc.strerror}; run the command again (finished files are skipped)"
    return f"cannot write {path} on {drive}: {why}"


def read_settings(drive: Path) -> dict[str, Any]:
    """The keys of the drive's settings.toml ({} when there is none)."""
    path = drive / SETTINGS_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise FlashError(f"cannot read {path}: {exc.strerror}") from None
    return parse(data, str(path))


def is_current(target: Path, data: bytes) -> bool:
    """Whether ``target`` holds exactly ``data``."""
    try:
        return target.read_bytes() == data
    except FileNotFoundError:
        return False
    except (IsADirectoryError, NotADirectoryError):
        raise FlashError(f"{target}: a file or folder on the drive is in the way of edgeline's: move it") from None
    except OSError as exc:
        raise FlashError(f"cannot read {target}: {exc.strerror}") from None


def write_atomic(target: Path, data: bytes, *, private: bool = False) -> None:
    """Write via a temporary name in the same folder, synced, then renamed over ``target``.
    ``private``: created with mode 0600 (where the file system has modes)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(f".{target.name}{PART_SUFFIX}")
    part.unlink(missing_ok=True)  # left by a run that was cut off
    mode = 0o600 if private else 0o666  # 0o666: the umask decides, as for any new file

    def opener(path: str, flags: int) -> int:
        return os.open(path, flags, mode)

    try:
        with open(part, "xb", opener=opener) as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(part, target)
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def stale_files(drive: Path, wanted: set[str], owned: tuple[str, ...] = OWNED) -> list[str]:
    """Files under the ``owned`` folders that are not ``wanted``. FAT ignores case, so
    neither does the comparison."""
    folded = {path.casefold() for path in wanted}
    out = []
    for folder in owned:
        base = drive / folder
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*")):
            rel = path.relative_to(drive).as_posix()
            if not path.is_dir() and rel.casefold() not in folded:
                out.append(rel)
    return out


def prune_empty(drive: Path, owned: tuple[str, ...] = OWNED) -> None:
    """Remove the folders under ``owned`` that the removals left empty."""
    for folder in owned:
        base = drive / folder
        for dirpath, _dirnames, _filenames in os.walk(base, topdown=False):  # deepest first
            if Path(dirpath) != base and not os.listdir(dirpath):
                os.rmdir(dirpath)


def sync(drive: Path, files: list[DriveFile], *, say: Say) -> DriveReport:
    """Write the files that differ, in the given order, then remove stale ones."""
    wanted = {item.path for item in files}
    if len(wanted) != len(files):
        raise FlashError("two files map to the same path on the drive")
    report = DriveReport()
    for item in files:
        target = drive / item.path
        if is_current(target, item.data):
            report.unchanged.append(item.path)
            continue
        try:
            write_atomic(target, item.data, private=item.private)
        except OSError as exc:
            raise FlashError(_write_problem(drive, item.path, exc)) from None
        report.written.append(item.path)
        secret = ", secrets not shown" if item.private else ""
        say(f"  write   {item.path} ({len(item.data)} B{secret})")
    for path in stale_files(drive, wanted):
        try:
            (drive / path).unlink()
        except OSError as exc:
            raise FlashError(f"cannot remove {path} from {drive}: {exc.strerror}") from None
        report.removed.append(path)
        say(f"  remove  {path} (no longer in the build)")
    prune_empty(drive)
    return report


# ------------------------------------------------------------------------------ the command


def tls_device(device: Device) -> Device:
    """The device as its settings.toml has it: broker.tls naming the PEM files on the drive
    (devices.py names MicroPython's DER files)."""
    if device.tls_server_name is None:
        return device
    config = copy.deepcopy(device.config)
    config["broker"]["tls"] = {**TLS_FILES, "server_name": device.tls_server_name}
    return replace(device, config=config)


def cert_files(creds: DeviceCredentials) -> list[DriveFile]:
    """The device's TLS files for the drive (PEM)."""
    return [
        DriveFile(TLS_FILES["ca"], creds.ca_pem, "the fleet CA"),
        DriveFile(TLS_FILES["cert"], creds.cert_pem, f"certificate of {creds.device_id}"),
        DriveFile(TLS_FILES["key"], creds.key_pem, f"key of {creds.device_id}", private=True),
    ]


def settings_file(device: Device, drive: Path, check: Check, say: Say) -> DriveFile:
    """settings.toml for ``device``, keeping the readable other keys of the drive's one."""
    settings: Settings = render_settings(device, load_rule(), check, read_settings(drive))
    say(f"{SETTINGS_NAME}: {len(settings.keys)} keys for {device.id} (values not shown)")
    if settings.kept:
        say(f"{SETTINGS_NAME}: kept the drive's other keys: {', '.join(settings.kept)}")
    if settings.dropped:
        say(f"{SETTINGS_NAME}: left out {', '.join(settings.dropped)} (CircuitPython reads only integers and strings)")
    return DriveFile(SETTINGS_NAME, settings.data, f"devices.toml [devices.{device.id}]", private=True)


def drive_files(
    root: Path, archives: Path, settings: DriveFile, say: Say, certs: list[DriveFile] | None = None
) -> list[DriveFile]:
    """Every file for the drive, in write order: libraries, packages, TLS files and OTA
    key, settings, boot.py, otaslots.py, code.py."""
    common = common_files(root, archives)
    for pin in CP_PINS:
        say(describe(pin))
    n = len(LOADER_FILES)
    return [*common[:-n], *(certs or []), settings, *common[-n:]]


def drop_ota_state(drive: Path, say: Say) -> None:
    """Remove the A/B loader's state: the board runs the code just copied to its root."""
    for name in OTA_STATE_FILES:
        try:
            (drive / name).unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise FlashError(_write_problem(drive, name, exc)) from None
        say(f"  remove  {name} (the board runs the code just copied, not an over-the-air slot)")


def flash_drive(
    drive: Path,
    device: Device,
    *,
    root: Path,
    archives: Path,
    check: Check,
    force: bool,
    say: Say,
    ca: FleetCA | None = None,
    ota_key_data: bytes | None = None,
) -> None:
    """The ``circuitpy`` command: check the drive, render and check everything, then copy.
    ``ca``: the fleet CA, for a device with broker.tls; ``ota_key_data``: the device's OTA
    key (ota_key.obtain), written as ota.key."""
    board = check_drive(drive, force=force)
    say(f"drive {drive}: {board if board is not None else f'no {BOOT_OUT} (--force)'}")
    device = tls_device(device)
    certs: list[DriveFile] = []
    if device.tls_server_name is not None:
        if ca is None:
            raise FlashError(f"device {device.id} uses broker.tls: its certificate needs the fleet CA (--ca-dir)")
        outcome = obtain(ca, device.id, days=device.ca.device_days)
        say(outcome.describe())
        certs = cert_files(outcome.creds)
    if ota_key_data is not None:
        certs.append(DriveFile(ota_key.BOARD_PATH, ota_key_data, f"OTA key of {device.id}", private=True))
    settings = settings_file(device, drive, check, say)
    files = drive_files(root, archives, settings, say, certs)
    drop_ota_state(drive, say)  # before code.py changes: its auto-reload runs the root's code
    report = sync(drive, files, say=say)
    say(
        f"circuitpy: {len(report.written)} written, {len(report.unchanged)} unchanged, "
        f"{len(report.removed)} removed on {drive}"
    )
    if "boot.py" in report.written:
        say("boot.py changed: CircuitPython runs it only at a hard reset: press the board's reset button")
    elif report.written or report.removed:
        say("CircuitPython restarts code.py after the copy by itself (auto-reload); if not, press reset")
