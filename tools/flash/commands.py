"""Command handlers. Each takes the one State and its parsed arguments.

Secrets never reach the output: the only thing printed about config.json is its size.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from tools.fetch_upy_deps import DEFAULT_ARCHIVES
from tools.flash import ota_key
from tools.flash.board import BOARD_MANIFEST, Board
from tools.flash.build import ARCHES, LIBRARIES, ROOT, BuildManifest, build, sha256_bytes
from tools.flash.circuitpy import BUILD_ARCH as CP_BUILD_ARCH
from tools.flash.circuitpy import build as cp_build
from tools.flash.circuitpy import flash_drive
from tools.flash.deploy import (
    LIB_PREFIX,
    RECORDED_HASH,
    UMQTT,
    Payload,
    build_payloads,
    check_compatible,
    check_libraries,
    deploy,
    umqtt_payload,
)
from tools.flash.device_certs import BOARD_DIR, board_files, folder, obtain
from tools.flash.devices import (
    CONFIG_NAME,
    CP_ARCH_BOARDS,
    Device,
    Validator,
    config_checker,
    load_device,
    render_config,
)
from tools.flash.errors import FlashError
from tools.flash.pki import FleetCA


@dataclass
class State:
    """Everything a command needs: where the repo is, where output goes, the open board."""

    root: Path = ROOT
    out: TextIO = field(default_factory=lambda: sys.stdout)
    board: Board | None = None
    validator: Validator | None = None  # None: the firmware's own (devices.firmware_validator)
    archives: Path = DEFAULT_ARCHIVES  # the pinned library archives (tools/fetch_upy_deps.py)

    def say(self, message: str) -> None:
        print(message, file=self.out, flush=True)

    def connect(self, port: str) -> Board:
        if self.board is None:
            self.say(f"connect {port}")
            self.board = Board.connect(port)
        return self.board

    def close(self) -> None:
        if self.board is not None:
            board, self.board = self.board, None
            board.close()


# ------------------------------------------------------------------------------ helpers


def _device(args: argparse.Namespace) -> Device | None:
    if getattr(args, "device", None) is None:
        return None
    if args.config is None:
        raise FlashError("--device needs --config devices.toml")
    return load_device(Path(args.config), args.device)


def _require_device(args: argparse.Namespace) -> Device:
    device = _device(args)
    if device is None:
        raise FlashError("pass --device ID (a [devices.ID] table of --config)")
    return device


def _port(args: argparse.Namespace, device: Device | None) -> str:
    port = getattr(args, "port", None) or (device.port if device else None)
    if not port:
        where = f" or set port in [devices.{device.id}]" if device else ""
        raise FlashError(f"no serial port: pass --port PORT{where} (list: mpremote connect list)")
    return str(port)


def _arch(args: argparse.Namespace, device: Device | None) -> str:
    arch = getattr(args, "arch", None) or (device.arch if device else None)
    if not arch:
        raise FlashError(f"no target arch: pass --arch ({' | '.join(ARCHES)}) or set arch")
    return str(arch)


def _build_dir(state: State, args: argparse.Namespace, arch: str) -> Path:
    return Path(args.build_dir) if args.build_dir else state.root / "build" / arch


def _prepare_build(state: State, args: argparse.Namespace, arch: str) -> tuple[Path, BuildManifest]:
    build_dir = _build_dir(state, args, arch)
    if args.no_build:
        return build_dir, BuildManifest.load(build_dir)
    state.say(f"build {arch} -> {build_dir}")
    return build(arch, root=state.root, out_dir=build_dir, archives=state.archives)


def _check_umqtt_options(args: argparse.Namespace) -> None:
    if getattr(args, "no_mip", False):
        raise FlashError(
            f"--no-mip is gone: edgeline-flash runs no mip unless asked (--umqtt-mip); {UMQTT.name} "
            f"{UMQTT.pin.version} comes from the pinned archive, offline. Drop --no-mip"
        )
    if args.umqtt_from and args.umqtt_mip:
        raise FlashError("--umqtt-from and --umqtt-mip both replace the pinned umqtt.simple: choose one")
    if args.mip_index and not args.umqtt_mip:
        raise FlashError(
            "--mip-index is for --umqtt-mip: add --umqtt-mip to install umqtt.simple with mip, "
            "or drop --mip-index to install the pinned one"
        )


def _code_payloads(
    state: State, args: argparse.Namespace, arch: str, build_dir: Path, manifest: BuildManifest
) -> list[Payload]:
    """The build's files, with umqtt.simple as asked: the pinned one of the build (default),
    --umqtt-from's instead, or none when --umqtt-mip installs it afterwards."""
    replaced = frozenset({UMQTT.board_path}) if args.umqtt_from or args.umqtt_mip else frozenset()
    check_libraries(build_dir, manifest, skip=replaced)
    payloads = [p for p in build_payloads(build_dir, manifest) if p.path not in replaced]
    for lib in LIBRARIES:
        if lib.board_path not in replaced:
            state.say(lib.describe())
    if args.umqtt_from:
        payload, line = umqtt_payload(Path(args.umqtt_from), arch)
        payloads.append(payload)
        state.say(line)
    return payloads


def ca_dir(args: argparse.Namespace, device: Device | None) -> Path:
    """The fleet CA's directory: --ca-dir, else [ca] dir of devices.toml."""
    given = getattr(args, "ca_dir", None)
    if given:
        return Path(given)
    if device is not None and device.ca.dir is not None:
        return device.ca.dir
    where = f"[ca] dir in {device.source}" if device is not None else "[ca] dir in devices.toml (--config)"
    raise FlashError(f"no fleet CA: set {where} or pass --ca-dir DIR (create one with `edgeline-flash ca init`)")


def _open_ca(args: argparse.Namespace, device: Device) -> FleetCA | None:
    """The CA for a device with broker.tls (opened before any board is touched), else None."""
    if device.tls_server_name is None:
        return None
    return FleetCA.open(ca_dir(args, device))


def _put(state: State, board: Board, listing: dict[str, int], path: str, data: bytes, *, note: str) -> None:
    """Write ``path`` unless the board already holds exactly ``data``."""
    if listing.get(path) == len(data) and board.sha256(path) == sha256_bytes(data):
        state.say(f"{path}: unchanged")
        return
    board.write(path, data)
    listing[path] = len(data)
    state.say(f"{path}: written ({len(data)} B{note})")


def _write_config(
    state: State, board: Board, device: Device, arch: str | None, ca: FleetCA | None = None, *, renew: bool = False
) -> None:
    """config.json, preceded by the device's certificate files when it uses TLS (a board never
    holds a TLS config without them)."""
    data = render_config(device, state.validator, arch=arch)
    listing = board.listing()
    if ca is not None:
        outcome = obtain(ca, device.id, days=device.ca.device_days, renew=renew)
        state.say(outcome.describe())
        if BOARD_DIR not in listing:
            board.mkdir(BOARD_DIR)
            listing[BOARD_DIR] = -1
        for path, content in board_files(outcome.creds).items():
            _put(state, board, listing, path, content, note=", key not shown" if path.endswith(".key") else "")
    _put(state, board, listing, CONFIG_NAME, data, note=", secrets not shown")


def _ota_key(state: State, args: argparse.Namespace, device: Device) -> bytes | None:
    """The per-device key the board checks firmware updates with, kept in the device's
    private folder beside its certificates (tools/flash/ota_key.py); None without a folder."""
    try:
        where = folder(ca_dir(args, device), device.id)
    except FlashError:
        state.say(
            f"{ota_key.BOARD_PATH}: not written (no [ca] dir in {device.source} and no --ca-dir for the"
            " device's private folder): the board refuses firmware updates over the air until it has one"
        )
        return None
    return ota_key.obtain(where)


def _finish(state: State, board: Board, args: argparse.Namespace) -> None:
    if args.no_reset:
        state.say("no reset: the board runs the new files after its next reset")
        return

    def show(data: bytes) -> None:
        state.out.write(data.decode("utf-8", "replace"))

    if board.soft_reset_and_run(follow_s=float(args.follow), out=show):
        state.say("soft reset: main.py started")
    else:
        state.say("soft reset sent; the board did not confirm it (press its reset button)")


def _deploy_code(state: State, port: str, args: argparse.Namespace, arch: str) -> Board:
    """Build (before touching the board: a compile error leaves it as it was), connect, copy."""
    _check_umqtt_options(args)
    build_dir, manifest = _prepare_build(state, args, arch)
    payloads = _code_payloads(state, args, arch, build_dir, manifest)
    board = state.connect(port)
    check_compatible(board.info(), manifest, board.port)
    released = frozenset({UMQTT.board_path}) if args.umqtt_mip else frozenset()
    deploy(board, payloads, arch=arch, verify=args.verify, say=state.say, released=released)
    if ota_key.OTA_STATE in board.listing():
        # the A/B loader (main.py) would go on running the slot it names, not this code
        board.remove(ota_key.OTA_STATE)
        state.say(f"{ota_key.OTA_STATE}: removed (the board runs the code just deployed, not an over-the-air slot)")
    if args.umqtt_mip:
        index = args.mip_index or "micropython-lib"
        state.say(
            f"{UMQTT.name}: mip install from {index} (--umqtt-mip opt-in: whatever release the index "
            f"serves, NOT the pinned {UMQTT.pin.version} the tests run)"
        )
        board.mip_install(UMQTT.name, index=args.mip_index)
    return board


# ------------------------------------------------------------------------------ handlers


def do_build(state: State, args: argparse.Namespace) -> None:
    out = Path(args.build_dir) if args.build_dir else None
    if args.arch == CP_BUILD_ARCH:
        dest, manifest = cp_build(state.root, state.archives, out)
        total = sum(f.size for f in manifest.files)
        state.say(f"build {args.arch}: {len(manifest.files)} files (sources), {total} B -> {dest}")
        return
    say = state.say if args.verbose else None
    dest, manifest = build(args.arch, root=state.root, out_dir=out, progress=say, archives=state.archives)
    total = sum(f.size for f in manifest.files)
    for lib in LIBRARIES:
        state.say(lib.describe())
    state.say(f"build {args.arch}: {len(manifest.files)} files, {total} B -> {dest}")


def do_provision(state: State, args: argparse.Namespace) -> None:
    device = _require_device(args)
    _check_umqtt_options(args)
    arch = _arch(args, device)
    render_config(device, state.validator, arch=arch)  # refuse a bad config before touching the board
    ca = _open_ca(args, device)  # and a missing CA
    key = _ota_key(state, args, device)  # and a bad OTA key file
    board = _deploy_code(state, _port(args, device), args, arch)
    _write_config(state, board, device, arch, ca)
    if key is not None:  # at the flash root, where the A/B loader (main.py) is
        _put(state, board, board.listing(), ota_key.BOARD_PATH, key, note=", key not shown")
    _finish(state, board, args)


def do_deploy(state: State, args: argparse.Namespace) -> None:
    device = _device(args)
    board = _deploy_code(state, _port(args, device), args, _arch(args, device))
    _finish(state, board, args)


def do_config(state: State, args: argparse.Namespace) -> None:
    device = _require_device(args)
    arch = args.arch or device.arch
    if args.check:
        data = render_config(device, state.validator, arch=arch)
        keys = ", ".join(sorted(device.config))
        state.say(f"{CONFIG_NAME} for {device.id}: valid ({len(data)} B; keys: {keys})")
        ca = _open_ca(args, device)
        if ca is not None:
            state.say(f"broker.tls: certificate from the CA in {ca.directory}, server name {device.tls_server_name}")
        return
    render_config(device, state.validator, arch=arch)
    ca = _open_ca(args, device)
    board = state.connect(_port(args, device))
    _write_config(state, board, device, arch, ca)
    _finish(state, board, args)


def do_renew(state: State, args: argparse.Namespace) -> None:
    """A new key and certificate for a TLS device, written to the board with its config.json."""
    device = _require_device(args)
    arch = args.arch or device.arch
    ca = _open_ca(args, device)
    if ca is None:
        raise FlashError(
            f"device {device.id} does not use TLS (set broker.tls = true in its config in {device.source})"
        )
    render_config(device, state.validator, arch=arch)
    board = state.connect(_port(args, device))
    _write_config(state, board, device, arch, ca, renew=True)
    _finish(state, board, args)


def do_circuitpy(state: State, args: argparse.Namespace) -> None:
    device = _require_device(args)
    arch = args.arch or device.arch
    board = CP_ARCH_BOARDS.get(arch) if arch else None
    where = f"board profile {board} (arch {arch})" if board else "no board profile (give --arch)"
    state.say(f"config of {device.id}: checked against {where}")
    check = config_checker(device, state.validator, arch=arch, board=board)
    flash_drive(
        Path(args.drive),
        device,
        root=state.root,
        archives=state.archives,
        check=check,
        force=args.force,
        say=state.say,
        ca=_open_ca(args, device),
        ota_key_data=_ota_key(state, args, device),
    )


def do_ls(state: State, args: argparse.Namespace) -> None:
    board = state.connect(_port(args, None))
    listing = board.listing()
    recorded = board.manifest(listing).get("files", {})
    for path in sorted(listing):
        size = listing[path]
        if size < 0:
            state.say(f"{'':>8}  {path}/")
        else:
            mark = "*" if path in recorded else " "
            state.say(f"{size:>8} {mark}{path}")
    state.say("(* = written by edgeline-flash)")


def do_status(state: State, args: argparse.Namespace) -> None:
    device = _device(args)
    arch = _arch(args, device)
    build_dir = _build_dir(state, args, arch)
    manifest = BuildManifest.load(build_dir)
    board = state.connect(_port(args, device))
    info = board.info()
    state.say(
        f"board: {info.implementation} {info.version} on {info.platform}, "
        f".mpy v{info.mpy_version[0]}.{info.mpy_version[1]} ({info.arch})"
    )
    listing = board.listing()
    recorded = board.manifest(listing).get("files", {})
    counts = {"ok": 0, "changed": 0, "missing": 0}
    for entry in manifest.files:
        if entry.path not in listing:
            state_ = "missing"
        elif args.verify:
            state_ = "ok" if board.sha256(entry.path) == entry.sha256 else "changed"
        else:
            same = recorded.get(entry.path) == entry.sha256[:RECORDED_HASH] and listing[entry.path] == entry.size
            state_ = "ok" if same else "changed"
        counts[state_] += 1
        if state_ != "ok" or args.verbose:
            state.say(f"  {state_:<8} {entry.path}")
    wanted = {e.path for e in manifest.files}
    others = sorted(p for p in recorded if p not in wanted and p not in (CONFIG_NAME, BOARD_MANIFEST))
    libraries = [p for p in others if p.startswith(LIB_PREFIX)]
    extra = [p for p in others if not p.startswith(LIB_PREFIX)]
    for path in libraries:
        state.say(f"  library  {path}{'' if path in listing else ' (MISSING)'}")
    for path in extra:
        state.say(f"  extra    {path}")
    state.say(f"  {CONFIG_NAME}: {'present' if CONFIG_NAME in listing else 'MISSING'}")
    state.say(
        f"status vs {build_dir}: {counts['ok']} ok, {counts['changed']} changed, "
        f"{counts['missing']} missing, {len(extra)} extra"
    )


Handler = Callable[[State, argparse.Namespace], None]
