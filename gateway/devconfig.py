"""Remote device configuration, the gateway's side (``edgeline-gateway device-config``).

A request comes from the control socket (gateway/control_socket.py, its own thread) and
is handed to the processing thread, which owns the registry, the outbox and the alert
states: ``serve`` checks it (known device, online, BIRTH seen, settable keys and ranges
from shared_protocol/config_change.py, pipelines for thresholds), sends the change as a
CMD_CONFIG and keeps it pending until the device's acknowledgement (an EVENT, read by the
control stage, ``on_ack``) or its deadline. The socket thread only waits for the answer.

Thresholds are the gateway's own (``Gateway.alerts``): set at once, kept in
data_dir/device_config.json with the configuration each device last acknowledged, and
set again at every start. Nothing is sent to a device for them.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import math
import os
import queue
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared_protocol import CMD_CONFIG
from shared_protocol.config_change import (
    MAX_CHANGE_ID,
    REFUSED_MIN,
    RESULT_NAMES,
    change_arg,
    check_change,
    keys,
    read_ack,
)

if TYPE_CHECKING:
    from gateway.pipeline import Gateway

log = logging.getLogger(__name__)

STATE_FILE = "device_config.json"
DEFAULT_TIMEOUT_S = 10.0
MAX_TIMEOUT_S = 300.0
PICKUP_S = 5.0  # the processing thread takes a request within this (it loops every 0.1 s)
THRESHOLD_LIMIT = 1e30  # as pipelines[].threshold in gateway.toml

# What a device's refusal (shared_protocol/config_change.py RESULT_NAMES) means, and what to do
DEVICE_REFUSALS = {
    "unknown_key": "its firmware cannot change one of these keys (an older firmware?)",
    "out_of_range": "a value is outside the range its firmware takes",
    "invalid": "its configuration with this change fails the board's own checks (e.g. a sample rate its "
    "sensor cannot make, or buffers beyond the board's memory budget); the device's log names the key",
    "storage": "it could not write its configuration file (flash full or read-only?)",
    "malformed": "the change did not reach it intact; try again",
}


@dataclass
class Request:
    """One request from the control socket, answered by the processing thread."""

    body: dict[str, Any]
    done: threading.Event = field(default_factory=threading.Event)
    response: dict[str, Any] = field(default_factory=dict)

    def answer(self, response: dict[str, Any]) -> None:
        self.response = response
        self.done.set()


@dataclass
class Pending:
    device: str
    change_id: int
    changes: dict[str, Any]
    deadline: float
    request: Request
    thresholds: dict[str, Any]


class Refused(Exception):
    """A request the gateway refuses before sending anything; reason is a short code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _newer(frame: tuple[int, int], last: tuple[int, int] | None) -> bool:
    """(boot, seq) after last: a newer boot by serial-number arithmetic, else a higher seq."""
    if last is None:
        return True
    if frame[0] != last[0]:
        return 0 < (frame[0] - last[0]) % 65536 < 32768
    return frame[1] > last[1]


class DeviceConfig:
    def __init__(self, gateway: Gateway, data_dir: Path) -> None:
        self.gateway = gateway
        self.path = data_dir / STATE_FILE
        self._requests: queue.SimpleQueue[Request] = queue.SimpleQueue()
        self._pending: dict[int, Pending] = {}
        self._last_ack: dict[str, tuple[int, int]] = {}
        self.counts: dict[str, int] = {}
        self.state = self._load()

    # ------------------------------------------------------------------ saved state
    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            data = {}
        except (OSError, ValueError) as exc:
            log.error("%s cannot be read (%s): starting without saved thresholds and configs", self.path, exc)
            data = {}
        if not isinstance(data, dict):
            data = {}
        return {"thresholds": dict(data.get("thresholds") or {}), "reported": dict(data.get("reported") or {})}

    def _save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=1, sort_keys=True))
        os.replace(tmp, self.path)

    def restore(self) -> None:
        """At start (processing thread): set the saved thresholds again and show each
        device's last acknowledged configuration."""
        try:
            for device, per in self.state["thresholds"].items():
                for pipeline, value in per.items():
                    self.gateway.alerts.set_threshold(device, pipeline, float(value))
            for device, rep in self.state["reported"].items():
                self.gateway.live.set_config(device, dict(rep["config"]), float(rep["at"]))
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            log.error("%s holds an entry this gateway cannot read (%r): fix or delete the file", self.path, exc)

    def _count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def status(self) -> dict[str, Any]:
        return {"pending": len(self._pending), **self.counts}

    # ------------------------------------------------------------------ socket thread
    def handle(self, body: dict[str, Any]) -> dict[str, Any]:
        """Answer one request (control socket thread): queued for the processing thread,
        then waited for up to its timeout (plus the time to pick it up)."""
        req = Request(body)
        timeout = body.get("timeout_s", DEFAULT_TIMEOUT_S)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= MAX_TIMEOUT_S:
            return {
                "ok": False,
                "by": "gateway",
                "reason": "bad_request",
                "message": f"--timeout: 0..{MAX_TIMEOUT_S:g} s",
            }
        self._requests.put(req)
        if not req.done.wait(float(timeout) + PICKUP_S):
            return {"ok": False, "by": "gateway", "reason": "busy", "message": "the gateway did not answer in time"}
        return req.response

    # ------------------------------------------------------------------ processing thread
    def serve(self, now: float) -> None:
        """Take the requests waiting, and expire changes past their deadline. Cheap: call
        it on every turn of the processing loop."""
        while True:
            try:
                req = self._requests.get_nowait()
            except queue.Empty:
                break
            try:
                self._serve(req, now)
            except Refused as exc:
                self._count("refused_by_gateway")
                self._count("refused:" + exc.reason)
                log.info("device-config %s refused: %s", req.body.get("device"), exc)
                req.answer({"ok": False, "by": "gateway", "reason": exc.reason, "message": str(exc)})
        for cid, p in list(self._pending.items()):
            if now >= p.deadline:
                del self._pending[cid]
                self._count("timeouts")
                log.warning("device %s: no acknowledgement of config change %d", p.device, cid)
                p.request.answer(
                    {
                        "ok": False,
                        "by": "device",
                        "reason": "timeout",
                        "change_id": cid,
                        "thresholds": p.thresholds,
                        "message": f"no acknowledgement from {p.device} within the timeout: it may still apply the "
                        f"change when it gets it; check with --show",
                    }
                )

    def _serve(self, req: Request, now: float) -> None:
        body = req.body
        op = body.get("op")
        device = body.get("device")
        if not isinstance(device, str) or not device:
            raise Refused("bad_request", "a device id is needed")
        info = self.gateway.registry.devices.get(device)
        if info is None:
            raise Refused(
                "unknown_device",
                f"unknown device {device!r}: this gateway has never heard from it "
                "(`edgeline-gateway status` lists the devices it knows)",
            )
        if op == "show":
            req.answer(self._show(device))
            return
        if op != "set":
            raise Refused("bad_request", f"unknown op {op!r} (set or show)")
        changes = body.get("set") or {}
        thresholds = body.get("thresholds") or {}
        if not isinstance(changes, dict) or not isinstance(thresholds, dict):
            raise Refused("bad_request", "'set' and 'thresholds' must be objects")
        if not changes and not thresholds:
            raise Refused("nothing_to_do", "nothing to change: give --set KEY=VALUE or --threshold PIPELINE=VALUE")
        if changes:
            self._check_change(device, changes)
        self._check_thresholds(device, thresholds)
        self._count("requests")
        applied = self._set_thresholds(device, thresholds)
        if not changes:
            self._count("applied")
            req.answer({"ok": True, "by": "gateway", "result": "applied", "thresholds": applied})
            return
        cid = secrets.randbelow(MAX_CHANGE_ID) + 1
        self.gateway.outbox.cmd(device, CMD_CONFIG, change_arg(cid, changes))
        self._count("sent")
        log.info("device %s: config change %d sent: %s", device, cid, changes)
        timeout = float(body.get("timeout_s", DEFAULT_TIMEOUT_S))
        self._pending[cid] = Pending(device, cid, changes, now + timeout, req, applied)

    def _check_change(self, device: str, changes: dict[str, Any]) -> None:
        err = check_change(changes)
        if err is not None:
            raise Refused(RESULT_NAMES[err[0]], err[1])
        info = self.gateway.registry.devices[device]
        if not info.channels:
            raise Refused(
                "no_birth", f"device {device} has not sent a BIRTH to this gateway yet: its channels are unknown"
            )
        if "sample_rate_hz" in changes and not any(float(c[5]) > 0 for c in info.channels):
            raise Refused("no_sampled_channels", f"device {device} has only event channels: it has no sample rate")
        if not info.online:
            raise Refused(
                "offline",
                f"device {device} is offline ({info.state_reason}): it would not get the change; "
                "try again when it is back",
            )

    def _pipelines(self) -> dict[str, Any]:
        return {p.name: p for p in self.gateway.config.pipelines}

    def _check_thresholds(self, device: str, thresholds: dict[str, Any]) -> None:
        pipes = self._pipelines()
        for name, value in thresholds.items():
            p = pipes.get(name)
            if p is None:
                have = ", ".join(sorted(pipes)) or "none"
                raise Refused("unknown_pipeline", f"unknown pipeline {name!r} (this gateway's pipelines: {have})")
            if not any(fnmatch.fnmatchcase(device, g) for g in p.devices):
                raise Refused(
                    "pipeline_not_for_device",
                    f"pipeline {name} does not score device {device} (its devices: {', '.join(p.devices)})",
                )
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or abs(value) > THRESHOLD_LIMIT
            ):
                raise Refused("out_of_range", f"threshold of {name} must be a finite number or default, got {value!r}")

    def _set_thresholds(self, device: str, thresholds: dict[str, Any]) -> dict[str, Any]:
        """Set (None: drop) per-device thresholds, save them; returns those now in force."""
        if not thresholds:
            return {}
        per = self.state["thresholds"].setdefault(device, {})
        for name, value in thresholds.items():
            self.gateway.alerts.set_threshold(device, name, None if value is None else float(value))
            if value is None:
                per.pop(name, None)
            else:
                per[name] = float(value)
            log.info("device %s: threshold of pipeline %s set to %s", device, name, value)
        if not per:
            del self.state["thresholds"][device]
        self._save()
        return {name: self._threshold(device, name) for name in thresholds}

    def _threshold(self, device: str, pipeline: str) -> dict[str, Any]:
        override = self.state["thresholds"].get(device, {}).get(pipeline)
        default = next((s.spec.threshold for s in self.gateway.stages if s.name == pipeline), None)
        # learned by per-device calibration (gateway/calibration.py): in force unless overridden
        calibrated = self.gateway.alerts.calibrated().get((device, pipeline))
        own = calibrated if calibrated is not None else default
        return {
            "override": override,
            "default": default,
            "calibrated": calibrated,
            "in_force": override if override is not None else own,
        }

    def _show(self, device: str) -> dict[str, Any]:
        info = self.gateway.registry.devices[device]
        rates = sorted({float(c[5]) for c in info.channels or () if float(c[5]) > 0})
        pipes = [
            p.name for p in self.gateway.config.pipelines if any(fnmatch.fnmatchcase(device, g) for g in p.devices)
        ]
        return {
            "ok": True,
            "device": device,
            "online": info.online,
            "boot": info.boot,
            "rates_hz": rates,  # from its latest BIRTH
            "reported": self.state["reported"].get(device),
            "thresholds": {name: self._threshold(device, name) for name in pipes},
            "settable": keys(),
        }

    def on_ack(self, device: str, frame: Any, received: float) -> None:
        """An EVENT from a device (control stage, processing thread): a configuration
        acknowledgement resolves its pending change and updates what the device reported."""
        ack = read_ack(frame.fields["events"])
        if ack is None:
            return
        key = (int(frame.boot), int(frame.seq))
        if _newer(key, self._last_ack.get(device)):
            self._last_ack[device] = key
            self.state["reported"][device] = {
                "config": ack["config"],
                "at": received,
                "change_id": ack["id"],
                "result": ack["result"],
            }
            self._save()
            self.gateway.live.set_config(device, ack["config"], received)
        p = self._pending.get(ack["id"])
        if p is None or p.device != device:
            return  # a late or repeated acknowledgement: its change was answered already
        del self._pending[ack["id"]]
        ok = 0 <= ack["code"] < REFUSED_MIN
        self._count("applied" if ok else "refused_by_device")
        log.info("device %s: config change %d %s: %s", device, ack["id"], ack["result"], ack["config"])
        p.request.answer(
            {
                "ok": ok,
                "by": "device",
                "result": ack["result"],
                "reason": None if ok else ack["result"],
                "change_id": ack["id"],
                "config": ack["config"],
                "thresholds": p.thresholds,
                "message": "applied"
                if ok
                else f"refused by the device ({ack['result']}): "
                + DEVICE_REFUSALS.get(ack["result"], "see the device's log"),
            }
        )
