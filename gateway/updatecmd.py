"""``edgeline-gateway update install FILE | status``: signed bundles on the running gateway
(gateway/updates/service.py), through its control socket.

install  verify a bundle file the way a delivered one is verified (signature, target, expiry,
         counter, hashes) and hand it to its handler; for sites without a cloud link
status   trusted keys, transfers in progress, counts and the latest transition of each bundle
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway import config as config_mod
from gateway.config import Config
from gateway.errors import GatewayError
from gateway.updates.settings import UpdatesSettings

NOT_RUNNING = 2
REFUSED = 1
TIMEOUT_S = 150.0  # the gateway verifies within INSTALL_TIMEOUT_S (service.py), a margin on top


class UpdateCommandError(GatewayError):
    """An ``update``, ``model`` or ``ota`` command that cannot be done; the message says why and
    what to do."""


def updates_config(path: str | Path) -> tuple[Config, UpdatesSettings]:
    """The configuration of the ``update``, ``model`` and ``ota`` commands, which need [updates]."""
    cfg = config_mod.load(path)
    if cfg.updates is None:
        raise UpdateCommandError(f"[updates] is not enabled in {cfg.source}: set enabled = true (docs/updates.md)")
    return cfg, cfg.updates


def ask(cfg: Config, body: dict[str, Any], timeout: float) -> dict[str, Any]:
    """The running gateway's answer to ``body`` on its control socket (ControlSocketError when no
    gateway answers)."""
    from gateway.control_socket import request, socket_path

    return request(socket_path(Path(cfg.gateway.data_dir)), body, timeout=timeout)


def show_answer(
    res: dict[str, Any],
    args: argparse.Namespace,
    command: str,
    status: Callable[[dict[str, Any]], str],
    done: Callable[[dict[str, Any]], str],
) -> int:
    """Print a control-socket answer of ``edgeline-gateway COMMAND ACTION``: JSON with --json, the
    refusal on stderr, ``status(res)`` for the status action, else ``done(res)``. Exit 0 or 1."""
    if args.json:
        print(json.dumps(res, indent=1))
    elif not res.get("ok"):
        print(f"edgeline-gateway {command} {args.action}: {res.get('message')}", file=sys.stderr)
    elif args.action == "status":
        print(status(res))
    else:
        print(done(res))
    return 0 if res.get("ok") else 1


def cmd_update(args: argparse.Namespace) -> int:
    from gateway.control_socket import ControlSocketError

    cfg, _ = updates_config(args.config)
    body: dict[str, Any] = {"op": f"update.{args.action}"}
    if args.action == "install":
        path = Path(args.file).resolve()
        if not path.is_file():
            raise UpdateCommandError(f"{args.file}: no such bundle file")
        body["file"] = str(path)
    try:
        res = ask(cfg, body, TIMEOUT_S)
    except ControlSocketError as exc:
        print(f"edgeline-gateway update {args.action}: {exc}", file=sys.stderr)
        return NOT_RUNNING
    if args.json:
        print(json.dumps(res, indent=1))
    elif not res.get("ok"):
        reason = f" ({res['reason']})" if res.get("reason") else ""
        print(f"edgeline-gateway update {args.action}: refused{reason}: {res.get('message')}", file=sys.stderr)
    elif args.action == "install":
        b = res["bundle"]
        print(f"{b['kind']} {b['name']} {b['version']} (counter {b['counter']}): verified, handed to its handler")
    else:
        print("\n".join(status_lines(res["status"])))
    return 0 if res.get("ok") else REFUSED


def status_lines(st: dict[str, Any]) -> list[str]:
    lines = [
        f"trusted keys: {', '.join(st.get('trusted_keys') or []) or 'none'}; "
        f"received {st.get('received', 0)}, refused {st.get('refused', 0)}, installed {st.get('installed', 0)}"
    ]
    for key, t in sorted((st.get("transfers") or {}).items()):
        lines.append(f"transferring {key}: {t['held']}/{t['chunks']} chunks of {t['size']} bytes")
    for key, e in sorted((st.get("current") or {}).items()):
        extra = f": {e['reason']}" if e.get("reason") else ""
        version = f" {e['version']}" if e.get("version") else ""
        lines.append(f"{key}{version}: {e['state']}{extra}")
    return lines


def setup(p: argparse.ArgumentParser, config_arg: Callable[[argparse.ArgumentParser], None]) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    install = sub.add_parser("install", help="verify a bundle file and install it (no cloud link needed)")
    install.add_argument("file", help="a .bundle made by edgeline-release pack")
    status = sub.add_parser("status", help="transfers, counts and the latest transition of each bundle")
    for a in (install, status):
        config_arg(a)
        a.add_argument("--json", action="store_true", help="print the gateway's answer as JSON")
