"""``python -m tests.updates.receiver CONFIG.json``: the gateway's cloud link (the real Forwarder)
and UpdateService in a process of their own, so a test can kill -9 it in mid-transfer.

CONFIG: {"forward": {...[forward] table...}, "gateway_id", "site", "data_dir", "state_dir",
"trusted_keys": [...], "out": dir}. Each installed bundle writes ``<out>/installed-<bundle_id>.json``
(its metadata, its staged files and the service's counts at that moment). SIGTERM stops it.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from gateway.forward import ForwardConfig, Forwarder
from gateway.updates.bundle import Bundle
from gateway.updates.events import UpdateEvents
from gateway.updates.service import UpdateService
from gateway.updates.settings import UpdatesSettings


class CountingService(UpdateService):
    """Keeps the index of every chunk message, so the test sees which chunks were fetched."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.chunks_seen: list[int] = []

    def _on_chunk(self, topic: str, kind: str, name: str, bundle_id: str, index: int, payload: bytes) -> None:  # noqa: PLR0917
        self.chunks_seen.append(index)
        super()._on_chunk(topic, kind, name, bundle_id, index, payload)


class FileHandler:
    """Writes what it was handed; the test reads it."""

    def __init__(self, out: Path, service: CountingService) -> None:
        self.out = out
        self.service = service

    def install(self, bundle: Bundle, staged: Path) -> None:
        files = {p.relative_to(staged).as_posix(): p.stat().st_size for p in staged.rglob("*") if p.is_file()}
        status = self.service.status()
        doc = {**bundle.describe(), "files": files, "status": status, "chunks_seen": self.service.chunks_seen}
        tmp = self.out / f".installed-{bundle.bundle_id}.tmp"
        tmp.write_text(json.dumps(doc, default=str))
        tmp.replace(self.out / f"installed-{bundle.bundle_id}.json")


def main(config_path: str) -> int:
    cfg: dict[str, Any] = json.loads(Path(config_path).read_text())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    forwarder = Forwarder(ForwardConfig.from_dict(cfg["forward"]), cfg["gateway_id"], Path(cfg["data_dir"]))
    events = UpdateEvents(state_topic=None, publish=None, submit=forwarder.submit)
    settings = UpdatesSettings(
        trusted_keys=tuple(Path(k) for k in cfg["trusted_keys"]), state_dir=Path(cfg["state_dir"])
    )
    service = CountingService(
        settings,
        site=cfg["site"],
        gateway_id=cfg["gateway_id"],
        events=events,
        link=forwarder,
        topic_prefix=forwarder.config.topic_prefix,
    )
    out = Path(cfg["out"])
    for kind in ("model", "config", "firmware"):
        service.register(kind, FileHandler(out, service))
    forwarder.start()
    service.start()
    while not stop.is_set():
        service.tick(time.time())
        stop.wait(0.02)
    service.stop()
    forwarder.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
