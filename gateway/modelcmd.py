"""``edgeline-gateway model status|rollback``: the models of the running gateway's pipelines
and their signed updates (gateway/updates/models.py), through its control socket.

status             each pipeline's model (version, update counter), the one before it, and
                   the candidate in shadow with its figures so far; without a running gateway,
                   what ``<state_dir>/models/active.json`` holds
rollback PIPELINE  back to the model the pipeline ran before the current one
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.updatecmd import ask, show_answer, updates_config

NOT_RUNNING = 2
TIMEOUT_S = 40.0  # a rollback loads (and self-tests) the previous model first


def status_lines(pipelines: dict[str, Any]) -> list[str]:
    out = []
    for name, p in sorted(pipelines.items()):
        line = f"pipeline {name}: model {p['version']} (update {p['counter'] or 'none: the configuration names it'})"
        if p.get("previous"):
            line += f", rollback to {p['previous']}"
        out.append(line)
        shadow = p.get("shadow")
        if shadow:
            rate = "-" if shadow["alert_rate"] is None else f"{shadow['alert_rate']:.1%}"
            agree = "-" if shadow["agreement"] is None else f"{shadow['agreement']:.1%}"
            out.append(
                f"  candidate {p['candidate']} in shadow: {shadow['windows']} of {shadow['needed']} windows, "
                f"alert rate {rate}, agreement {agree}, errors {shadow['errors']}"
            )
    return out


def _offline_status(state_dir: Path) -> dict[str, Any]:
    from gateway.updates.models import read_active

    out = {}
    for name, entry in read_active(state_dir).items():
        cur, prev = entry.get("current") or {}, entry.get("previous")
        out[name] = {
            "version": cur.get("version"),
            "counter": cur.get("counter", 0),
            "previous": prev.get("version") if isinstance(prev, dict) else None,
            "candidate": (entry.get("candidate") or {}).get("version"),
            "shadow": None,
        }
    return out


def cmd_model(args: argparse.Namespace) -> int:
    from gateway.control_socket import ControlSocketError

    cfg, updates = updates_config(args.config)
    body: dict[str, Any] = {"op": f"model.{args.action}"}
    if args.action == "rollback":
        body["pipeline"] = args.pipeline
    try:
        res = ask(cfg, body, TIMEOUT_S)
    except ControlSocketError as exc:
        if args.action != "status":
            print(f"edgeline-gateway model {args.action}: {exc}", file=sys.stderr)
            return NOT_RUNNING
        print(f"edgeline-gateway model status: {exc}; showing what active.json holds", file=sys.stderr)
        res = {"ok": True, "pipelines": _offline_status(updates.state_dir)}
    return show_answer(
        res,
        args,
        "model",
        lambda r: "\n".join(status_lines(r["pipelines"])) or "no pipeline",
        lambda r: f"pipeline {r['pipeline']}: model {r['version']} (was {r['replaced']})",
    )


def setup(p: argparse.ArgumentParser, config_arg: Callable[[argparse.ArgumentParser], None]) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    a = sub.add_parser("status", help="each pipeline's model, its rollback and its candidate in shadow")
    config_arg(a)
    a.add_argument("--json", action="store_true", help="print the gateway's answer as JSON")
    a = sub.add_parser("rollback", help="back to the model a pipeline ran before the current one")
    config_arg(a)
    a.add_argument("pipeline")
    a.add_argument("--json", action="store_true", help="print the gateway's answer as JSON")
