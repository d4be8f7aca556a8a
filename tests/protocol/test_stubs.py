"""The .pyi stubs of shared_protocol (the gateway's strict mypy reads them instead of the
untyped board code) say what the code does: mypy's stubtest imports every module that has
a stub and compares names, signatures, defaults and kinds of parameters. A function added,
renamed or re-signed in a .py without its .pyi fails here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "shared_protocol"


def _stubbed_modules() -> list[str]:
    return sorted(f"shared_protocol.{p.stem}" for p in PACKAGE.glob("*.pyi"))


def test_every_stub_has_its_module() -> None:
    missing = [p.name for p in PACKAGE.glob("*.pyi") if not p.with_suffix(".py").exists()]
    assert not missing, f"stubs without a module: {missing}"


def test_stubs_match_the_code(tmp_path: Path) -> None:
    modules = _stubbed_modules()
    assert "shared_protocol.decode" in modules and "shared_protocol.gw_decode" in modules
    config = tmp_path / "mypy.ini"
    config.write_text("[mypy]\n", encoding="utf-8")  # not the project's: stubtest checks these stubs only
    env = dict(os.environ, MYPY_CACHE_DIR=str(tmp_path / "cache"))
    res = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "--mypy-config-file", str(config), *modules],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"no issues found in {len(modules)} modules" in res.stdout, res.stdout
