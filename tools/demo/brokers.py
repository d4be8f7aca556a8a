"""MQTT brokers for the fleet demo: Mosquitto when it is there, else amqtt (pure Python, PyPI).

Both are :class:`tools.mosquitto.BrokerProcess`: ``host``, ``port``, ``start()``, ``stop()``,
``kill()``, ``running`` and ``kind``.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from tools.mosquitto import MOSQUITTO, BrokerError, BrokerProcess, Mosquitto


class BrokerUnavailable(BrokerError):
    """No broker can be run on this machine."""


class AmqttBroker(BrokerProcess):
    """amqtt in a child process: the demo's broker when Mosquitto is not installed."""

    kind = "amqtt"

    def __init__(self, workdir: Path, *, port: int | None = None, host: str = "127.0.0.1") -> None:
        super().__init__(workdir, port=port, host=host)
        self.conf_path = self.dir / "amqtt.yaml"
        self.conf_path.write_text(
            "listeners:\n"
            "  default:\n"
            "    type: tcp\n"
            f"    bind: {host}:{self.port}\n"
            "plugins:\n"
            "  amqtt.plugins.authentication.AnonymousAuthPlugin:\n"
            "    allow_anonymous: true\n"
        )

    def command(self) -> list[str]:
        return [str(Path(sys.executable).parent / "amqtt"), "-c", str(self.conf_path)]


def mosquitto_available() -> bool:
    return os.path.exists(MOSQUITTO) or shutil.which("mosquitto") is not None


def make_broker(workdir: Path, prefer: str = "auto") -> BrokerProcess:
    """A broker of the preferred kind: "mosquitto", "amqtt" or "auto" (Mosquitto if installed)."""
    if prefer == "mosquitto" or (prefer == "auto" and mosquitto_available()):
        broker = Mosquitto(workdir, persistence=True)
        return broker
    if prefer in ("amqtt", "auto"):
        if not (Path(sys.executable).parent / "amqtt").exists():
            raise BrokerUnavailable("neither Mosquitto nor amqtt is installed: run `make demo` (it installs them)")
        return AmqttBroker(workdir)
    raise BrokerUnavailable(f"unknown broker kind {prefer!r}: expected auto, mosquitto or amqtt")
