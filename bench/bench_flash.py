"""Deploy time to a board: edgeline-flash against `mpremote fs cp -r`, on the virtual board.

Both copy the same native build (firmware + shared_protocol as .mpy) to a virtual board
(tools/vboard: the unix port behind a pty, i.e. the real raw-REPL protocol, with no UART
speed limit, so the figures show protocol round trips, not 115200 baud). Each is run as a
command, the way a user runs it:

* first deploy to an empty flash;
* a second deploy with nothing changed: edgeline-flash trusts the manifest it keeps on the
  board (one read); mpremote's `cp` hashes every file on the board;
* a deploy after one file changed.

Besides wall time on the pty, the bytes that crossed the serial link (both directions) are
counted, with the time they would take on a real board's 115200-baud UART (10 bits a byte):
on hardware the link, not the host, is the bottleneck.

    .venv/bin/python -m bench.bench_flash [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tools.flash.build import MANIFEST_NAME, ROOT, BuildManifest, FileEntry, build, sha256_bytes
from tools.vboard import VirtualBoard

BAUD = 115200


def _run(board: VirtualBoard, args: list[str], cwd: Path) -> tuple[float, int]:
    before = board.bytes_from_host + board.bytes_to_host
    t0 = time.perf_counter()
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600, check=False)
    elapsed = time.perf_counter() - t0
    if result.returncode != 0:
        raise RuntimeError(f"{args[:4]} failed: {result.stderr[-500:]}")
    return elapsed, board.bytes_from_host + board.bytes_to_host - before


def _edgeline(board: VirtualBoard, build_dir: Path) -> Callable[[], tuple[float, int]]:
    cmd = [sys.executable, "-m", "tools.flash", "deploy", "--port", board.port, "--arch", "native"]
    cmd += ["--build-dir", str(build_dir), "--no-build", "--no-reset"]
    return lambda: _run(board, cmd, ROOT)


def _mpremote(board: VirtualBoard, build_dir: Path) -> Callable[[], tuple[float, int]]:
    tops = sorted(p.name for p in build_dir.iterdir() if p.name != "manifest.json")
    cmd = [sys.executable, "-m", "mpremote", "connect", board.port, "fs", "cp", "-r", *tops, ":./"]
    return lambda: _run(board, cmd, build_dir)


def _change(build_dir: Path, manifest: BuildManifest, entry: FileEntry, data: bytes) -> None:
    """Give one build file new content and record it in the build manifest, as a rebuild would."""
    (build_dir / entry.path).write_bytes(data)
    changed = dataclasses.replace(entry, sha256=sha256_bytes(data), size=len(data))
    files = tuple(changed if f.path == entry.path else f for f in manifest.files)
    (build_dir / MANIFEST_NAME).write_text(dataclasses.replace(manifest, files=files).to_json())


def rows(quick: bool = False) -> list[dict[str, Any]]:
    repeats = 1 if quick else 3
    out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-flash-") as tmp:
        work = Path(tmp)
        build_dir, manifest = build("native", out_dir=work / "build")
        size = sum(f.size for f in manifest.files)
        victim_entry = manifest.files[len(manifest.files) // 2]
        victim = build_dir / victim_entry.path
        for tool, make in (("edgeline-flash deploy", _edgeline), ("mpremote fs cp -r", _mpremote)):
            times: dict[str, list[tuple[float, int]]] = {"first": [], "unchanged": [], "one changed": []}
            for i in range(repeats):
                flash = work / f"flash-{tool.split()[0]}-{i}"
                flash.mkdir()
                original = victim.read_bytes()
                with VirtualBoard(flash) as board:
                    deploy = make(board, build_dir)
                    times["first"].append(deploy())
                    times["unchanged"].append(deploy())
                    _change(build_dir, manifest, victim_entry, original + b"\0")  # not imported here
                    try:
                        times["one changed"].append(deploy())
                    finally:
                        _change(build_dir, manifest, victim_entry, original)
            for case, values in times.items():
                out.append(
                    {
                        "tool": tool,
                        "case": case,
                        "seconds": min(v[0] for v in values),
                        "link_bytes": min(v[1] for v in values),
                        "files": len(manifest.files),
                        "bytes": size,
                    }
                )
    base = {r["case"]: r for r in out if r["tool"].startswith("mpremote")}
    for r in out:
        r["vs_mpremote"] = base[r["case"]]["seconds"] / r["seconds"]
        r["link_vs_mpremote"] = base[r["case"]]["link_bytes"] / r["link_bytes"]
    return out


def render(all_rows: Sequence[dict[str, Any]]) -> str:
    first = all_rows[0]
    lines = [
        f"Deploy of the native build ({first['files']} files, {first['bytes']} B) to the virtual board, "
        "best of runs, each a fresh command",
        "",
        "| tool | case | seconds (pty) | vs mpremote cp | serial bytes | at 115200 baud | fewer bytes than mpremote |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in all_rows:
        lines.append(
            f"| {r['tool']} | {r['case']} | {r['seconds']:.2f} | {r['vs_mpremote']:.1f}x | {r['link_bytes']} "
            f"| {r['link_bytes'] * 10 / BAUD:.1f} s | {r['link_vs_mpremote']:.1f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    print(render(rows(quick=args.quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
