"""``edgeline-gateway calibration status|reset``: per-device calibration ([[pipelines]] calibrate,
gateway/calibration.py) of the running gateway, through its control socket.

status [--device D] [--pipeline P]   each calibrating pipeline's devices: phase, windows counted
                                     of those needed, threshold learned beside the model's; without
                                     a running gateway, what data_dir/calibration/ holds
reset DEVICE [--pipeline P]          the device calibrates again from its next window (in every
                                     calibrating pipeline, or in P)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway import config as config_mod
from gateway.calibration import CALIBRATED, DIR_NAME, FORMAT
from gateway.updatecmd import ask, show_answer

NOT_RUNNING = 2
TIMEOUT_S = 15.0


def _when(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def status_lines(pipelines: dict[str, Any]) -> list[str]:
    """The ``calibration.status`` answer (or the offline equivalent) as lines for people."""
    out = []
    for name, p in sorted(pipelines.items()):
        phases = ", ".join(f"{k} {v}" for k, v in (p.get("phases") or {}).items())
        out.append(
            f"pipeline {name}: model {p['model_version']} (sha256 {p['model_sha256'][:12]}), "
            f"{p['windows']} windows a phase, false-alarm rate {p['false_alarm_rate']:g}, "
            f"normalise {'on' if p['normalise'] else 'off'}"
            + (f"; model threshold {p['model_threshold']:.6g}" if p.get("model_threshold") is not None else "")
            + (f"; devices: {phases}" if phases else "")
        )
        for device, d in sorted((p.get("devices") or {}).items()):
            if d["phase"] == CALIBRATED:
                what = f"threshold {d['threshold']:.6g} since {_when(d['calibrated_at'])}"
            elif d.get("windows") is None:
                what = "in progress (the running gateway counts its windows)"
            else:
                what = f"{d['windows']} of {d['needed']} windows"
            out.append(f"  {device:<20} {d['phase']:<10} {what}")
        if p.get("devices_omitted"):
            out.append(f"  ... and {p['devices_omitted']} more device(s)")
    return out


def offline_status(data_dir: Path) -> dict[str, Any]:
    """What the state files hold, one entry per file (pipeline and model sha256)."""
    out: dict[str, Any] = {}
    for path in sorted((data_dir / DIR_NAME).glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            continue
        s, m = data["settings"], data["model"]
        devices = {
            d: {
                "phase": v["phase"],
                "threshold": v.get("threshold"),
                "calibrated_at": v.get("calibrated_at"),
                "windows": None,
            }
            for d, v in (data.get("devices") or {}).items()
        }
        key = f"{data['pipeline']} ({path.name})"
        out[key] = {**s, "model_version": m["version"], "model_sha256": m["sha256"], "model_threshold": None}
        out[key]["devices"] = devices
    return out


def cmd_calibration(args: argparse.Namespace) -> int:
    from gateway.control_socket import ControlSocketError

    cfg = config_mod.load(args.config)
    body: dict[str, Any] = {"op": f"calibration.{args.action}", "device": args.device}
    if args.pipeline:
        body["pipeline"] = args.pipeline
    try:
        res = ask(cfg, body, TIMEOUT_S)
    except ControlSocketError as exc:
        if args.action != "status":
            print(f"edgeline-gateway calibration {args.action}: {exc}", file=sys.stderr)
            return NOT_RUNNING
        print(f"edgeline-gateway calibration status: {exc}; showing what the state files hold", file=sys.stderr)
        pipes = offline_status(Path(cfg.gateway.data_dir))
        if args.device:
            for p in pipes.values():
                p["devices"] = {d: v for d, v in p["devices"].items() if d == args.device}
        res = {"ok": True, "pipelines": pipes}
    return show_answer(
        res,
        args,
        "calibration",
        lambda r: "\n".join(status_lines(r["pipelines"])) or "no pipeline calibrates ([[pipelines]] calibrate)",
        lambda r: f"device {r['device']}: calibrates again in {', '.join(r['pipelines'])}",
    )


def setup(p: argparse.ArgumentParser, config_arg: Callable[[argparse.ArgumentParser], None]) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    a = sub.add_parser("status", help="each device's calibration phase, progress and threshold")
    config_arg(a)
    a.add_argument("--device", help="only this device")
    a.add_argument("--pipeline", help="only this pipeline")
    a.add_argument("--json", action="store_true", help="print the gateway's answer as JSON")
    a = sub.add_parser("reset", help="calibrate a device again from its next window")
    config_arg(a)
    a.add_argument("device")
    a.add_argument("--pipeline", help="only in this pipeline (default: every pipeline that calibrates)")
    a.add_argument("--json", action="store_true", help="print the gateway's answer as JSON")
