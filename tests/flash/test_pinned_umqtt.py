"""Ship what is tested: boards get the pinned umqtt.simple the unix-port tests run, not mip's.

The pin (version, sha256) is read from tools/fetch_upy_deps.py, its only source. The
virtual board is driven through the real mpremote transport; mip is replaced by a trap, so
a test fails if anything calls it.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.upy import UPY_LIB
from tools.fetch_upy_deps import CP_PINS, DEFAULT_ARCHIVES, PINS
from tools.fetch_upy_deps import main as fetch_main
from tools.flash.board import BOARD_MANIFEST, Board
from tools.flash.build import ARCHES, MANIFEST_NAME, BuildManifest, find_mpy_cross, sha256_bytes
from tools.flash.cli import main
from tools.flash.commands import State
from tools.flash.deploy import RECORDED_HASH
from tools.vboard import VirtualBoard

PIN = next(pin for pin in PINS if pin.project == "micropython-umqtt.simple")
TESTED = UPY_LIB / "umqtt" / "simple.py"  # what the unix-port tests import
LIB = "lib/umqtt/simple.mpy"
PINNED_LINE = f"umqtt.simple {PIN.version} (pinned, sha256 {PIN.sha256}) -> {LIB}"
FIX = "`.venv/bin/python tools/fetch_upy_deps.py`"


@pytest.fixture(autouse=True)
def no_mip(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Any mip call fails the test (and is recorded, in case the error is swallowed)."""
    import mpremote.mip

    calls: list[str] = []

    def trap(*args: object, **kwargs: object) -> None:
        calls.append(repr(args))
        raise AssertionError("mip was called")

    monkeypatch.setattr(mpremote.mip, "do_mip", trap)
    monkeypatch.setattr(Board, "mip_install", trap)
    yield calls
    assert calls == []


def run(*args: str, archives: Path = DEFAULT_ARCHIVES) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(args), state=State(out=out, archives=archives))
    return code, out.getvalue()


def compiled(source: Path, tmp_path: Path, arch: str = "native") -> bytes:
    """mpy-cross run by hand on a file, as the build names it (umqtt/simple.py)."""
    out = tmp_path / "by-hand.mpy"
    subprocess.run(
        [find_mpy_cross(), f"-march={ARCHES[arch]}", "-s", "umqtt/simple.py", "-o", str(out), str(source)],
        check=True,
        timeout=60,
    )
    return out.read_bytes()


def recorded(flash: Path) -> dict[str, str]:
    files = json.loads((flash / BOARD_MANIFEST).read_text())["files"]
    assert isinstance(files, dict)
    return files


def tampered_archives(tmp_path: Path) -> Path:
    archives = tmp_path / "upy-dist"
    archives.mkdir()
    data = bytearray((DEFAULT_ARCHIVES / PIN.filename).read_bytes())
    data[len(data) // 2] ^= 0x40
    (archives / PIN.filename).write_bytes(bytes(data))
    return archives


def test_deploy_puts_the_pinned_file_on_the_board_and_redeploys_skip_it(
    tmp_path: Path, board: VirtualBoard, no_mip: list[str]
) -> None:
    build_dir = tmp_path / "build"
    base = ["--port", board.port, "--arch", "native", "--build-dir", str(build_dir), "--no-reset"]
    code, out = run("deploy", *base)
    assert code == 0, out
    assert PINNED_LINE in out
    assert "mip" not in out
    flash = board.flash_dir
    on_board = (flash / LIB).read_bytes()
    # exactly the tested source, compiled for the board like the rest of the build
    assert on_board == compiled(TESTED, tmp_path)
    entry = next(e for e in BuildManifest.load(build_dir).files if e.path == LIB)
    assert entry.sha256 == sha256_bytes(on_board)
    assert f"write     {LIB} ({len(on_board)} B)" in out
    assert recorded(flash)[LIB] == entry.sha256[:RECORDED_HASH]
    assert not (flash / "lib" / "umqtt" / "simple.py").exists()
    mtime = (flash / LIB).stat().st_mtime_ns

    # a redeploy (rebuilt: the same bytes) skips it; so does one of the existing build
    for extra in ([], ["--no-build"]):
        code, out = run("deploy", *base, *extra)
        assert code == 0, out
        assert PINNED_LINE in out
        assert f"unchanged {LIB}" in out
        assert f"write     {LIB}" not in out
        assert "deploy: 0 written" in out
    assert (flash / LIB).stat().st_mtime_ns == mtime

    code, out = run("status", "--port", board.port, "--arch", "native", "--build-dir", str(build_dir), "-v")
    assert code == 0, out
    assert f"  ok       {LIB}" in out
    assert no_mip == []


def test_a_tampered_archive_is_refused_before_the_board_is_touched(
    tmp_path: Path, board: VirtualBoard, capfd: pytest.CaptureFixture[str]
) -> None:
    archives = tampered_archives(tmp_path)
    code, out = run(
        "deploy", "--port", board.port, "--arch", "native", "--build-dir", str(tmp_path / "b"), archives=archives
    )
    err = capfd.readouterr().err
    assert code == 1, out
    assert f"edgeline-flash: umqtt.simple {PIN.version} (pinned): {archives / PIN.filename} has sha256 " in err
    assert f"not the pinned {PIN.sha256} (tools/fetch_upy_deps.py): refusing to use it" in err
    assert f"Run {FIX}: it replaces the file with the pinned archive" in err
    assert "connect" not in out
    assert list(board.flash_dir.iterdir()) == []
    assert board.reboots == 0


def test_a_missing_archive_names_the_fix(
    tmp_path: Path, board: VirtualBoard, capfd: pytest.CaptureFixture[str]
) -> None:
    code, _ = run(
        "deploy",
        "--port",
        board.port,
        "--arch",
        "native",
        "--build-dir",
        str(tmp_path / "b"),
        archives=tmp_path / "none",
    )
    err = capfd.readouterr().err
    assert code == 1
    assert f"the pinned archive {tmp_path / 'none' / PIN.filename} is missing: run {FIX} to fetch it" in err
    assert list(board.flash_dir.iterdir()) == []


def test_fetch_replaces_a_tampered_archive_and_unpacks_the_tested_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fix the errors name: fetch_upy_deps fetches again a cached archive that differs
    from the pin, and keeps the unpacked file identical to the archive's. The package index
    here is a local directory (a file: URL, as pip accepts), so no network is needed."""
    index = tmp_path / "index"
    (index / "micropython-umqtt-simple").mkdir(parents=True)
    shutil.copyfile(DEFAULT_ARCHIVES / PIN.filename, index / "micropython-umqtt-simple" / PIN.filename)
    monkeypatch.setenv("PIP_INDEX_URL", index.as_uri())
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
    archives = tampered_archives(tmp_path)
    cache = tmp_path / "upy-lib"
    (cache / "umqtt").mkdir(parents=True)
    (cache / "umqtt" / "simple.py").write_text("# edited by hand\n")

    for pin in CP_PINS:  # the CircuitPython libraries' archives are intact: kept as they are
        shutil.copyfile(DEFAULT_ARCHIVES / pin.filename, archives / pin.filename)
    cp_cache = tmp_path / "cp-lib"

    assert fetch_main(["--cache", str(cache), "--cp-cache", str(cp_cache), "--archives", str(archives)]) == 0
    assert sha256_bytes((archives / PIN.filename).read_bytes()) == PIN.sha256
    assert (cache / "umqtt" / "simple.py").read_bytes() == TESTED.read_bytes()
    assert (cp_cache / "adafruit_minimqtt" / "adafruit_minimqtt.py").is_file()
    # and the flash tool accepts the archive again
    assert run("build", "--arch", "native", "--build-dir", str(tmp_path / "b"), archives=archives)[0] == 0


def test_a_tampered_build_file_or_a_build_of_another_pin_is_refused(
    tmp_path: Path, board: VirtualBoard, capfd: pytest.CaptureFixture[str]
) -> None:
    build_dir = tmp_path / "build"
    assert run("build", "--arch", "native", "--build-dir", str(build_dir))[0] == 0
    base = ["--port", board.port, "--arch", "native", "--build-dir", str(build_dir), "--no-build", "--no-reset"]

    good = (build_dir / LIB).read_bytes()
    (build_dir / LIB).write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    code, _ = run("deploy", *base)
    assert code == 1
    assert f"{build_dir / LIB} changed after the build (its hash differs from manifest.json): rebuild" in (
        capfd.readouterr().err
    )
    (build_dir / LIB).write_bytes(good)

    # a build made from another archive (an older pin): its manifest says so
    doc = json.loads((build_dir / MANIFEST_NAME).read_text())
    doc["files"][LIB]["source"] = "micropython-umqtt.simple-1.3.3.tar.gz:umqtt/simple.py#sha256=" + "0" * 64
    (build_dir / MANIFEST_NAME).write_text(json.dumps(doc))
    code, _ = run("deploy", *base)
    err = capfd.readouterr().err
    assert code == 1
    assert f"has {LIB} from micropython-umqtt.simple-1.3.3.tar.gz" in err
    assert f"but the pinned umqtt.simple is {PIN.filename}:umqtt/simple.py#sha256={PIN.sha256}" in err
    assert "rebuild (run without --no-build" in err

    # a build without it (made by an older edgeline-flash)
    del doc["files"][LIB]
    (build_dir / MANIFEST_NAME).write_text(json.dumps(doc))
    code, _ = run("deploy", *base)
    assert code == 1
    assert f"has {LIB} without it" in capfd.readouterr().err
    assert list(board.flash_dir.iterdir()) == []


def test_umqtt_from_is_an_explicit_override_and_the_next_deploy_restores_the_pin(
    tmp_path: Path, board: VirtualBoard
) -> None:
    mine = tmp_path / "mine" / "umqtt" / "simple.py"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(TESTED.read_bytes() + b"\nPATCHED = 1\n")
    build_dir = tmp_path / "build"
    base = ["--port", board.port, "--arch", "native", "--build-dir", str(build_dir), "--no-reset"]
    code, out = run("deploy", *base, "--umqtt-from", str(tmp_path / "mine"))
    assert code == 0, out
    assert PINNED_LINE not in out
    assert (
        f"umqtt.simple from {mine} (--umqtt-from override, NOT the pinned {PIN.version} the tests run; "
        f"source sha256 {sha256_bytes(mine.read_bytes())}) -> {LIB}"
    ) in out
    assert (board.flash_dir / LIB).read_bytes() == compiled(mine, tmp_path)

    code, out = run("deploy", *base, "--no-build")
    assert code == 0, out
    assert PINNED_LINE in out
    assert f"write     {LIB}" in out
    assert (board.flash_dir / LIB).read_bytes() == compiled(TESTED, tmp_path)


def test_a_board_of_the_old_tool_gets_its_lib_replaced(tmp_path: Path, board: VirtualBoard) -> None:
    """Older edgeline-flash copied umqtt/simple.py (recorded) or mip put one there (not
    recorded): either would be imported before the pinned .mpy, so it goes."""
    build_dir = tmp_path / "build"
    base = ["--port", board.port, "--arch", "native", "--build-dir", str(build_dir), "--no-reset"]
    flash = board.flash_dir
    old = flash / "lib" / "umqtt" / "simple.py"
    for claimed in (True, False):
        old.parent.mkdir(parents=True, exist_ok=True)
        old.write_text("raise ImportError('old umqtt')\n")
        if claimed:
            (flash / BOARD_MANIFEST).write_text(
                json.dumps({"format": 1, "arch": "native", "files": {"lib/umqtt/simple.py": "0" * RECORDED_HASH}})
            )
        code, out = run("deploy", *base)
        assert code == 0, out
        assert out.count("remove    lib/umqtt/simple.py") == 1
        assert not old.exists()
        assert (flash / LIB).read_bytes() == compiled(TESTED, tmp_path)
        assert "lib/umqtt/simple.py" not in recorded(flash)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--umqtt-from", str(TESTED), "--umqtt-mip"], "--umqtt-from and --umqtt-mip both replace"),
        (["--mip-index", "http://127.0.0.1:9"], "--mip-index is for --umqtt-mip: add --umqtt-mip"),
        (["--no-mip"], "--no-mip is gone: edgeline-flash runs no mip unless asked (--umqtt-mip)"),
    ],
)
def test_umqtt_options_that_make_no_sense_are_refused(
    tmp_path: Path, board: VirtualBoard, capfd: pytest.CaptureFixture[str], options: list[str], message: str
) -> None:
    devices = tmp_path / "devices.toml"
    devices.write_text('[devices.vb1]\narch = "native"\n[devices.vb1.config]\nsite = "lab"\n')
    code, _ = run("provision", "--device", "vb1", "--config", str(devices), "--port", board.port, *options)
    assert code == 1
    assert message in capfd.readouterr().err
    assert list(board.flash_dir.iterdir()) == []


def test_the_cached_archive_is_the_pinned_one() -> None:
    """The repository's own cache (made by tools/setup.sh) holds what the pin says."""
    archive = DEFAULT_ARCHIVES / PIN.filename
    assert archive.is_file(), f"run {FIX}"
    assert sha256_bytes(archive.read_bytes()) == PIN.sha256
