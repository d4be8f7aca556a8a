"""mypy from .venv-stubs over firmware files, against a runtime's stubs (the MicroPython port
stubs, circuitpython-stubs): our errors only. tests/firmware/test_stubs_typecheck.py and
tests/circuitpython/test_cp_typecheck.py say which stubs and files."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.support.upy import ROOT

STUBS_VENV = ROOT / ".venv-stubs"
MYPY = STUBS_VENV / "bin" / "mypy"
SETUP_COMMAND = "bash tools/setup_stubs_env.sh"


def run_mypy(files: list[str], *, cache: Path, mypypath: list[Path], platform: str, options: list[str]) -> list[str]:
    """The errors mypy reports in our files (errors inside the stubs are not ours). A run
    that neither succeeds nor reports errors (a bad flag, a crash) fails here."""
    if not MYPY.exists():
        raise FileNotFoundError(f"{MYPY} is missing: {SETUP_COMMAND}")
    env = dict(os.environ)
    env["MYPYPATH"] = os.pathsep.join(str(p) for p in mypypath)
    cmd = [
        str(MYPY),
        "--config-file",
        os.devnull,
        "--cache-dir",
        str(cache),
        *options,
        "--follow-imports=silent",
        "--check-untyped-defs",
        "--python-version",
        "3.11",
        "--platform",
        platform,
        *files,
    ]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    out = res.stdout + res.stderr
    errors = [ln for ln in out.splitlines() if ": error:" in ln]
    assert (res.returncode == 0 and "Success:" in out) or (res.returncode == 1 and errors), out
    return [ln for ln in errors if not ln.startswith(".venv-stubs") and "/.venv-stubs/" not in ln]
