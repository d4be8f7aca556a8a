"""``edgeline-gateway ota status|pause|resume|abort``: the firmware rollouts of the running
gateway (gateway/updates/rollout.py), through its control socket.

status   each rollout (state, wave, counts) and its devices (state, offset, reason); without a
         running gateway, what ``<state_dir>/rollout.json`` last held
pause    start no further device (those in flight finish)
resume   go on (also after a halt on the failure rate: the operator's decision)
abort    send ABORT to the devices still receiving and stop the rollout
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from gateway.status import ota_lines
from gateway.updatecmd import ask, show_answer, updates_config

NOT_RUNNING = 2
TIMEOUT_S = 10.0


def cmd_ota(args: argparse.Namespace) -> int:
    from gateway.control_socket import ControlSocketError
    from gateway.updates.rollout import STATE_FILE

    cfg, updates = updates_config(args.config)
    body: dict[str, Any] = {"op": f"ota.{args.action}"}
    if args.name:
        body["name"] = args.name
    try:
        res = ask(cfg, body, TIMEOUT_S)
    except ControlSocketError as exc:
        if args.action != "status":
            print(f"edgeline-gateway ota {args.action}: {exc}", file=sys.stderr)
            return NOT_RUNNING
        path = updates.state_dir / STATE_FILE
        if not path.exists():
            print(f"edgeline-gateway ota status: {exc}; and no {path} (no rollout so far)", file=sys.stderr)
            return NOT_RUNNING
        print(f"edgeline-gateway ota status: {exc}; showing {path}", file=sys.stderr)
        res = {"ok": True, **json.loads(path.read_text())}
    return show_answer(
        res,
        args,
        "ota",
        lambda r: "\n".join(ota_lines(r)) or "no firmware rollout",
        lambda r: f"rollout {r['name']}: {r['state']}",
    )


def setup(p: argparse.ArgumentParser, config_arg: Callable[[argparse.ArgumentParser], None]) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    helps = {
        "status": "each firmware rollout and its devices",
        "pause": "start no further device (those in flight finish)",
        "resume": "go on (also after a halt on the failure rate)",
        "abort": "ABORT to the devices still receiving, and stop",
    }
    for action, text in helps.items():
        a = sub.add_parser(action, help=text)
        config_arg(a)
        a.add_argument("--name", help="the rollout (bundle name, e.g. sensorfw-xtensawin); needed when several")
        a.add_argument("--json", action="store_true", help="print the gateway's answer as JSON")
