"""Run the real CircuitPython firmware (firmware/cp/code.py) on the MicroPython unix port
with the CircuitPython simulation (firmware/cpsim) and the pinned MiniMQTT: a directory
stands in for the CIRCUITPY drive, settings.toml is written by the flash tool's renderer (tools/flash/cpsettings.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.firmware.simdevice import SimDevice
from tests.support.upy import ROOT, run_micropython
from tools.fetch_upy_deps import DEFAULT_CP_CACHE
from tools.flash.cpsettings import settings_toml

CODE = ROOT / "firmware" / "cp" / "code.py"
BOOT = ROOT / "firmware" / "cp" / "boot.py"
CP_PATH = (ROOT / "firmware" / "cpsim", DEFAULT_CP_CACHE)


def cp_config(port: int, device: str = "cp1", **over: Any) -> dict[str, Any]:
    """A Pico W under CircuitPython with an MPU-6050 on its default I2C pins."""
    cfg: dict[str, Any] = {
        "device_id": device,
        "site": "s1",
        "broker": {"host": "127.0.0.1", "port": port, "timeout_ms": 1000, "keepalive_s": 10},
        "sample": {"rate_hz": 50, "batch": 10},
        "sensors": [{"type": "mpu6050"}],
        "backoff": {"min_ms": 100, "max_ms": 400},
        "health_s": 2,
        "watchdog_ms": 0,
    }
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(cfg.get(k), dict):
            cfg[k] = {**cfg[k], **v}
        else:
            cfg[k] = v
    return cfg


class CPDevice(SimDevice):
    def __init__(self, drive: Path, config: dict[str, Any] | None, **env: Any) -> None:
        super().__init__(drive, None, main=str(CODE), **env)
        self.micropypath = CP_PATH
        if config is not None:
            (self.flash / "settings.toml").write_text(settings_toml(config))

    def power_on(self, **env: str) -> str:
        """boot.py, as CircuitPython runs it after a reset: who may write the drive."""
        res = run_micropython([str(BOOT)], micropypath=CP_PATH, env={**self.env, **env}, cwd=self.flash, timeout=30)
        out = (res.stdout + res.stderr).decode(errors="replace")
        assert res.returncode == 0, out
        return out
