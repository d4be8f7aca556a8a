"""The CircuitPython port layer type-checks against the official CircuitPython stubs.

Uses the virtualenv `.venv-stubs` (bash tools/setup_stubs_env.sh): mypy there, and
circuitpython-stubs in its own small venv `.venv-stubs/circuitpython-env`. The stubs are
PEP 561 `*-stubs` packages, which mypy finds only in the site-packages of the interpreter
given by --python-executable, not on MYPYPATH. MYPYPATH holds the firmware, the repository
root (shared_protocol) and the pinned CircuitPython libraries (.cache/cp-lib: MiniMQTT), but
not firmware/cpsim, the unix-port simulation of CircuitPython's modules, nor
boards/cp_sim.py: the point is the real CircuitPython API. Errors inside the stub files
themselves are ignored; any error in our files fails. A canary file that calls APIs that do
not exist proves the stubs are really consulted.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.stubcheck import SETUP_COMMAND, STUBS_VENV, run_mypy
from tests.support.upy import ROOT
from tools.fetch_upy_deps import DEFAULT_CP_CACHE, FETCH_COMMAND

CP_ENV = STUBS_VENV / "circuitpython-env"
CP_PYTHON = CP_ENV / "bin" / "python"
FILES = [
    "firmware/sensorfw/cpport/board.py",
    "firmware/sensorfw/cpport/mqtt.py",
    "firmware/sensorfw/cpport/settings.py",
    "firmware/sensorfw/cpport/entry.py",
    "firmware/otaslots.py",
    "firmware/sensorfw/boards/cp_pico_w.py",
    "firmware/sensorfw/boards/cp_esp32s3.py",
    "firmware/cp/code.py",
    "firmware/cp/boot.py",
]
#: sys.platform on the boards: the raspberrypi port (Pico W) and the espressif port (ESP32-S3).
#: code.py's `sys.platform == "linux"` branch (the simulation board) is then not checked.
PLATFORMS = ["RP2040", "Espressif"]


def _site_packages() -> Path:
    found = sorted(CP_ENV.glob("lib/python3*/site-packages"))
    assert found, f"{CP_ENV} has no site-packages: {SETUP_COMMAND}"
    return found[0]


def _mypy(platform: str, files: list[str], tmp: Path) -> list[str]:
    if not CP_PYTHON.exists():
        raise FileNotFoundError(f"{CP_PYTHON} is missing: {SETUP_COMMAND}")
    stubs = _site_packages()
    assert (stubs / "wifi-stubs" / "__init__.pyi").exists(), (
        f"circuitpython-stubs not installed in {stubs}: {SETUP_COMMAND}"
    )
    assert (DEFAULT_CP_CACHE / "adafruit_minimqtt").is_dir(), f"{DEFAULT_CP_CACHE} has no MiniMQTT: {FETCH_COMMAND}"
    return run_mypy(
        files,
        cache=tmp / f"cache-{platform}",
        mypypath=[ROOT / "firmware", ROOT, DEFAULT_CP_CACHE],
        platform=platform,
        options=["--python-executable", str(CP_PYTHON)],
    )


@pytest.mark.parametrize("platform", PLATFORMS)
def test_cp_port_layer_typechecks_against_stubs(platform: str, tmp_path: Path) -> None:
    errors = _mypy(platform, FILES, tmp_path)
    assert errors == [], "\n".join(errors)


def test_cp_stubs_catch_a_wrong_api(tmp_path: Path) -> None:
    canary = tmp_path / "canary.py"
    canary.write_text(
        "import countio\nimport microcontroller\nimport wifi\n\n\n"
        "def probe(pin: microcontroller.Pin) -> None:\n"
        '    wifi.radio.connect_fast("ssid", "password")\n'
        "    countio.Counter(pin, edge=countio.Edge.RISE).count_fast\n"
        "    microcontroller.watchdog_feed()\n"
    )
    errors = _mypy(PLATFORMS[0], [str(canary)], tmp_path)
    assert not any("import-not-found" in e or "import-untyped" in e for e in errors), errors
    assert any("connect_fast" in e for e in errors), errors
    assert any("count_fast" in e for e in errors), errors
    assert any("watchdog_feed" in e for e in errors), errors
