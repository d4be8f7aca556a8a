"""Redeploys that must not trust file sizes: same-size content changes, on the virtual board.

A deploy skips a file only when the board manifest records the build's hash for it (and
the board has a file of that size); a change that keeps the size must still be written.
``--verify`` hashes the files on the board, so it also finds a same-size edit made behind
the tool's back, which the manifest (still claiming the old hash) hides.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

from tools.flash.board import BOARD_MANIFEST
from tools.flash.build import ROOT, BuildManifest
from tools.flash.cli import main
from tools.flash.commands import State
from tools.flash.deploy import RECORDED_HASH
from tools.vboard import VirtualBoard


def copy_sources(dest: Path) -> Path:
    """The board sources in a tree of the test's own, so the test can edit them."""
    for name in ("firmware", "shared_protocol"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def flash_tool(src: Path, *args: str) -> str:
    out = io.StringIO()
    code = main(list(args), state=State(root=src, out=out))
    assert code == 0, out.getvalue()
    return out.getvalue()


def mpremote(port: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "mpremote", "connect", port, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def board_manifest(flash: Path) -> dict[str, str]:
    files = json.loads((flash / BOARD_MANIFEST).read_text())["files"]
    assert isinstance(files, dict)
    return files


def assert_board_holds(flash: Path, build_dir: Path, manifest: BuildManifest) -> None:
    recorded = board_manifest(flash)
    for entry in manifest.files:
        assert (flash / entry.path).read_bytes() == (build_dir / entry.path).read_bytes(), entry.path
        assert recorded[entry.path] == entry.sha256[:RECORDED_HASH], entry.path


def edit_keeping_size(path: Path, old: bytes, new: bytes) -> None:
    assert len(old) == len(new)
    data = path.read_bytes()
    assert old in data, f"{path} no longer contains {old!r}: choose another same-size edit"
    path.write_bytes(data.replace(old, new, 1))


def test_redeploy_writes_files_whose_content_changed_but_not_their_size(tmp_path: Path, board: VirtualBoard) -> None:
    src = copy_sources(tmp_path / "src")
    build_dir = tmp_path / "build"
    flash = board.flash_dir
    deploy = ["deploy", "--port", board.port, "--arch", "native", "--build-dir", str(build_dir), "--no-reset"]
    flash_tool(src, *deploy)
    before = {e.path: e for e in BuildManifest.load(build_dir).files}
    assert mpremote(board.port, "exec", "import sensorfw.core.link as link\nprint(link.UP)").strip() == "1"

    # main.py is copied as source: change the case of one letter of its first comment.
    main_py = src / "firmware" / "main.py"
    first_line = main_py.read_bytes().split(b"\n", 1)[0]
    assert first_line.startswith(b"# ") and first_line[2:3].isalpha(), first_line
    edit_keeping_size(main_py, first_line, first_line[:2] + first_line[2:3].swapcase() + first_line[3:])
    # link.py is compiled: another small-int constant gives an .mpy of the same size.
    edit_keeping_size(src / "firmware" / "sensorfw" / "core" / "link.py", b"\nUP = 1\n", b"\nUP = 7\n")

    output = flash_tool(src, *deploy)
    manifest = BuildManifest.load(build_dir)
    after = {e.path: e for e in manifest.files}
    changed = sorted(p for p in after if after[p].sha256 != before[p].sha256)
    assert changed == ["main.py", "sensorfw/core/link.mpy"]
    assert all(after[p].size == before[p].size for p in changed), "the edits must keep the sizes"
    assert_board_holds(flash, build_dir, manifest)
    # the board runs the new content, not the old one
    assert mpremote(board.port, "exec", "import sensorfw.core.link as link\nprint(link.UP)").strip() == "7"
    assert (
        mpremote(board.port, "exec", "print(open('main.py').readline().rstrip())").strip()
        == main_py.read_text().split("\n", 1)[0]
    )
    for path in changed:
        assert f"write     {path} ({after[path].size} B)" in output
    assert f"deploy: 2 written, {len(after) - 2} unchanged, 0 removed" in output

    # The board manifest now records the new hashes: nothing left to write.
    again = flash_tool(src, *deploy, "--no-build")
    assert f"deploy: 0 written, {len(after)} unchanged, 0 removed" in again
    status = flash_tool(src, "status", "--port", board.port, "--arch", "native", "--build-dir", str(build_dir))
    assert f"{len(after)} ok, 0 changed, 0 missing, 0 extra" in status


def test_verify_finds_same_size_edits_the_board_manifest_hides(tmp_path: Path, board: VirtualBoard) -> None:
    src = copy_sources(tmp_path / "src")
    build_dir = tmp_path / "build"
    flash = board.flash_dir
    code = ["--port", board.port, "--arch", "native", "--build-dir", str(build_dir)]
    flash_tool(src, "deploy", *code, "--no-reset")
    manifest = BuildManifest.load(build_dir)
    total = len(manifest.files)
    claims = board_manifest(flash)

    # Edited behind the tool's back, same size: the manifest still claims the build's hash.
    victim = "sensorfw/core/link.mpy"
    good = (flash / victim).read_bytes()
    flipped = bytes([good[20] ^ 0xFF])
    mpremote(board.port, "exec", f"f = open({victim!r}, 'r+b')\nf.seek(20)\nf.write({flipped!r})\nf.close()")
    tampered = (flash / victim).read_bytes()
    assert len(tampered) == len(good) and tampered != good
    assert board_manifest(flash) == claims

    # docs/flashing.md: --verify hashes every file on the board instead of trusting its manifest.
    status = flash_tool(src, "status", *code, "--verify")
    assert f"  changed  {victim}\n" in status
    assert f"{total - 1} ok, 1 changed, 0 missing, 0 extra" in status

    output = flash_tool(src, "deploy", *code, "--no-build", "--no-reset", "--verify")
    assert f"write     {victim} ({len(good)} B)" in output
    assert f"deploy: 1 written, {total - 1} unchanged, 0 removed" in output
    assert (flash / victim).read_bytes() == good
    assert_board_holds(flash, build_dir, manifest)
    status = flash_tool(src, "status", *code, "--verify")
    assert f"{total} ok, 0 changed, 0 missing, 0 extra" in status

    # A wrong claim in the board manifest about a file that is right on the board.
    def spoil_claim() -> None:
        doc = json.loads((flash / BOARD_MANIFEST).read_text())
        doc["files"][victim] = "0" * RECORDED_HASH
        (flash / BOARD_MANIFEST).write_text(json.dumps(doc))

    # --verify finds the file right: nothing written, and the claim is corrected, so plain
    # deploys and `status` (which trust the manifest) agree with the board again.
    spoil_claim()
    output = flash_tool(src, "deploy", *code, "--no-build", "--no-reset", "--verify")
    assert f"deploy: 0 written, {total} unchanged, 0 removed" in output
    assert_board_holds(flash, build_dir, manifest)
    status = flash_tool(src, "status", *code)
    assert f"{total} ok, 0 changed, 0 missing, 0 extra" in status

    # Without --verify the claim decides: a claim that differs from the build is no reason
    # to skip, even though the size on the board is right.
    spoil_claim()
    output = flash_tool(src, "deploy", *code, "--no-build", "--no-reset")
    assert f"write     {victim} ({len(good)} B)" in output
    assert f"deploy: 1 written, {total - 1} unchanged, 0 removed" in output
    assert_board_holds(flash, build_dir, manifest)
