"""The gateway as a real process (``python -m gateway run``) for fault tests: start, wait for
its SUBACK, kill -9, restart, read what it stored and what it counted lost."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from gateway.rawlog import read_all
from tests.support.upy import ROOT
from tests.support.waiting import wait_until


class GatewayProcess:
    def __init__(self, workdir: Path, port: int, *, extra_toml: str = "", site: str = "s1") -> None:
        if "[web]" not in extra_toml:  # each test gateway's status page on a free port, not 8080
            extra_toml += "\n[web]\nport = 0\n"
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.data = self.dir / "data"
        self.config = self.dir / "gateway.toml"
        self.config.write_text(
            f"""
[gateway]
id = "gw1"
site = "{site}"
data_dir = "{self.data}"
status_interval_s = 0.2

[mqtt]
host = "127.0.0.1"
port = {port}

{extra_toml}
"""
        )
        self.log = self.dir / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> GatewayProcess:
        with open(self.log, "ab") as log:  # the child keeps its own copy
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway", "run", "-c", str(self.config), "--log-level", "debug"],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.wait_subscribed()
        return self

    def status(self) -> dict[str, Any] | None:
        try:
            st = json.loads((self.data / "status.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return st if self.proc is not None and st.get("pid") == self.proc.pid else None  # type: ignore[no-any-return]

    def wait_subscribed(self, timeout: float = 20.0) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError("gateway exited:\n" + self.log.read_text(errors="replace")[-3000:])
            st = self.status()
            return st if st and st["ingest"]["subscribed"] else None

        return wait_until(check, timeout, "the gateway's SUBACK")

    def kill(self) -> None:
        """SIGKILL, as a power cut or an OOM kill would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> int:
        """SIGTERM: finish the batch in hand, commit, exit."""
        rc = 0
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            rc = self.proc.wait(30)
        self.proc = None
        return rc

    # --- what it stored and counted (read-only, works while it runs) --------------------
    def stored(self, device: str) -> set[tuple[int, int]]:
        path = self.data / "rawlog.sqlite"
        return {(r.boot, r.seq) for r in read_all(path, device)} if path.exists() else set()

    def seq_state(self, device: str) -> tuple[int | None, list[Any]]:
        db = sqlite3.connect(f"file:{self.data / 'rawlog.sqlite'}?mode=ro", uri=True)
        try:
            row = db.execute("SELECT current_boot, streams FROM seq_state WHERE device = ?", (device,)).fetchone()
        finally:
            db.close()
        return (None, []) if row is None else (row[0], json.loads(row[1]))
