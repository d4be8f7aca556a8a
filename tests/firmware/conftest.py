"""Fixtures for CPython-driven firmware tests (real micropython processes, real Mosquitto)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.firmware.gateway_stub import GatewayStub
from tools.mosquitto import Mosquitto


@pytest.fixture
def gateway(mosquitto: Mosquitto) -> Iterator[GatewayStub]:
    """Plays the gateway's ingest + ACK role on the test broker."""
    gw = GatewayStub(mosquitto.host, mosquitto.port).start()
    yield gw
    gw.stop()


@pytest.fixture
def flash(tmp_path: Path) -> Callable[[str], Path]:
    def make(name: str = "dev1") -> Path:
        d = tmp_path / f"flash-{name}"
        d.mkdir(parents=True, exist_ok=True)
        return d

    return make
