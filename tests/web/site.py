"""A running site for the status page tests: real Mosquitto, a real gateway process with the
committed vibration model and its web page on a free port, a second Mosquitto standing in for
the cloud (the forward lanes and the link state on the page), and paced vibration devices
(tests/web/feeder.py), one of which has a bearing fault for a while (an alert raised, then
cleared). Used by the browser tests and by ``python -m tests.web.update_docs_image``."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.gateway_proc import GatewayProcess
from tests.support.mosquitto import Mosquitto
from tests.web.feeder import MODEL, Feeder

DEVICES = ["pump-01", "pump-02", "fan-03"]
FAULTY = "pump-01"
FAULT_S = (1.0, 4.0)  # seconds after the devices start


@dataclass
class Site:
    broker: Mosquitto
    cloud: Mosquitto
    gateway: GatewayProcess
    feeder: Feeder
    url: str  # the status page, e.g. http://127.0.0.1:41135/

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path.lstrip("/"), timeout=10) as resp:
            return json.loads(resp.read())


def gateway_toml(cloud_port: int) -> str:
    return f"""
[web]
port = 0

[[pipelines]]
name = "vibration"
model = "{MODEL}"

[forward]
host = "127.0.0.1"
port = {cloud_port}
"""


@contextmanager
def running_site(workdir: Path, *, fault_s: tuple[float, float] = FAULT_S) -> Iterator[Site]:
    broker = Mosquitto(workdir / "broker").start()
    cloud = Mosquitto(workdir / "cloud").start()
    gateway = GatewayProcess(workdir / "gateway", broker.port, extra_toml=gateway_toml(cloud.port))
    feeder: Feeder | None = None
    try:
        gateway.start()
        status = gateway.status()
        assert status is not None and status["web"]["error"] is None, status
        feeder = Feeder(broker.port, DEVICES, faults={FAULTY: fault_s}).start()
        yield Site(broker, cloud, gateway, feeder, status["web"]["url"])
    finally:
        if feeder is not None:
            feeder.stop()
        gateway.stop()
        broker.kill()
        cloud.kill()
