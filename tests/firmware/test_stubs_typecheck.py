"""The port and board layers type-check against the official MicroPython port stubs.

Uses the virtualenv `.venv-stubs` (python3.11 -m venv .venv-stubs; pip install mypy;
pip install --target .venv-stubs/esp32 micropython-esp32-stubs; pip install --target
.venv-stubs/rp2 micropython-rp2-stubs): the two stub packages both define `machine`,
so each lives in its own directory on MYPYPATH. Errors inside the stub files
themselves are ignored; any error in our files fails. A canary file that calls an
API that does not exist proves the stubs are really consulted.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.stubcheck import SETUP_COMMAND, STUBS_VENV, run_mypy
from tests.support.upy import ROOT

FILES = [
    "firmware/sensorfw/port/board.py",
    "firmware/sensorfw/port/mqtt.py",
    "firmware/sensorfw/port/tls.py",
    "firmware/sensorfw/boards/esp32_devkit.py",
    "firmware/sensorfw/boards/pico_w.py",
    "firmware/sensorfw/boards/sim.py",
    "firmware/main.py",
    "firmware/otaslots.py",
    "firmware/sensorfw/entry.py",
    "firmware/sensorfw/core/ota.py",
    "firmware/sensorfw/core/ota_boot.py",
]


def _mypy(port: str, files: list[str], tmp: Path) -> list[str]:
    stubs = STUBS_VENV / port
    assert (stubs / "machine.pyi").exists(), f"micropython-{port}-stubs not installed in {stubs}: {SETUP_COMMAND}"
    return run_mypy(
        files,
        cache=tmp / f"cache-{port}",
        mypypath=[stubs, ROOT / "firmware", ROOT, ROOT / ".cache" / "upy-lib"],
        platform=port,
        options=["--no-site-packages"],
    )


@pytest.mark.parametrize("port", ["esp32", "rp2"])
def test_port_layer_typechecks_against_stubs(port: str, tmp_path: Path) -> None:
    errors = _mypy(port, FILES, tmp_path)
    assert errors == [], "\n".join(errors)


@pytest.mark.parametrize("port", ["esp32", "rp2"])
def test_stubs_catch_a_wrong_api(port: str, tmp_path: Path) -> None:
    canary = tmp_path / "canary.py"
    canary.write_text("import machine\nmachine.Timer(0).start_periodic(5)\nmachine.Pin(2).toggle_fast()\n")
    errors = _mypy(port, [str(canary)], tmp_path)
    assert any("start_periodic" in e for e in errors), errors
    assert any("toggle_fast" in e for e in errors), errors
