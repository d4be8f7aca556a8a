"""Run the real firmware (firmware/main.py) on the MicroPython unix port as a
simulated device: its own flash directory, config.json and environment."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

from tests.support.upy import ROOT, spawn_micropython

MAIN = str(ROOT / "firmware" / "main.py")
EXIT_DEEPSLEEP = 3
EXIT_RESET = 4


def base_config(port: int, device: str = "dev1", **over: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "device_id": device,
        "site": "s1",
        "broker": {"host": "127.0.0.1", "port": port, "timeout_ms": 1000, "keepalive_s": 10},
        "sample": {"rate_hz": 50, "batch": 16},
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


class SimDevice:
    def __init__(
        self, flash: Path, config: dict[str, Any] | None, *, heapsize: str | None = None, main: str = MAIN, **env: Any
    ) -> None:
        self.flash = Path(flash)
        self.flash.mkdir(parents=True, exist_ok=True)
        if config is not None:
            (self.flash / "config.json").write_text(json.dumps(config))
        self.heapsize = heapsize
        self.main = main
        self.env = {"EDGELINE_SIM_DIR": str(self.flash), **{k: str(v) for k, v in env.items()}}
        self.stats_path = self.flash / "stats.json"
        self.env.setdefault("EDGELINE_SIM_STATS", str(self.stats_path))
        self.proc: subprocess.Popen[bytes] | None = None
        self.output = b""
        self.micropypath: tuple[Path, ...] = ()  # prepended to MICROPYPATH

    def start(self, **env: Any) -> SimDevice:
        e = {**self.env, **{k: str(v) for k, v in env.items()}}
        self.proc = spawn_micropython(
            [self.main], heapsize=self.heapsize, env=e, cwd=self.flash, micropypath=self.micropypath
        )
        return self

    def wait(self, timeout: float = 60) -> int:
        assert self.proc is not None
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        self.output += out or b""
        return self.proc.returncode

    def kill(self) -> None:
        """Power loss: SIGKILL, nothing flushed."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            out, _ = self.proc.communicate(timeout=10)
            self.output += out or b""

    def run(self, timeout: float = 60, **env: Any) -> int:
        self.start(**env)
        return self.wait(timeout)

    def stats(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.stats_path.read_text())
        return data

    def text(self) -> str:
        return self.output.decode(errors="replace")

    def segments(self) -> list[Path]:
        q = self.flash / "queue"
        return sorted(q.glob("q*.seg")) if q.exists() else []
