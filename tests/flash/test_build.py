"""edgeline-flash build: mpy-cross output, manifests, the pinned libraries, and errors that name
file and line (or the fix)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.upy import UPY_LIB, micropython_path
from tools.fetch_upy_deps import DEFAULT_ARCHIVES, PINS, unpack
from tools.flash.build import (
    ARCHES,
    LIBRARIES,
    ROOT,
    BuildManifest,
    board_sources,
    build,
    find_mpy_cross,
    library,
    sha256_bytes,
)
from tools.flash.errors import FlashError

UMQTT = library("umqtt.simple")
#: the pin, from its only source (tools/fetch_upy_deps.py)
UMQTT_PIN = next(pin for pin in PINS if pin.project == "micropython-umqtt.simple")
#: the file the unix-port tests run (tests/support/upy.py puts UPY_LIB on MICROPYPATH)
TESTED_UMQTT = UPY_LIB / "umqtt" / "simple.py"

# sys.implementation._mpy arch codes, as written into the third header byte (bits 2..7)
ARCH_CODES = {"armv6m": 4, "xtensawin": 10}

IMPORT_ALL = """
import sys
for name in sys.argv[1:]:
    try:
        __import__(name)
        m = sys.modules[name]
        print(name, "OK", getattr(m, "__file__", "?"))
    except BaseException as e:
        print(name, "ERR", type(e).__name__)
"""


def _module_names(manifest: BuildManifest) -> list[str]:
    names = []
    for entry in manifest.files:
        if entry.path.endswith(".mpy") and not entry.path.startswith("lib/"):
            name = entry.path[: -len(".mpy")].replace("/", ".")
            names.append(name.removesuffix(".__init__"))
    return names


def _import_all(micropypath: list[Path], names: list[str], cwd: Path) -> dict[str, tuple[str, str]]:
    env = dict(os.environ, MICROPYPATH=":".join(str(p) for p in micropypath))
    script = cwd / "import_all.py"
    script.write_text(IMPORT_ALL)
    out = subprocess.run(
        [micropython_path(), str(script), *names],
        check=False,
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    result = {}
    for line in out.stdout.splitlines():
        name, status, detail = line.split(" ", 2)
        result[name] = (status, detail)
    return result


def _check_manifest(build_dir: Path, manifest: BuildManifest) -> None:
    on_disk = sorted(
        p.relative_to(build_dir).as_posix() for p in build_dir.rglob("*") if p.is_file() and p.name != "manifest.json"
    )
    assert on_disk == [f.path for f in manifest.files]
    for entry in manifest.files:
        data = (build_dir / entry.path).read_bytes()
        assert sha256_bytes(data) == entry.sha256
        assert len(data) == entry.size
    assert BuildManifest.load(build_dir) == manifest
    doc = json.loads((build_dir / "manifest.json").read_text())
    assert doc["arch"] == manifest.arch
    assert "mpy v6" in doc["mpy_cross"]


def test_native_build_is_importable_by_the_unix_port(tmp_path: Path) -> None:
    build_dir, manifest = build("native", out_dir=tmp_path / "native")
    _check_manifest(build_dir, manifest)
    paths = [f.path for f in manifest.files]
    assert "shared_protocol/header.mpy" in paths
    assert "shared_protocol/np_decode.mpy" not in paths  # CPython + numpy only
    assert not any(p.endswith(".py") and p not in ("main.py", "boot.py") for p in paths)
    assert "otaslots.mpy" in paths  # the A/B loader's logic main.py imports, at the flash root

    names = _module_names(manifest)
    work = tmp_path / "work"
    work.mkdir()
    compiled = _import_all([build_dir], names, work)
    from_source = _import_all([ROOT / "firmware", ROOT], names, work)
    assert set(compiled) == set(names)
    for name in names:
        # a compiled module behaves like its source: imports (or fails) the same way
        assert compiled[name][0] == from_source[name][0], (name, compiled[name], from_source[name])
        if compiled[name][0] == "OK":
            assert compiled[name][1].endswith(".mpy"), compiled[name]
    for name in names:
        if name.startswith("shared_protocol"):
            assert compiled[name][0] == "OK", (name, compiled[name])
    # the pinned library, from lib/ as on a board
    umqtt = _import_all([build_dir / "lib"], ["umqtt.simple"], work)
    assert umqtt["umqtt.simple"] == ("OK", str(build_dir / "lib" / "umqtt" / "simple.mpy"))


@pytest.mark.parametrize("arch", ["armv6m", "xtensawin"])
def test_cross_build_for_boards(tmp_path: Path, arch: str) -> None:
    build_dir, manifest = build(arch, out_dir=tmp_path / arch)
    _check_manifest(build_dir, manifest)
    assert manifest.arch == arch
    sources = {board_path for _, board_path in board_sources()}
    libraries = {lib.board_path: lib.source for lib in LIBRARIES}
    for entry in manifest.files:
        data = (build_dir / entry.path).read_bytes()
        if entry.path in ("main.py", "boot.py"):
            assert entry.path in sources
            continue
        assert data[:2] == b"M\x06", entry.path  # .mpy format 6
        arch_code = data[2] >> 2
        assert arch_code in (0, ARCH_CODES[arch]), (entry.path, arch_code)  # bytecode-only or this arch
        if entry.path in libraries:
            assert entry.source == libraries[entry.path]
        else:
            assert entry.path[: -len(".mpy")] + ".py" in sources
    assert set(libraries) <= {e.path for e in manifest.files}


def test_build_is_deterministic(tmp_path: Path) -> None:
    _, first = build("xtensawin", out_dir=tmp_path / "a")
    _, second = build("xtensawin", out_dir=tmp_path / "b")
    assert first == second


def _fake_root(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "firmware" / "sensorfw").mkdir(parents=True)
    (root / "shared_protocol").mkdir()
    (root / "firmware" / "main.py").write_text("import sensorfw.good\n")
    (root / "firmware" / "sensorfw" / "__init__.py").write_text("")
    (root / "firmware" / "sensorfw" / "good.py").write_text("X = 1\n")
    (root / "shared_protocol" / "__init__.py").write_text("PROTOCOL_VERSION = 1\n")
    return root


def test_compile_error_names_file_and_line(tmp_path: Path) -> None:
    root = _fake_root(tmp_path)
    out = tmp_path / "out"
    build("armv6m", root=root, out_dir=out)
    before = (out / "manifest.json").read_text()
    (root / "firmware" / "sensorfw" / "broken.py").write_text("x = 1\ny = 2\ndef f(:\n    pass\n")
    with pytest.raises(FlashError) as caught:
        build("armv6m", root=root, out_dir=out)
    message = str(caught.value)
    assert "firmware/sensorfw/broken.py:3" in message
    assert "SyntaxError" in message
    # the previous build is left as it was
    assert (out / "manifest.json").read_text() == before
    assert not (out.parent / "out.tmp").exists()


def test_syntax_error_in_main_py_is_reported_too(tmp_path: Path) -> None:
    root = _fake_root(tmp_path)
    (root / "firmware" / "main.py").write_text("import sensorfw.good\nwhile True\n")
    with pytest.raises(FlashError, match=r"firmware/main\.py:2"):
        build("xtensawin", root=root, out_dir=tmp_path / "out")


def test_main_py_stays_source(tmp_path: Path) -> None:
    root = _fake_root(tmp_path)
    build_dir, manifest = build("native", root=root, out_dir=tmp_path / "out")
    assert [f.path for f in manifest.files] == [
        "lib/umqtt/simple.mpy",
        "main.py",
        "sensorfw/__init__.mpy",
        "sensorfw/good.mpy",
        "shared_protocol/__init__.mpy",
    ]
    assert (build_dir / "main.py").read_text() == "import sensorfw.good\n"


def test_unknown_arch_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FlashError, match="unknown arch 'esp8266'"):
        build("esp8266", out_dir=tmp_path / "x")


# ------------------------------------------------------------ the pinned umqtt.simple


def _mpy_cross(source: Path, arch: str, name: str, out: Path) -> bytes:
    subprocess.run(
        [find_mpy_cross(), f"-march={ARCHES[arch]}", "-s", name, "-o", str(out), str(source)],
        check=True,
        timeout=60,
    )
    return out.read_bytes()


@pytest.mark.parametrize("arch", list(ARCHES))
def test_build_ships_the_pinned_umqtt_the_tests_run(tmp_path: Path, arch: str) -> None:
    build_dir, manifest = build(arch, root=_fake_root(tmp_path), out_dir=tmp_path / "out")
    entry = next(e for e in manifest.files if e.path == "lib/umqtt/simple.mpy")
    # the manifest names the archive, the member and the pinned hash (from fetch_upy_deps.PINS)
    assert entry.source == f"{UMQTT_PIN.filename}:umqtt/simple.py#sha256={UMQTT_PIN.sha256}"
    # the archive's member is, byte for byte, the file the unix-port tests run ...
    archive = (DEFAULT_ARCHIVES / UMQTT_PIN.filename).read_bytes()
    assert sha256_bytes(archive) == UMQTT_PIN.sha256
    assert unpack(UMQTT_PIN, archive)["umqtt/simple.py"] == TESTED_UMQTT.read_bytes()
    # ... and the board gets that file compiled like the rest of the build: the same bytes
    # as mpy-cross gives for the tested source
    expected = _mpy_cross(TESTED_UMQTT, arch, "umqtt/simple.py", tmp_path / "expected.mpy")
    assert (build_dir / "lib" / "umqtt" / "simple.mpy").read_bytes() == expected
    assert entry.sha256 == sha256_bytes(expected)
    assert UMQTT.describe() == (
        f"umqtt.simple {UMQTT_PIN.version} (pinned, sha256 {UMQTT_PIN.sha256}) -> lib/umqtt/simple.mpy"
    )
    assert UMQTT_PIN.version == "1.3.4"


def _archives_copy(tmp_path: Path) -> Path:
    archives = tmp_path / "upy-dist"
    archives.mkdir()
    shutil.copyfile(DEFAULT_ARCHIVES / UMQTT_PIN.filename, archives / UMQTT_PIN.filename)
    return archives


def test_a_tampered_archive_is_refused_and_the_previous_build_kept(tmp_path: Path) -> None:
    root = _fake_root(tmp_path)
    archives = _archives_copy(tmp_path)
    out = tmp_path / "out"
    build("armv6m", root=root, out_dir=out, archives=archives)
    before = (out / "manifest.json").read_text()
    archive = archives / UMQTT_PIN.filename
    data = bytearray(archive.read_bytes())
    data[-20] ^= 0x01
    archive.write_bytes(bytes(data))
    with pytest.raises(FlashError) as caught:
        build("armv6m", root=root, out_dir=out, archives=archives)
    message = str(caught.value)
    assert message.startswith("umqtt.simple 1.3.4 (pinned): ")
    assert f"{archive} has sha256 {sha256_bytes(bytes(data))}, not the pinned {UMQTT_PIN.sha256}" in message
    assert "refusing to use it" in message
    assert "Run `.venv/bin/python tools/fetch_upy_deps.py`" in message
    assert (out / "manifest.json").read_text() == before
    assert not (out.parent / "out.tmp").exists()


def test_a_missing_archive_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(FlashError) as caught:
        build("native", root=_fake_root(tmp_path), out_dir=tmp_path / "out", archives=tmp_path / "nothing")
    message = str(caught.value)
    assert f"the pinned archive {tmp_path / 'nothing' / UMQTT_PIN.filename} is missing" in message
    assert "run `.venv/bin/python tools/fetch_upy_deps.py`" in message
    assert "make test" in message
    assert not (tmp_path / "out").exists()


def test_board_code_may_not_claim_lib(tmp_path: Path) -> None:
    root = _fake_root(tmp_path)
    (root / "firmware" / "lib").mkdir()
    (root / "firmware" / "lib" / "mine.py").write_text("X = 1\n")
    with pytest.raises(FlashError, match=r"lib/mine\.py: lib/ on the board is for the pinned libraries"):
        build("native", root=root, out_dir=tmp_path / "out")
