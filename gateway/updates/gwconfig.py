"""Gateway configuration updates: a verified ``config`` bundle (entry ``gateway.toml``) replaces
the running configuration file only after ``edgeline-gateway check-config`` passes on it, and
the gateway then restarts into it on trial; a trial that does not become healthy is rolled back.

Install (processing thread):
  1. the new file is written beside the running one (``<config>.new``, so relative paths mean
     the same) and checked: ``check-config`` in a child process (the same checks, models loaded)
     and it must keep ``[updates]`` enabled with the same ``state_dir`` (or the trial and every
     later update would be lost); refused -> nothing changed;
  2. the running file is kept as ``<config>.prev`` (fsync);
  3. the trial marker ``<state_dir>/config-trial.json`` is written (fsync + os.replace), with
     the new file's sha256: a marker whose file never replaced the configuration is ignored;
  4. ``<config>.new`` replaces the configuration (os.replace, directory fsync);
  5. the gateway stops cleanly and re-executes its own command line.

At start (:func:`start_config`, before anything is opened): a trial that already used
``[updates.config] max_starts`` starts without becoming healthy, or a new configuration that
does not load, is rolled back (``.prev`` restored) and the gateway starts on the old one. While
running: healthy (local broker subscribed, and the cloud link connected with ``[forward]``)
within ``health_timeout_s`` confirms the trial; else it is rolled back and the gateway
re-executes. A rollback is recorded (``rolled_back`` with its reason) once the gateway runs
again on the old file: ``<state_dir>/config-rollback.json`` carries it across the restart.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.config import Config, ConfigError
from gateway.config import load as load_config
from gateway.durable import fsync_dir, write_durably, write_json_durably
from gateway.updates.events import UpdateEvents
from gateway.updates.handler import BundleLike
from gateway.updates.settings import ConfigTrialSettings

log = logging.getLogger(__name__)

KIND = "config"
NAME = "gateway"
ENTRY = "gateway.toml"
TRIAL_FILE = "config-trial.json"
ROLLBACK_FILE = "config-rollback.json"
CHECK_TIMEOUT_S = 300.0


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.error("%s cannot be read (%s): ignored", path, exc)
        return None
    return data if isinstance(data, dict) else None


def prev_path(config_path: Path) -> Path:
    return config_path.with_name(config_path.name + ".prev")


def check_config(path: Path) -> str | None:
    """``edgeline-gateway check-config`` on a file: None when it passes, else its message."""
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "gateway", "check-config", "-c", str(path)],
            capture_output=True,
            text=True,
            timeout=CHECK_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"check-config did not finish within {CHECK_TIMEOUT_S:g} s"
    if proc.returncode == 0:
        return None
    lines = [line for line in (proc.stderr or proc.stdout).splitlines() if line.strip()]
    return lines[-1].removeprefix("edgeline-gateway check-config: ") if lines else f"exit code {proc.returncode}"


# --------------------------------------------------------------------------- at start


def _rollback_files(config_path: Path, state_dir: Path, reason: str, trial: dict[str, Any]) -> None:
    """Restore ``.prev`` over the configuration; leave the record for the next start."""
    prev = prev_path(config_path)
    write_durably(config_path, prev.read_bytes())
    note = {"reason": reason, **{k: trial.get(k) for k in ("version", "counter", "bundle_id")}}
    write_json_durably(state_dir / ROLLBACK_FILE, note)
    (state_dir / TRIAL_FILE).unlink(missing_ok=True)
    log.warning("configuration update %s rolled back: %s", trial.get("version"), reason)


def start_config(config_path: Path, load: Callable[[Path], Config] = load_config) -> Config:
    """Load the configuration for ``run``, counting a start of a configuration on trial and
    rolling it back when it does not load or has used its starts (see the module's doc)."""
    try:
        config = load(config_path)
    except ConfigError as exc:
        prev = prev_path(config_path)
        try:
            old = load(prev) if prev.exists() else None
        except ConfigError:
            old = None
        if old is None or old.updates is None:
            raise
        trial = _read_json(old.updates.state_dir / TRIAL_FILE)
        if trial is None or trial.get("sha256") != _sha256(config_path):
            raise
        _rollback_files(config_path, old.updates.state_dir, f"the new configuration does not load: {exc}", trial)
        return load(config_path)
    if config.updates is None:
        return config
    state_dir = config.updates.state_dir
    trial = _read_json(state_dir / TRIAL_FILE)
    if trial is None:
        return config
    if trial.get("sha256") != _sha256(config_path):  # the swap never happened (a crash before it)
        log.warning(
            "%s: the configuration on trial never replaced %s; trial dropped", state_dir / TRIAL_FILE, config_path
        )
        (state_dir / TRIAL_FILE).unlink(missing_ok=True)
        return config
    starts = int(trial.get("starts", 0))
    limit = config.updates.config.max_starts
    if starts >= limit:
        reason = f"{starts} start(s) without becoming healthy ([updates.config] max_starts = {limit})"
        _rollback_files(config_path, state_dir, reason, trial)
        return load(config_path)
    trial["starts"] = starts + 1
    write_json_durably(state_dir / TRIAL_FILE, trial)
    return config


# --------------------------------------------------------------------------- the handler


class ConfigUpdates:
    """The ``config`` bundle handler and the health check of a configuration on trial."""

    def __init__(
        self,
        *,
        config_path: Path,
        state_dir: Path,
        settings: ConfigTrialSettings,
        events: UpdateEvents,
        restart: Callable[[], None],
        check: Callable[[Path], str | None] = check_config,
        load: Callable[[Path], Config] = load_config,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """restart: stop the gateway cleanly and re-execute it (gateway/runner.py)."""
        self.config_path = config_path
        self.state_dir = state_dir
        self.settings = settings
        self.events = events
        self.restart = restart
        self._check = check
        self._load = load
        self.clock = clock
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.trial = _read_json(state_dir / TRIAL_FILE)
        self.deadline = clock() + settings.health_timeout_s
        self.restarting = False

    def recover(self) -> None:
        """At start: record the rollback the last start made, and the trial now running."""
        note = _read_json(self.state_dir / ROLLBACK_FILE)
        if note is not None:
            reason = str(note.pop("reason", "rolled back"))
            self.events.record(KIND, NAME, "rolled_back", reason=reason, **note)
            (self.state_dir / ROLLBACK_FILE).unlink(missing_ok=True)
        if self.trial is not None:
            info = {k: self.trial.get(k) for k in ("version", "counter", "bundle_id")}
            self.events.record(KIND, NAME, "trial", starts=self.trial.get("starts"), **info)

    def install(self, bundle: BundleLike, staged: Path) -> None:
        info: dict[str, Any] = {"version": bundle.version, "counter": bundle.counter, "bundle_id": bundle.bundle_id}
        if self.trial is not None or self.restarting:
            self.events.record(
                KIND,
                NAME,
                "refused",
                reason="a configuration is on trial: send the next one once it is confirmed",
                **info,
            )
            return
        if bundle.entry != ENTRY:
            self.events.record(
                KIND, NAME, "refused", reason=f"a config bundle's entry is {ENTRY}, not {bundle.entry!r}", **info
            )
            return
        new = self.config_path.with_name(self.config_path.name + ".new")
        write_durably(new, (staged / ENTRY).read_bytes())
        added, problem = self._public_keys(staged)
        problem = problem or self._problem(new)
        if problem is not None:
            new.unlink(missing_ok=True)
            for path in added:
                path.unlink(missing_ok=True)
            self.events.record(KIND, NAME, "refused", reason=f"check-config failed: {problem}; nothing changed", **info)
            return
        write_durably(prev_path(self.config_path), self.config_path.read_bytes())
        self.trial = {**info, "sha256": _sha256(new), "starts": 0, "installed_at": time.time()}
        write_json_durably(self.state_dir / TRIAL_FILE, self.trial)
        os.replace(new, self.config_path)  # new was fsynced when written
        fsync_dir(self.config_path.parent)
        self.events.record(KIND, NAME, "installed", **info)
        self.restarting = True
        self.restart()

    def _public_keys(self, staged: Path) -> tuple[list[Path], str | None]:
        """Release public keys the bundle carries (``NAME.pub``, key rotation: docs/updates.md),
        written beside gateway.toml before the new file is checked, so it may trust them. A
        file of that name with other contents is never replaced. Returns the files written."""
        added: list[Path] = []
        for src in sorted(staged.iterdir()):
            if src.name == ENTRY:
                continue
            if not src.name.endswith(".pub") or not src.is_file():
                return added, f"a config bundle carries gateway.toml and release keys NAME.pub only, not {src.name!r}"
            dest = self.config_path.parent / src.name
            data = src.read_bytes()
            if dest.exists():
                if dest.read_bytes() != data:
                    return added, f"{dest} exists with another key: give the new key another name"
                continue
            write_durably(dest, data, mode=0o644)  # a public key
            added.append(dest)
        return added, None

    def _problem(self, path: Path) -> str | None:
        try:
            new = self._load(path)
        except ConfigError as exc:
            return str(exc)
        if new.updates is None:
            return "it disables [updates]: the gateway could take no more updates (nor roll this one back)"
        if new.updates.state_dir.resolve() != self.state_dir.resolve():
            return f"updates.state_dir {new.updates.state_dir} is not {self.state_dir}: keep the state directory"
        return self._check(path)

    def tick(self, healthy: bool) -> None:
        """Processing loop, while a trial runs: confirm it when healthy, roll it back at the deadline."""
        if self.trial is None or self.restarting:
            return
        info = {k: self.trial.get(k) for k in ("version", "counter", "bundle_id")}
        if healthy:
            (self.state_dir / TRIAL_FILE).unlink(missing_ok=True)
            self.trial = None
            self.events.record(KIND, NAME, "confirmed", **info)
            return
        if self.clock() >= self.deadline:
            reason = f"not healthy within health_timeout_s = {self.settings.health_timeout_s:g} s"
            _rollback_files(self.config_path, self.state_dir, reason, self.trial)
            self.trial = None
            self.restarting = True
            self.restart()

    def status(self) -> dict[str, Any]:
        if self.trial is None:
            return {"trial": None}
        left = max(0.0, self.deadline - self.clock())
        return {
            "trial": {k: self.trial.get(k) for k in ("version", "counter", "starts")},
            "health_left_s": round(left, 1),
        }
