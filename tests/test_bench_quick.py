"""The benchmarks run (quick sizes) so they never rot; how fast is for `make bench`, not tests."""

from __future__ import annotations

import subprocess
import sys

from tests.support.upy import ROOT


def test_every_benchmark_runs_in_quick_mode() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    from bench.__main__ import BENCHMARKS

    for name, _module, _what in BENCHMARKS:
        assert f"== {name}:" in out, out
    assert out.count("|---") >= len(BENCHMARKS), out
