"""What the status page and /metrics read, handed over safely between threads.

The processing thread owns the gateway's state. It publishes a status dict (built on its own
thread, gateway/status.py) by replacing ``WebState.status`` whole, about once a second; a dict
once published is never changed, so a web thread may read it at any time. Per-device rows and
plot histories come from ``LiveView.fleet()`` and ``LiveView.detail()``, which are made for
other threads (gateway/live.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.live import LiveView

STATIC_DIR = Path(__file__).resolve().parent / "static"
VENDOR_DIR = STATIC_DIR / "vendor"
VENDOR_FILES = ("uPlot.iife.min.js", "uPlot.min.css")
FETCH_HINT = "run `.venv/bin/python tools/fetch_web_assets.py` (tools/setup.sh does it) and restart the gateway"


@dataclass
class WebState:
    live: LiveView
    detail_devices: int  # per-device metric series only up to this many devices
    status: dict[str, Any] = field(default_factory=dict)  # replaced whole, never mutated
    started: float = field(default_factory=time.time)

    def publish(self, status: dict[str, Any]) -> None:
        """Processing thread: the latest status (the caller must not change it afterwards)."""
        self.status = status


def vendor_missing(vendor_dir: Path) -> list[str]:
    """The uPlot files the page needs that are not in vendor_dir."""
    return [name for name in VENDOR_FILES if not (vendor_dir / name).is_file()]
