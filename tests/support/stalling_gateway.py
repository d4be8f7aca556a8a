"""``python -m tests.support.stalling_gateway CONFIG MARKER [stall|fail]``: the gateway of
``edgeline-gateway run``, with a raw log whose first commit holding DATA writes MARKER (its pid)
and then either waits forever there (stall: a test kills -9 the process between receive and
commit) or fails as a full or broken disk does (fail: sqlite3.OperationalError).

The fault is injected through the constructors (Runner(rawlog=...)); production code has no
test hook.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import sys
import threading
from pathlib import Path

from gateway.config import load
from gateway.errors import GatewayError
from gateway.rawlog import LogRow, RawLog, SeqStates
from gateway.runner import Runner
from shared_protocol import DATA


class StallingRawLog(RawLog):
    def __init__(self, marker: Path, path: Path, *, max_bytes: int, max_age_s: float, fail: bool = False) -> None:
        super().__init__(path, max_bytes=max_bytes, max_age_s=max_age_s)
        self.marker = marker
        self.fail = fail

    def commit_batch(self, rows: list[LogRow], seq_states: SeqStates | None = None, *, now: float | None = None) -> int:
        if any(r.type == DATA for r in rows):
            self.marker.write_text(str(os.getpid()))
            if self.fail:
                raise sqlite3.OperationalError("database or disk is full")
            threading.Event().wait()  # until SIGKILL
        return super().commit_batch(rows, seq_states, now=now)


def main() -> None:
    config, marker = load(sys.argv[1]), Path(sys.argv[2])
    fail = sys.argv[3:] == ["fail"]
    logging.basicConfig(level=logging.DEBUG, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    data_dir = Path(config.gateway.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    rawlog = StallingRawLog(
        marker,
        data_dir / "rawlog.sqlite",
        max_bytes=config.rawlog.max_bytes,
        max_age_s=config.rawlog.max_age_s,
        fail=fail,
    )
    runner = Runner(config, rawlog=rawlog)
    runner.install_signal_handlers()
    try:
        runner.run()
    except GatewayError as exc:  # as `edgeline-gateway run` reports it (gateway/cli.py)
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
