"""Run the real firmware (firmware/main.py) on the MicroPython unix port as a
simulated device: its own flash directory, config.json and environment."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.upy import ROOT, spawn_micropython
from tests.support.waiting import wait_until

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
        self.output = b""  # everything the process printed so far (read as it comes)
        self._reader: threading.Thread | None = None
        self.micropypath: tuple[Path, ...] = ()  # prepended to MICROPYPATH

    def start(self, **env: Any) -> SimDevice:
        e = {**self.env, **{k: str(v) for k, v in env.items()}}
        self.proc = spawn_micropython(
            [self.main], heapsize=self.heapsize, env=e, cwd=self.flash, micropypath=self.micropypath
        )
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self._reader.start()
        return self

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        # output is read as it comes, so a test can wait for a line while the device runs
        assert proc.stdout is not None
        while chunk := proc.stdout.read1(4096):
            self.output += chunk

    def _drained(self) -> None:
        if self._reader is not None:
            self._reader.join(10)
            self._reader = None
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    def wait(self, timeout: float = 60) -> int:
        assert self.proc is not None
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        self._drained()
        return rc

    def kill(self) -> None:
        """Power loss: SIGKILL, nothing flushed."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self._drained()

    def wait_for_output(self, check: Callable[[str], bool], timeout: float = 30, what: str = "output") -> str:
        """The output so far, once check(output) is true (the device keeps running)."""

        def seen() -> str:
            text = self.text()
            return text if check(text) else ""

        return wait_until(seen, timeout=timeout, what=what)

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
