"""MQTT brokers for the fleet demo: Mosquitto when it is there, else amqtt (pure Python, PyPI).

Both kinds expose the same small surface as :class:`tools.mosquitto.Mosquitto`: ``host``,
``port``, ``start()``, ``stop()``, ``kill()``, ``running`` and ``kind``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Protocol

from tools.mosquitto import MOSQUITTO, Mosquitto, free_port, port_open


class Broker(Protocol):
    host: str
    port: int

    @property
    def running(self) -> bool: ...

    def start(self, timeout: float = 10.0) -> Broker: ...

    def stop(self, timeout: float = 10.0) -> None: ...

    def kill(self) -> None: ...


class BrokerUnavailable(RuntimeError):
    """No broker can be run on this machine."""


class AmqttBroker:
    """amqtt in a child process: the demo's broker when Mosquitto is not installed."""

    kind = "amqtt"

    def __init__(self, workdir: Path, *, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.port = port or free_port(host)
        self.proc: subprocess.Popen[bytes] | None = None
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

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 15.0) -> AmqttBroker:
        if self.running:
            return self
        exe = Path(sys.executable).parent / "amqtt"
        with open(self.dir / "amqtt.log", "ab") as log:
            self.proc = subprocess.Popen([str(exe), "-c", str(self.conf_path)], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerUnavailable(f"amqtt exited with {self.proc.returncode}; see {self.dir / 'amqtt.log'}")
            if port_open(self.host, self.port):
                return self
            time.sleep(0.05)
        self.kill()
        raise BrokerUnavailable(f"amqtt did not listen on {self.host}:{self.port} within {timeout} s")

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        deadline = time.monotonic() + timeout
        while port_open(self.host, self.port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


def mosquitto_available() -> bool:
    return os.path.exists(MOSQUITTO) or shutil.which("mosquitto") is not None


def make_broker(workdir: Path, prefer: str = "auto") -> Mosquitto | AmqttBroker:
    """A broker of the preferred kind: "mosquitto", "amqtt" or "auto" (Mosquitto if installed)."""
    if prefer == "mosquitto" or (prefer == "auto" and mosquitto_available()):
        broker = Mosquitto(workdir, persistence=True)
        return broker
    if prefer in ("amqtt", "auto"):
        if not (Path(sys.executable).parent / "amqtt").exists():
            raise BrokerUnavailable("neither Mosquitto nor amqtt is installed: run `make demo` (it installs them)")
        return AmqttBroker(workdir)
    raise BrokerUnavailable(f"unknown broker kind {prefer!r}: expected auto, mosquitto or amqtt")
