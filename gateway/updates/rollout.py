"""Staged firmware rollout over the fleet (docs/updates.md): the UpdateService's handler of
kind "firmware", and ``edgeline-gateway ota status|pause|resume|abort``.

A verified firmware bundle names its rollout policy (``firmware.rollout``): the devices it is
for (globs over device ids), canary ids, the wave size and the highest failure rate. The
devices the registry knows that match, canaries first, are split into waves; a wave starts
when the one before it has finished, each device with a transfer of its own
(gateway/updates/fwota.py). A device is updated only while the registry says it is online; one
that stays offline for ``confirm_timeout_s`` after its wave started fails ("offline"). A device
that already runs the release's version is ``current`` and counts neither way. Once
failed / (confirmed + failed) is above ``max_failure_rate`` the rollout is ``halted``: no
further device starts (those in flight finish); ``ota resume`` overrides that.

Everything is kept in ``<state_dir>/rollout.json`` (written with fsync and os.replace at each
transition) and the release's files in ``<state_dir>/firmware/<bundle_id>/``, so a restarted
gateway resumes: a device that was transferring gets its BEGIN again (the board answers with
the bytes it holds), one that had switched is waited for until its deadline.

Threads: install, on_event and tick run on the processing thread (they send CMDs); the
control socket's thread only reads the status and sets pause/resume/abort under the lock
(the ABORT CMDs go out at the next tick).
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from gateway.durable import write_json_durably
from gateway.errors import GatewayError
from gateway.updates.events import UpdateEvents
from gateway.updates.fwota import ACTIVE, FINAL, DeviceKeyError, FirmwareImage, Send, Transfer, read_device_key
from gateway.updates.handler import FirmwareBundleLike
from gateway.updates.settings import UpdatesSettings
from shared_protocol.ota import read_answer

log = logging.getLogger(__name__)

STATE_FILE = "rollout.json"
FIRMWARE_DIR = "firmware"
KIND = "firmware"
#: rollout states; a finished rollout (done, aborted) stays in the file for the status
RUNNING, PAUSED, HALTED, ABORTED, DONE = "running", "paused", "halted", "aborted", "done"


class RolloutError(GatewayError):
    """A firmware bundle whose rollout cannot be run (the message names the key and the fix)."""


class DeviceLike(Protocol):
    @property
    def online(self) -> bool: ...
    @property
    def fw_version(self) -> str | None: ...
    @property
    def birth_at(self) -> float | None: ...


@dataclass(frozen=True)
class Policy:
    devices: tuple[str, ...]
    canary: tuple[str, ...]
    wave: int
    max_failure_rate: float

    @classmethod
    def parse(cls, raw: Any) -> Policy:
        """From a bundle's ``firmware.rollout``; RolloutError names the key."""
        if not isinstance(raw, dict):
            raise RolloutError("firmware.rollout: missing or not an object: pack the bundle with a rollout policy")

        def names(key: str, default: tuple[str, ...]) -> tuple[str, ...]:
            v = raw.get(key, list(default))
            if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
                raise RolloutError(f"firmware.rollout.{key}: expected a list of device ids or globs, got {v!r}")
            return tuple(v)

        wave = raw.get("wave", 10)
        if isinstance(wave, bool) or not isinstance(wave, int) or wave < 1:
            raise RolloutError(f"firmware.rollout.wave: expected a whole number of devices >= 1, got {wave!r}")
        rate = raw.get("max_failure_rate", 0.0)
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0:
            raise RolloutError(f"firmware.rollout.max_failure_rate: expected 0.0 .. 1.0, got {rate!r}")
        return cls(names("devices", ("*",)), names("canary", ()), wave, float(rate))

    def waves(self, known: Iterable[str]) -> list[list[str]]:
        """Canaries first (the ids named, known or not yet), then the other matching devices
        the registry knows, sorted, in waves of ``wave``."""
        canary = sorted(set(self.canary))
        rest = sorted(d for d in set(known) - set(canary) if any(fnmatch.fnmatchcase(d, g) for g in self.devices))
        out = [canary] if canary else []
        out += [rest[i : i + self.wave] for i in range(0, len(rest), self.wave)]
        return out


@dataclass
class Rollout:
    name: str
    bundle_id: str
    version: str
    counter: int
    arch: str
    files: tuple[tuple[str, int, str], ...]
    policy: Policy
    waves: list[list[str]]
    state: str = RUNNING
    wave: int = 0
    started_at: float = 0.0
    reason: str | None = None
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)  # device -> facts (persisted)
    transfers: dict[str, Transfer] = field(default_factory=dict)  # in memory: the devices in flight
    abort_pending: bool = False

    def image(self, root: Path) -> FirmwareImage:
        return FirmwareImage(self.version, self.counter, self.arch, self.files, root)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for facts in self.devices.values():
            out[facts["state"]] = out.get(facts["state"], 0) + 1
        return out

    def failure_rate(self) -> float:
        c = self.counts()
        finished = c.get("confirmed", 0) + c.get("failed", 0)
        return c.get("failed", 0) / finished if finished else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "bundle_id": self.bundle_id,
            "version": self.version,
            "counter": self.counter,
            "arch": self.arch,
            "files": [list(f) for f in self.files],
            "policy": {
                "devices": list(self.policy.devices),
                "canary": list(self.policy.canary),
                "wave": self.policy.wave,
                "max_failure_rate": self.policy.max_failure_rate,
            },
            "waves": self.waves,
            "state": self.state,
            "wave": self.wave,
            "started_at": self.started_at,
            "reason": self.reason,
            "abort_pending": self.abort_pending,
            "devices": self.devices,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Rollout:
        return cls(
            name=str(d["name"]),
            bundle_id=str(d["bundle_id"]),
            version=str(d["version"]),
            counter=int(d["counter"]),
            arch=str(d["arch"]),
            files=tuple((str(p), int(s), str(h)) for p, s, h in d["files"]),
            policy=Policy.parse(d["policy"]),
            waves=[[str(x) for x in w] for w in d["waves"]],
            state=str(d["state"]),
            wave=int(d["wave"]),
            started_at=float(d["started_at"]),
            reason=d.get("reason"),
            devices={str(k): dict(v) for k, v in d["devices"].items()},
            abort_pending=bool(d.get("abort_pending", False)),
        )


def _label(state: str) -> str:
    """A device's state as UpdateEvents records it."""
    return "transferring" if state == "begin" else state


class FirmwareRollouts:
    """Every firmware rollout of this gateway (one per bundle name, i.e. per architecture)."""

    def __init__(
        self,
        settings: UpdatesSettings,
        events: UpdateEvents,
        devices: Callable[[], Mapping[str, DeviceLike]],
        send: Send,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.fw = settings.firmware
        self.events = events
        self.devices = devices
        self.send = send
        self.clock = clock
        self.path = settings.state_dir / STATE_FILE
        self._lock = threading.RLock()
        self._data: dict[str, bytes] = {}  # bundle_id -> the files' bytes in stream order
        self.rollouts: dict[str, Rollout] = self._load()
        self._resumed = False

    # ------------------------------------------------------------------ persistence
    def _load(self) -> dict[str, Rollout]:
        try:
            raw = json.loads(self.path.read_text())
            return {name: Rollout.from_json(r) for name, r in raw["rollouts"].items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError, GatewayError) as exc:
            log.error("%s cannot be read (%r): no rollout is resumed; fix or delete the file", self.path, exc)
            return {}

    def _save(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_json_durably(self.path, {"rollouts": {n: r.to_json() for n, r in self.rollouts.items()}})

    def _root(self, r: Rollout) -> Path:
        return self.settings.state_dir / FIRMWARE_DIR / r.bundle_id

    def _prune(self) -> None:
        """Remove the files of releases no rollout names any more (one per bundle name is kept)."""
        keep = {r.bundle_id for r in self.rollouts.values()}
        for old in set(self._data) - keep:
            del self._data[old]
        with contextlib.suppress(FileNotFoundError):
            for d in (self.settings.state_dir / FIRMWARE_DIR).iterdir():
                if d.name not in keep:
                    shutil.rmtree(d, ignore_errors=True)

    # ------------------------------------------------------------------ handler (processing thread)
    def install(self, bundle: FirmwareBundleLike, staged: Path) -> None:
        """A verified firmware bundle, its files in ``staged``: start its rollout (replacing
        an unfinished one of the same name)."""
        fw = bundle.firmware
        if not isinstance(fw, dict):
            raise RolloutError(f"bundle {bundle.name} {bundle.version}: no firmware section: not a firmware bundle")
        policy = Policy.parse(fw.get("rollout"))
        arch, fw_version = fw.get("arch"), fw.get("fw_version")
        if not isinstance(arch, str) or not isinstance(fw_version, str) or not fw_version:
            raise RolloutError(f"bundle {bundle.name} {bundle.version}: firmware.arch and firmware.fw_version needed")
        files = tuple((f.path, f.size, f.sha256) for f in bundle.files)
        now = self.clock()
        with self._lock:
            dest = self.settings.state_dir / FIRMWARE_DIR / bundle.bundle_id
            if not dest.exists():
                tmp = dest.with_name(dest.name + ".tmp")
                shutil.rmtree(tmp, ignore_errors=True)
                shutil.copytree(staged, tmp)
                os.replace(tmp, dest)
            old = self.rollouts.get(bundle.name)
            if old is not None and old.state in (RUNNING, PAUSED, HALTED):
                self._abort(old, f"replaced by release {fw_version}")
            waves = policy.waves(self.devices().keys())
            r = Rollout(bundle.name, bundle.bundle_id, fw_version, bundle.counter, arch, files, policy, waves)
            r.started_at = now
            for wave in waves:
                for d in wave:
                    r.devices[d] = {"state": "pending", "reason": None, "since": None}
            self.rollouts[bundle.name] = r
            self._resumed = True  # a fresh rollout has nothing to resume
            self._save()
            self._prune()
            self.events.record(
                KIND,
                r.name,
                "rollout",
                version=fw_version,
                counter=bundle.counter,
                arch=arch,
                devices=len(r.devices),
                waves=[len(w) for w in waves],
            )
            self._advance(r, now)

    # ------------------------------------------------------------------ processing thread
    def on_event(self, device: str, frame: Any, received: float) -> None:
        """An EVENT from a device (control stage): an OTA answer goes to its transfer."""
        answer = read_answer(frame.fields.get("events"))
        if answer is None:
            return
        now = self.clock()
        with self._lock:
            for r in self.rollouts.values():
                t = r.transfers.get(device)
                if t is not None and t.transfer_id == answer["transfer"]:
                    t.on_answer(answer, now)
                    self._sync(r, device, now)
                    self._advance(r, now)
                    return
        log.debug("device %s: OTA answer for transfer %s, not one in flight", device, answer["transfer"])

    def tick(self, now: float | None = None) -> None:
        """Timeouts, BIRTHs seen in the registry, waves; cheap when nothing runs."""
        if not self.rollouts:
            return
        now = self.clock() if now is None else now
        with self._lock:
            if not self._resumed:
                self._resumed = True
                for r in self.rollouts.values():
                    self._resume(r, now)
            known = self.devices()
            for r in self.rollouts.values():
                if r.abort_pending:
                    self._abort(r, r.reason or "aborted by the operator (ota abort)")
                for device, t in list(r.transfers.items()):
                    info = known.get(device)
                    if info is not None:
                        t.on_birth(info.fw_version, info.birth_at or 0.0)
                    t.tick(now)
                    self._sync(r, device, now)
                self._advance(r, now)

    def _resume(self, r: Rollout, now: float) -> None:
        if r.state in (DONE, ABORTED):
            return
        known = self.devices()
        for device, facts in r.devices.items():
            if facts["state"] in ACTIVE:
                t = self._transfer(r, device, transfer_id=facts.get("transfer"))
                if t is None:
                    continue
                state = facts["state"]
                info = known.get(device)
                if state in ("begin", "transferring") and info is not None and info.fw_version == r.version:
                    state = "trial"  # it switched while the gateway was down: no BEGIN (it would leave the trial)
                t.resume(
                    state,
                    now,
                    switched_at=float(facts.get("switched_at") or now),
                    deadline=float(facts.get("deadline") or now + self.fw.confirm_timeout_s),
                )
                self._sync(r, device, now)
        log.info("firmware rollout %s %s resumed (%s)", r.name, r.version, r.state)

    def _transfer(self, r: Rollout, device: str, *, transfer_id: int | None = None) -> Transfer | None:
        """A new transfer for device (None, and the device failed, without its key)."""
        try:
            key = read_device_key(self.fw.device_keys_dir, device)
        except DeviceKeyError as exc:
            self._finish(r, device, "failed", str(exc), code="no_key")
            return None
        data = self._data.get(r.bundle_id)
        if data is None:
            data = self._data[r.bundle_id] = r.image(self._root(r)).data()
        t = Transfer(
            device, r.image(self._root(r)), data, key, settings=self.fw, send=self.send, transfer_id=transfer_id
        )
        r.transfers[device] = t
        return t

    def _advance(self, r: Rollout, now: float) -> None:
        """Start the devices of the current wave; move to the next wave or finish."""
        known = self.devices()
        while r.state == RUNNING and r.wave < len(r.waves):
            for device in r.waves[r.wave]:
                facts = r.devices[device]
                if facts["state"] != "pending":
                    continue
                info = known.get(device)
                if info is not None and info.fw_version == r.version:
                    self._finish(r, device, "current", f"already runs {r.version}")
                elif info is not None and info.online:
                    t = self._transfer(r, device)
                    if t is not None:
                        t.start(now)
                        self._sync(r, device, now)
                elif facts.get("since") is None:
                    facts["since"] = now
                    facts["reason"] = "waiting for the device to come online"
                    self._save()
                elif now - float(facts["since"]) > self.fw.confirm_timeout_s:
                    self._finish(r, device, "failed", f"offline for {self.fw.confirm_timeout_s:g} s", code="offline")
                if r.state != RUNNING:
                    return
            if any(r.devices[d]["state"] not in FINAL for d in r.waves[r.wave]):
                return
            r.wave += 1
            self._save()
        if r.state == RUNNING and r.wave >= len(r.waves):
            r.state = DONE
            self._save()
            self.events.record(KIND, r.name, "done", version=r.version, counts=r.counts())

    def _sync(self, r: Rollout, device: str, now: float) -> None:
        """Take a transfer's state into the rollout; record and save a transition."""
        t = r.transfers.get(device)
        if t is None:
            return
        facts = r.devices[device]
        before = facts["state"]
        facts.update(t.facts())
        if t.state in FINAL:
            del r.transfers[device]
            facts["state"] = before  # _finish records it
            self._finish(r, device, t.state, t.reason, code=t.code)
            return
        if t.state != before:
            self._save()
            if _label(t.state) != _label(before):  # begin and transferring are one "transferring"
                self.events.record(
                    KIND,
                    r.name,
                    _label(t.state),
                    device=device,
                    version=r.version,
                    transfer=t.transfer_id,
                    total=t.total,
                )

    def _finish(self, r: Rollout, device: str, state: str, reason: str | None, *, code: str = "") -> None:
        """A device's final state; ``code``: why it failed, in a word (the board's result name,
        no_key, offline, no_progress, not_confirmed, aborted)."""
        facts = r.devices[device]
        r.transfers.pop(device, None)
        facts["state"] = state
        facts["reason"] = reason
        extra = {"code": code} if code else {}
        if code:
            facts["code"] = code
        self._save()
        self.events.record(KIND, r.name, state, reason=reason, device=device, version=r.version, **extra)
        if state == "failed" and r.state in (RUNNING, PAUSED) and r.failure_rate() > r.policy.max_failure_rate:
            r.state = HALTED
            r.reason = (
                f"failure rate {r.failure_rate():.2f} above max_failure_rate {r.policy.max_failure_rate:g} "
                f"(last: {device}: {reason}); `edgeline-gateway ota resume` goes on, `ota abort` stops"
            )
            self._save()
            self.events.record(KIND, r.name, "halted", reason=r.reason, version=r.version, counts=r.counts())

    def _abort(self, r: Rollout, reason: str) -> None:
        """Stop: ABORT to the devices still receiving (a device that switched already goes on
        to confirm or roll back on its own, and is still followed)."""
        r.state = ABORTED
        r.reason = reason
        r.abort_pending = False
        for device, t in list(r.transfers.items()):
            if t.state in ("begin", "transferring"):
                t.abort(f"aborted: {reason}")
                self._sync(r, device, self.clock())
        self._save()
        self.events.record(KIND, r.name, "aborted", reason=reason, version=r.version, counts=r.counts())

    # ------------------------------------------------------------------ control socket (its thread)
    OPS = ("ota.status", "ota.pause", "ota.resume", "ota.abort")

    def handle(self, body: dict[str, Any]) -> dict[str, Any]:
        op = body.get("op")
        name = body.get("name")
        with self._lock:
            if op == "ota.status":
                return {"ok": True, **self.status()}
            if name is None and len(self.rollouts) == 1:
                name = next(iter(self.rollouts))
            r = self.rollouts.get(name) if isinstance(name, str) else None
            if r is None:
                have = ", ".join(sorted(self.rollouts)) or "none"
                return {
                    "ok": False,
                    "reason": "unknown_rollout",
                    "message": f"no firmware rollout {name!r} (this gateway's: {have}); name one with --name",
                }
            if r.state in (DONE, ABORTED):
                return {"ok": False, "reason": "finished", "message": f"rollout {r.name} is {r.state} already"}
            if op == "ota.pause":
                r.state = PAUSED
                r.reason = "paused by the operator (ota pause)"
            elif op == "ota.resume":
                r.state = RUNNING
                r.reason = None
            elif op == "ota.abort":
                r.abort_pending = True  # the ABORT CMDs go out from the processing thread
                r.reason = "aborted by the operator (ota abort)"
            else:
                return {"ok": False, "reason": "bad_request", "message": f"unknown op {op!r}"}
            self._save()
            if op != "ota.abort":
                self.events.record(KIND, r.name, r.state, reason=r.reason, version=r.version)
            return {"ok": True, "name": r.name, "state": "aborting" if op == "ota.abort" else r.state}

    def status(self) -> dict[str, Any]:
        """The ``ota`` section of the status."""
        with self._lock:
            return {
                "rollouts": {
                    n: {
                        "state": r.state,
                        "reason": r.reason,
                        "version": r.version,
                        "counter": r.counter,
                        "arch": r.arch,
                        "wave": r.wave,
                        "waves": [len(w) for w in r.waves],
                        "canary": list(r.policy.canary),  # the first wave when not empty
                        "counts": r.counts(),
                        "devices": {
                            d: {k: v for k, v in f.items() if k not in ("switched_at", "deadline", "since")}
                            for d, f in r.devices.items()
                        },
                    }
                    for n, r in self.rollouts.items()
                }
            }
