"""The MicroPython test harness reports failures: a failing unix-port test fails the run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.upy import ROOT

MODULE = """
import gc

HEAPSIZE = "24k"


def test_passes():
    assert 1 + 1 == 2


def test_fails():
    value = 41
    assert value == 42, "value is %d" % value


def test_heapsize_is_applied():
    total = gc.mem_free() + gc.mem_alloc()
    assert total <= 24 * 1024, total
"""


def test_failing_micropython_test_fails_the_run(tmp_path: Path) -> None:
    upy = tmp_path / "upy"
    upy.mkdir()
    (upy / "test_meta.py").write_text(MODULE)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-q", "-o", "addopts=", str(upy)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "1 failed, 2 passed" in out, out
    # The MicroPython traceback and the assertion message reach the report.
    assert "MicroPython test test_meta.py::test_fails failed" in out, out
    assert "AssertionError: value is 41" in out, out
    assert "line 13, in test_fails" in out, out
