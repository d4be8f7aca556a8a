"""Fixtures of the flash-tool tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tools.vboard import VirtualBoard


@pytest.fixture
def board(tmp_path: Path) -> Iterator[VirtualBoard]:
    """A virtual board (the unix port behind a pty) on a fresh flash directory."""
    flash = tmp_path / "flash"
    flash.mkdir()
    with VirtualBoard(flash) as vboard:
        yield vboard
