"""Signed updates in the demo (docs/updates.md), made with the documented commands only.

- ``edgeline-release keygen`` makes the release key the gateway trusts (``[updates]
  trusted_keys``) and a second key it does not.
- Early in the run the release side publishes three bundles to the gateway through the cloud
  broker (``edgeline-release publish``, retained and chunked):
  the vibration model released again as a new version, which the gateway scores in shadow beside
  the running one and promotes when it meets ``[updates.shadow]``; a gateway.toml signed with
  the untrusted key, which the gateway refuses and reports; and a firmware build
  (``edgeline-flash build --arch native``) for one board, which the gateway sends over the air:
  the board writes it to its other slot, restarts into it and confirms once its data is stored.
- The boards get their OTA key the way ``edgeline-flash provision`` gives it (tools/flash/ota_key.py).
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tools.demo.scenario import GATEWAY_ID, VIBRATION_MODEL
from tools.flash import ota_key
from tools.flash.pki import write_file

ROOT = Path(__file__).resolve().parents[2]

OTA_DEVICE = "tank-03"  # the board that gets new firmware over the air
MODEL_VERSION = "vibration-2"
FIRMWARE_VERSION = "sensorfw-0.2.0"
TOPIC_PREFIX = "edgeline"  # [forward] topic_prefix (its default)
PUBLISH_AT = 0.05  # fraction of the run when the release side publishes
SHADOW_WINDOWS = 20  # windows the new model scores in shadow before the verdict


@dataclass(frozen=True)
class CloudClient:
    """How the release side reaches the cloud broker (TLS files, or none for plain TCP)."""

    host: str
    port: int
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    def args(self) -> list[str]:
        out = ["--broker", f"{self.host}:{self.port}"]
        if self.ca is not None and self.cert is not None and self.key is not None:
            out += ["--ca", str(self.ca), "--cert", str(self.cert), "--client-key", str(self.key)]
        return out


class DemoUpdates:
    def __init__(self, workdir: Path, device_keys_dir: Path) -> None:
        self.directory = workdir / "release"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "logs" / "release.log"
        self.device_keys_dir = device_keys_dir
        self.key = self.directory / "release.key"
        self.public = self.directory / "release.pub"
        self.rogue_key = self.directory / "not-trusted.key"
        self.build_dir = self.directory / "build-native"
        self.published: list[str] = []
        self._run("-m", "tools.release", "keygen", "--out", str(self.directory / "release"))
        self._run("-m", "tools.release", "keygen", "--out", str(self.directory / "not-trusted"))

    def _run(self, *args: str) -> None:
        with open(self.log_path, "ab") as log:
            log.write(f"$ python {' '.join(args)}\n".encode())
            log.flush()
            rc = subprocess.run([sys.executable, *args], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=False)
        if rc.returncode != 0:
            raise RuntimeError(f"`python {' '.join(args[:4])} ...` failed; see {self.log_path}")

    def gateway_toml(self) -> str:
        return f"""
# Signed updates (docs/updates.md): bundles signed by this key only, from the cloud link.
[updates]
enabled = true
trusted_keys = ["{self.public}"]

[updates.shadow]
windows = {SHADOW_WINDOWS}

[updates.firmware]
device_keys_dir = "{self.device_keys_dir}"
"""

    def provision(self, device_id: str, flash: Path) -> None:
        """The board's OTA key, kept in its private folder and written to its flash."""
        key = ota_key.obtain(self.device_keys_dir / device_id)
        write_file(flash / ota_key.BOARD_PATH, key, mode=0o600)

    def prepare(self) -> None:
        """Build the firmware and pack the three bundles of the story."""
        d = self.directory
        common = ["--key", str(self.key), "--gateway", GATEWAY_ID, "--out"]
        self._run(
            "-m", "tools.release", "pack", "model", "--manifest", str(VIBRATION_MODEL), "--pipeline", "vibration",
            "--version", MODEL_VERSION, "--counter", "1", *common, str(d / "model.bundle"),
        )  # fmt: skip
        rogue = d / "rogue.toml"
        rogue.write_text('[gateway]\nid = "demo-gw"\nsite = "demo"\ndata_dir = "/tmp/not-yours"\n')
        self._run(
            "-m", "tools.release", "pack", "config", "--config", str(rogue), "--version", "rogue-1",
            "--counter", "99", "--key", str(self.rogue_key), "--gateway", GATEWAY_ID, "--out", str(d / "rogue.bundle"),
        )  # fmt: skip
        self._run("-m", "tools.flash", "build", "--arch", "native", "--build-dir", str(self.build_dir))
        self._run(
            "-m", "tools.release", "pack", "firmware", "--build", str(self.build_dir), "--arch", "native",
            "--device", OTA_DEVICE, "--version", FIRMWARE_VERSION, "--counter", "1", *common, str(d / "fw.bundle"),
        )  # fmt: skip

    def publish(self, cloud: CloudClient) -> None:
        """Publish the bundles to the gateway through the cloud broker (about a second each)."""
        d = self.directory
        for name in ("model.bundle", "rogue.bundle", "fw.bundle"):
            self._run("-m", "tools.release", "publish", str(d / name), "--gateway", GATEWAY_ID, *cloud.args())
            self.published.append(name)


def report(status: dict[str, Any]) -> dict[str, Any]:
    """What became of each bundle, from the gateway's status (``updates``, ``ota``)."""
    updates = status.get("updates") or {}
    current = updates.get("current") or {} if isinstance(updates, dict) else {}
    model = current.get("model/vibration") or {}
    config = current.get("config/gateway") or {}
    rollouts = (status.get("ota") or {}).get("rollouts") or {}
    rollout = rollouts.get("sensorfw-native") or {}
    device = (rollout.get("devices") or {}).get(OTA_DEVICE) or {}
    return {
        "model": {k: model.get(k) for k in ("state", "version", "reason", "figures")},
        "refused": {k: config.get(k) for k in ("state", "version", "reason", "code")},
        "firmware": {
            "device": OTA_DEVICE,
            "rollout": rollout.get("state"),
            "state": device.get("state"),
            "version": rollout.get("version"),
            "detail": device,
        },
    }


def lines(rep: dict[str, Any]) -> list[str]:
    """The report's lines on the signed updates."""
    m, r, f = rep["model"], rep["refused"], rep["firmware"]
    fig = m.get("figures") or {}
    shadow = ""
    if fig:
        shadow = (
            f" after {fig.get('windows')} windows in shadow (alert rate {fig.get('alert_rate')},"
            f" agreement {fig.get('agreement')})"
        )
    return [
        f"model update: vibration {m.get('version')}: {m.get('state')}{shadow}",
        f"bad bundle: gateway.toml signed by an untrusted key: {r.get('state')} ({r.get('reason')})",
        f"firmware over the air: {f['device']} -> {f.get('version')}: {f.get('state')} (rollout {f.get('rollout')})",
    ]
