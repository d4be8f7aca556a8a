"""edgeline-flash: build, provision and deploy edgeline firmware to MicroPython and CircuitPython boards.

    python -m tools.flash build --arch xtensawin
    python -m tools.flash provision --device esp32-01 --config devices.toml [--port /dev/ttyUSB0]
    python -m tools.flash deploy --port /dev/ttyACM0 --arch armv6m
    python -m tools.flash config --device esp32-01 --config devices.toml --check
    python -m tools.flash status --port /dev/ttyUSB0 --arch xtensawin
    python -m tools.flash ls --port /dev/ttyUSB0
    python -m tools.flash circuitpy --device cp-01 --config devices.toml --drive /media/$USER/CIRCUITPY
    python -m tools.flash ca init --dir ca --site plant1        (and ca server-cert, issue, revoke, list ...)
    python -m tools.flash renew --device esp32-01 --config devices.toml

Modelled on mpremote: a command table (name -> handler, argument parser), one State handed to
every handler, one FlashError for every failure the user must act on.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from tools.flash.build import ARCH_BOARDS, ARCHES
from tools.flash.ca_cli import do_ca, parser_ca
from tools.flash.circuitpy import BOOT_OUT
from tools.flash.circuitpy import BUILD_ARCH as CP_BUILD_ARCH
from tools.flash.commands import (
    Handler,
    State,
    do_build,
    do_circuitpy,
    do_config,
    do_deploy,
    do_ls,
    do_provision,
    do_renew,
    do_status,
)
from tools.flash.deploy import UMQTT
from tools.flash.errors import FlashError

PROG = "edgeline-flash"
ParserFactory = Callable[[], argparse.ArgumentParser]


def _parser(command: str, description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=f"{PROG} {command}", description=description)


def _arch_help() -> str:
    return "target: " + ", ".join(f"{a} ({b})" for a, b in ARCH_BOARDS.items())


def _add_device(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument("--device", required=required, help="device id: a [devices.ID] table")
    parser.add_argument("--config", metavar="DEVICES_TOML", help="devices.toml (see docs)")


def _add_port(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", help="serial port, e.g. /dev/ttyUSB0 (default: from devices.toml)")


def _add_code(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", choices=list(ARCHES), help=_arch_help())
    parser.add_argument("--build-dir", help="build directory (default: build/<arch>)")
    parser.add_argument("--no-build", action="store_true", help="deploy the existing build instead of rebuilding")
    parser.add_argument(
        "--verify",
        action="store_true",
        help="hash every file on the board instead of trusting its manifest (slower)",
    )
    pinned = f"{UMQTT.name} {UMQTT.pin.version}"
    parser.add_argument(
        "--umqtt-from",
        metavar="PATH",
        help=f"override: ship this umqtt/simple.py (or a directory holding umqtt/simple.py), compiled to "
        f"{UMQTT.board_path}, instead of the pinned {pinned} the tests run (the default, from "
        "the sha256-checked archive of tools/fetch_upy_deps.py)",
    )
    parser.add_argument(
        "--umqtt-mip",
        action="store_true",
        help=f"opt-in: install umqtt.simple with `mip install` instead of the pinned {pinned}; the "
        "index decides the version (needs the internet, or --mip-index)",
    )
    parser.add_argument("--mip-index", metavar="URL", help="package index for --umqtt-mip (default: micropython-lib)")


def _add_reset(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-reset", action="store_true", help="do not soft-reset at the end")
    parser.add_argument(
        "--follow",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="after the reset, show the board's output for this long",
    )


def parser_build() -> argparse.ArgumentParser:
    p = _parser("build", f"compile firmware/, shared_protocol/ and the pinned {UMQTT.name} to .mpy into build/<arch>/")
    p.add_argument(
        "--arch",
        required=True,
        choices=[*ARCHES, CP_BUILD_ARCH],
        help=_arch_help() + f", {CP_BUILD_ARCH} (CircuitPython boards: sources, for a firmware bundle)",
    )
    p.add_argument("--build-dir", help="output directory (default: build/<arch>)")
    p.add_argument("-v", "--verbose", action="store_true", help="list every file")
    return p


def parser_provision() -> argparse.ArgumentParser:
    p = _parser(
        "provision",
        f"deploy the code with the pinned {UMQTT.name} {UMQTT.pin.version}, write the device's config.json, soft-reset",
    )
    _add_device(p, required=True)
    _add_port(p)
    _add_code(p)
    _add_ca_dir(p)
    p.add_argument("--no-mip", action="store_true", help=argparse.SUPPRESS)  # removed: says so, with the fix
    _add_reset(p)
    return p


def parser_deploy() -> argparse.ArgumentParser:
    p = _parser("deploy", f"deploy the code and the pinned {UMQTT.name} (changed files only), then soft-reset")
    _add_device(p, required=False)
    _add_port(p)
    _add_code(p)
    _add_reset(p)
    return p


def parser_config() -> argparse.ArgumentParser:
    p = _parser("config", "write the device's config.json only (validated first)")
    _add_device(p, required=True)
    _add_port(p)
    p.add_argument("--arch", choices=list(ARCHES), help="board kind (Wi-Fi settings are required unless native)")
    p.add_argument("--check", action="store_true", help="validate only; touch no board, print no values")
    _add_ca_dir(p)
    _add_reset(p)
    return p


def _add_ca_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ca-dir", metavar="DIR", help="the fleet CA (default: [ca] dir of devices.toml)")


def parser_renew() -> argparse.ArgumentParser:
    p = _parser("renew", "give a TLS device a new key and certificate from the CA, write them and config.json")
    _add_device(p, required=True)
    _add_port(p)
    _add_ca_dir(p)
    p.add_argument("--arch", choices=list(ARCHES), help="board kind (Wi-Fi settings are required unless native)")
    _add_reset(p)
    return p


def parser_ls() -> argparse.ArgumentParser:
    p = _parser("ls", "list the files on the board")
    p.add_argument("--port", required=True, help="serial port")
    return p


def parser_status() -> argparse.ArgumentParser:
    p = _parser("status", "compare the board's files with a build")
    _add_device(p, required=False)
    _add_port(p)
    p.add_argument("--arch", choices=list(ARCHES), help=_arch_help())
    p.add_argument("--build-dir", help="build directory (default: build/<arch>)")
    p.add_argument("--verify", action="store_true", help="hash every file on the board")
    p.add_argument("-v", "--verbose", action="store_true", help="list files that are ok too")
    return p


def parser_circuitpy() -> argparse.ArgumentParser:
    p = _parser(
        "circuitpy",
        "copy the code (.py), pinned libraries and settings.toml to a CircuitPython board's CIRCUITPY drive",
    )
    _add_device(p, required=True)
    p.add_argument(
        "--drive", required=True, metavar="PATH", help="the mounted CIRCUITPY drive, e.g. /media/$USER/CIRCUITPY"
    )
    p.add_argument("--arch", choices=list(ARCHES), help="board kind, whose pin rules the config is checked against")
    p.add_argument("--force", action="store_true", help=f"write even though the drive has no {BOOT_OUT}")
    _add_ca_dir(p)
    return p


COMMANDS: dict[str, tuple[Handler, ParserFactory]] = {
    "build": (do_build, parser_build),
    "provision": (do_provision, parser_provision),
    "deploy": (do_deploy, parser_deploy),
    "config": (do_config, parser_config),
    "ls": (do_ls, parser_ls),
    "status": (do_status, parser_status),
    "circuitpy": (do_circuitpy, parser_circuitpy),
    "renew": (do_renew, parser_renew),
    "ca": (do_ca, parser_ca),
}


def usage() -> str:
    lines = [f"usage: {PROG} <command> [options]   ({PROG} <command> --help)", "", "commands:"]
    for name, (_, make_parser) in COMMANDS.items():
        lines.append(f"  {name:<10} {make_parser().description}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None, state: State | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"{PROG}: {name!r} is not a command\n\n{usage()}", file=sys.stderr)
        return 2
    handler, make_parser = COMMANDS[name]
    parsed = make_parser().parse_args(rest)
    state = state if state is not None else State()
    try:
        handler(state, parsed)
    except FlashError as exc:
        state.out.flush()
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; run the command again to finish", file=sys.stderr)
        return 130
    finally:
        state.close()
    return 0
