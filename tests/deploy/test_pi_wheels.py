"""The gateway installs on a Raspberry Pi (64-bit Raspberry Pi OS: Bookworm's CPython 3.11,
Trixie's 3.13) from PyPI wheels alone, nothing compiled on the Pi: ``pip download
--only-binary :all:`` for linux aarch64 resolves the runtime dependencies of pyproject.toml
(``dependencies`` + the ``inference`` extra) at the versions requirements/lock.txt pins.

Facts this checks (docs/gateway.md, "Running on a Raspberry Pi"): LiteRT (ai-edge-litert) has
aarch64 wheels for both Pythons (manylinux_2_27: glibc 2.27+); tflite-runtime 2.14, the older
alternative, only for CPython 3.11 (manylinux_2_34: glibc 2.34+, i.e. Bookworm, not Bullseye).
Needs PyPI (the wheels are cached in .cache/pip-aarch64)."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.support.upy import ROOT

# glibc of Raspberry Pi OS Bookworm is 2.36: every manylinux tag up to it.
PLATFORMS = ["manylinux2014_aarch64", *(f"manylinux_2_{m}_aarch64" for m in range(17, 37)), "linux_aarch64"]
CACHE = ROOT / ".cache" / "pip-aarch64"


def _runtime_requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], *project["optional-dependencies"]["inference"]]


def _download(python: str, requirements: list[str], dest: Path, *, lock: bool = True) -> list[str]:
    cmd = [sys.executable, "-m", "pip", "download", "--only-binary", ":all:", "--implementation", "cp"]
    cmd += ["--python-version", python, "-d", str(dest), "--cache-dir", str(CACHE), "--progress-bar", "off"]
    cmd += [arg for p in PLATFORMS for arg in ("--platform", p)]
    if lock:
        cmd += ["-c", str(ROOT / "requirements" / "lock.txt")]
    r = subprocess.run([*cmd, *requirements], capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, (
        f"no aarch64 wheels for CPython {python} of {requirements} (this test needs PyPI to be reachable; "
        f"a resolution error means a dependency has no Pi wheel at that version):\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    )
    return sorted(p.name for p in dest.iterdir())


@pytest.mark.parametrize("python", ["3.11", "3.13"])
def test_runtime_dependencies_have_wheels_for_a_pi(python: str, tmp_path: Path) -> None:
    requirements = _runtime_requirements()
    assert any(r.startswith("ai-edge-litert") for r in requirements), requirements
    files = _download(python, requirements, tmp_path)
    assert all(f.endswith(".whl") for f in files), files
    tag = f"cp{python.replace('.', '')}"
    for f in files:
        abi_platform = f.removesuffix(".whl").split("-")[-2:]
        pure = abi_platform == ["none", "any"]
        assert pure or "aarch64" in abi_platform[1], f"{f}: neither pure Python nor aarch64"
        if not pure:
            assert re.search(rf"-({tag}-{tag}|cp3\d+-abi3)-", f), f"{f}: not for CPython {python}"
    names = {re.split(r"-\d", f, maxsplit=1)[0].lower() for f in files}
    for dist in ("paho_mqtt", "numpy", "bottle", "prometheus_client", "ai_edge_litert"):
        assert dist in names, (dist, files)


def test_tflite_runtime_has_a_pi_wheel_for_python_3_11_only(tmp_path: Path) -> None:
    """The documented alternative to LiteRT (docs/gateway.md): tflite-runtime 2.14 with numpy 1."""
    files = _download("3.11", ["tflite-runtime==2.14.0", "numpy<2"], tmp_path / "311", lock=False)
    assert any(f.startswith("tflite_runtime-2.14.0-cp311-cp311-manylinux_2_34_aarch64") for f in files), files
    r = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--only-binary", ":all:", "--no-deps", "--implementation", "cp"]
        + ["--python-version", "3.13", "-d", str(tmp_path / "313"), "--cache-dir", str(CACHE)]
        + [arg for p in PLATFORMS for arg in ("--platform", p)]
        + ["tflite-runtime"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert r.returncode != 0 and "No matching distribution found for tflite-runtime" in r.stderr, (
        "tflite-runtime now has a CPython 3.13 aarch64 wheel: update docs/gateway.md and this test\n" + r.stdout
    )
