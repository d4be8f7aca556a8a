"""Run the real CircuitPython firmware (firmware/cp/code.py) on the MicroPython unix port
with the CircuitPython simulation (firmware/cpsim) and the pinned MiniMQTT: a directory
stands in for the CIRCUITPY drive, settings.toml is written by the flash tool's renderer (tools/flash/cpsettings.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.firmware.simdevice import SimDevice, base_config
from tests.support.upy import ROOT, run_micropython
from tools.fetch_upy_deps import DEFAULT_CP_CACHE
from tools.flash.cpsettings import settings_toml

CODE = ROOT / "firmware" / "cp" / "code.py"
BOOT = ROOT / "firmware" / "cp" / "boot.py"
CP_PATH = (ROOT / "firmware" / "cpsim", DEFAULT_CP_CACHE)


def cp_config(port: int, device: str = "cp1", **over: Any) -> dict[str, Any]:
    """The firmware tests' config (an MPU-6050 on the default I2C pins) for a Pico W under
    CircuitPython, batches of 10 samples."""
    sample = {"rate_hz": 50, "batch": 10, **over.pop("sample", {})}
    return base_config(port, device, sample=sample, **over)


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
