"""Flash wear of the offline queue during a link outage, on real littlefs.

The firmware's own OfflineQueue runs under CPython on littlefs-python (littlefs 2.11) through
a small adapter for the ``open``/``os`` calls it makes, on a block device that counts erases
per block. The filesystem is configured as MicroPython configures it on the two boards:

* block size 4096 on both: ESP32 ``BLOCK_SIZE_BYTES (4096)`` (ports/esp32/esp32_partition.c),
  RP2040 ``BLOCK_SIZE_BYTES (FLASH_SECTOR_SIZE)`` (ports/rp2/rp2_flash.c);
* block count: ESP32 generic 4 MiB: the ``vfs`` partition is 0x200000 bytes = 512 blocks
  (ports/esp32/partitions-4MiB.csv); Pico W: ``MICROPY_HW_FLASH_STORAGE_BYTES (848 * 1024)`` =
  212 blocks (ports/rp2/boards/RPI_PICO_W/mpconfigboard.h);
* read/prog size and lookahead: ``VfsLfs2`` defaults readsize=32, progsize=32, lookahead=32
  (extmod/vfs_lfs.c); the ESP32 mounts with the defaults (ports/esp32/modules/_boot.py,
  inisetup.py), the RP2 with ``progsize=256`` (ports/rp2/modules/_boot.py);
* ``block_cycles = 100`` and ``cache_size = MIN(block_size, 4 * MAX(read_size, prog_size))``
  (128 B on the ESP32, 1024 B on the Pico W), set by extmod/vfs_lfsx.c ``init_config``.

The same outage also runs on the MicroPython unix port against MicroPython's own littlefs
(``vfs.VfsLfs2`` on a counting RAM block device, bench/queue_wear.py): that build also writes
an mtime attribute with every file commit, as the boards do.

Outage: the link is down for ``OUTAGE_S`` (1 h) at the default config (50 Hz, 6 channels,
batch 32: a 411-byte DATA frame every 0.64 s, a 48-byte HEALTH frame every 30 s; [queue]
defaults: 8 RAM frames, 256 flash frames, 4096-byte blocks, 4 blocks a segment), then the link
comes back and the gateway ACKs everything. Baseline, same run: the write pattern before the
littlefs alignment (every queue block 4096 bytes, bench/queue_wear.py ``LegacyLayout``).

Wear-out: ``DAYS`` consecutive days of one such outage on one filesystem that also holds the
firmware twice, as a board holds it after its first update over the air (the flash tool's .mpy
build at the root and in the A/B slot ``a/``, docs/updates.md); the hottest
block's erases over those days give its erases per day, and 100 000 erase cycles per NOR
sector (the usual datasheet rating of the SPI NOR flash on these boards) give the days to wear
it out.

    .venv/bin/python -m bench.bench_flash_wear [--quick]
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
if str(ROOT / "firmware") not in sys.path:
    sys.path.append(str(ROOT / "firmware"))  # sensorfw, after everything else

from littlefs import FileHandle, LittleFS, LittleFSError, UserContext, lfs  # noqa: E402

from bench import queue_wear  # noqa: E402

ERASE_CYCLES = 100_000  # per sector, typical SPI NOR flash rating
OUTAGE_S = 3600
DAYS = 60
QUICK_OUTAGE_S = 600
QUICK_DAYS = 1


@dataclass(frozen=True)
class Port:
    """littlefs geometry and configuration of a MicroPython port (see the module doc)."""

    name: str
    block_count: int
    prog_size: int
    arch: str  # the mpy-cross arch of its build (tools/flash/build.py)
    read_size: int = 32
    lookahead: int = 32
    block_cycles: int = 100
    block_size: int = 4096

    @property
    def cache_size(self) -> int:
        return min(self.block_size, 4 * max(self.read_size, self.prog_size))


ESP32 = Port("ESP32 (4 MiB, vfs 2 MiB)", 512, 32, "xtensawin")
PICO_W = Port("Pico W (848 KiB)", 212, 256, "armv6m")
PORTS = (ESP32, PICO_W)


class CountingDevice(UserContext):
    """RAM flash that counts erases per block."""

    def __init__(self, port: Port) -> None:
        super().__init__(port.block_size * port.block_count)
        self.erases = [0] * port.block_count

    def erase(self, cfg: Any, block: int) -> int:
        self.erases[block] += 1
        return super().erase(cfg, block)


class LfsFiles:
    """``open`` and the ``os`` functions the queue calls, on a littlefs-python filesystem,
    with MicroPython's mode semantics ("ab" creates the file, as vfs_lfsx_file.c does)."""

    def __init__(self, fs: LittleFS) -> None:
        self.fs = fs

    def open(self, path: str, mode: str = "r") -> FileHandle:
        f = lfs.LFSFileFlag
        flags = f.rdwr if "+" in mode else f.wronly if ("w" in mode or "a" in mode) else f.rdonly
        if "w" in mode:
            flags |= f.creat | f.trunc
        elif "a" in mode:
            flags |= f.creat | f.append
        try:
            handle = lfs.file_open(self.fs.fs, path, flags)
        except LittleFSError as exc:
            raise OSError(-exc.code, path) from exc
        return FileHandle(self.fs.fs, handle)

    def listdir(self, path: str) -> list[str]:
        return self.fs.listdir(path)

    def mkdir(self, path: str) -> None:
        self.fs.mkdir(path)

    def remove(self, path: str) -> None:
        self.fs.remove(path)

    def rename(self, src: str, dst: str) -> None:
        self.fs.rename(src, dst)


def new_fs(port: Port) -> tuple[LittleFS, CountingDevice]:
    dev = CountingDevice(port)
    fs = LittleFS(
        dev,
        block_size=port.block_size,
        block_count=port.block_count,
        read_size=port.read_size,
        prog_size=port.prog_size,
        cache_size=port.cache_size,
        lookahead_size=port.lookahead,
        block_cycles=port.block_cycles,
    )
    return fs, dev


@contextlib.contextmanager
def queue_on(files: LfsFiles) -> Iterator[None]:
    """Point the firmware's queue modules at `files` (their module globals ``open`` and ``os``)
    for the duration; queue_scan is imported afresh by every OfflineQueue() and dropped after
    its boot scan, so it is patched once here, before each construction, by new_queue()."""
    import sensorfw.core.offline_queue as oq

    saved = oq.os
    oq.os = files  # type: ignore[assignment]
    oq.open = files.open  # type: ignore[attr-defined]
    try:
        yield
    finally:
        oq.os = saved
        del oq.open  # type: ignore[attr-defined]


def new_queue(files: LfsFiles, directory: str, legacy: bool = False, **cfg: int) -> queue_wear.MeasuredQueue:
    sys.modules.pop("sensorfw.core.queue_scan", None)
    import sensorfw.core.queue_scan as qs

    qs.os = files  # type: ignore[assignment]
    qs.open = files.open  # type: ignore[attr-defined]
    return queue_wear.new_queue(directory, legacy, **cfg)


def board_files(arch: str) -> dict[str, bytes]:
    """The files a board of ``arch`` holds: the flash tool's real build (.mpy, umqtt)."""
    from tools.flash.build import build

    with tempfile.TemporaryDirectory() as tmp:
        out, manifest = build(arch, out_dir=Path(tmp) / arch)
        return {f.path: (out / f.path).read_bytes() for f in manifest.files}


def store_firmware(fs: LittleFS, arch: str) -> int:
    """Put the firmware on the filesystem as a board that has taken one update over the air holds
    it (static data the allocator skips): the flash tool's build at the root, and a second copy in
    the A/B slot ``a/`` (docs/updates.md), all but the loader files that stay at the root."""
    from tools.flash.build import KEEP_SOURCE

    total = 0
    image = board_files(arch)
    for prefix in ("", "a/"):
        for rel, data in sorted(image.items()):
            if prefix and rel.split("/")[-1] in KEEP_SOURCE and "/" not in rel:
                continue
            path = prefix + rel
            parts = path.split("/")
            for i in range(1, len(parts)):
                with contextlib.suppress(FileExistsError):
                    fs.mkdir("/".join(parts[:i]))
            with fs.open(path, "wb") as f:
                f.write(data)
            total += len(data)
    return total


def outage_once(port: Port, legacy: bool, seconds: int, **cfg: int) -> dict[str, Any]:
    """One outage of `seconds` and the reconnect on a fresh filesystem: erases per 4 KB."""
    fs, dev = new_fs(port)
    files = LfsFiles(fs)
    fs.mkdir("queue")
    with queue_on(files):
        q = new_queue(files, "queue", legacy, **cfg)
        stream = queue_wear.FrameStream()
        base = sum(dev.erases)
        queue_wear.outage(q, stream, seconds)
        queue_wear.reconnect(q, stream)
        erases = sum(dev.erases) - base
    return _figures(erases, q) | {"hottest": max(dev.erases)}


def _figures(erases: int, q: queue_wear.MeasuredQueue) -> dict[str, Any]:
    return {
        "erases": erases,
        "appended": q.appended,
        "record_bytes": q.record_bytes,
        "block_writes": q.block_writes,
        "per_4k": erases * 4096 / q.appended,
        "per_4k_records": erases * 4096 / q.record_bytes,
    }


def days_of_outages(port: Port, legacy: bool, days: int, seconds: int) -> dict[str, Any]:
    """`days` days, one outage of `seconds` each, on a filesystem holding the firmware."""
    fs, dev = new_fs(port)
    files = LfsFiles(fs)
    static = store_firmware(fs, port.arch)
    fs.mkdir("queue")
    static_blocks = fs.used_block_count
    base = list(dev.erases)
    with queue_on(files):
        q = new_queue(files, "queue", legacy)
        stream = queue_wear.FrameStream()
        for _ in range(days):
            queue_wear.outage(q, stream, seconds)
            queue_wear.reconnect(q, stream)
            stream.t_ms += 86_400_000 - seconds * 1000  # the rest of the day: live, ACKed from RAM
            stream.next_data = stream.next_health = stream.t_ms
    worn = [a - b for a, b in zip(dev.erases, base, strict=True)]
    hottest = max(worn)
    per_day = hottest / days
    return {
        "static_bytes": static,
        "free_blocks": port.block_count - static_blocks,
        "erases_day": sum(worn) / days,
        "mean_day": sum(worn) / days / (port.block_count - static_blocks),
        "hottest_day": per_day,
        "days": ERASE_CYCLES / per_day if per_day else float("inf"),
    }


def upy_outage(port: Port, legacy: bool, seconds: int) -> dict[str, Any]:
    """The same outage on the MicroPython unix port's own littlefs (bench/queue_wear.py)."""
    from tests.support.upy import run_micropython

    args = [str(ROOT / "bench" / "queue_wear.py"), str(port.prog_size), str(port.block_count), str(seconds)]
    with tempfile.TemporaryDirectory(prefix="bench-wear-") as d:
        res = run_micropython([*args, "legacy" if legacy else "aligned"], heapsize="16m", cwd=d, timeout=600)
    if res.returncode != 0:
        raise RuntimeError(res.stdout.decode() + res.stderr.decode())
    line = [ln for ln in res.stdout.decode().splitlines() if ln.startswith("RESULT ")][-1]
    r: dict[str, Any] = ast.literal_eval(line[len("RESULT ") :])
    erases = r["erases_total"]
    return {
        "erases": erases,
        "per_4k": erases * 4096 / r["appended"],
        "per_4k_records": erases * 4096 / r["record_bytes"],
    }


def rows(quick: bool = False) -> list[dict[str, Any]]:
    return rows_for(QUICK_OUTAGE_S if quick else OUTAGE_S, QUICK_DAYS if quick else DAYS)


def rows_for(seconds: int, days: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for port in PORTS:
        for legacy in (True, False):
            once = outage_once(port, legacy, seconds)
            upy = upy_outage(port, legacy, seconds)
            life = days_of_outages(port, legacy, days, seconds)
            out.append(
                {
                    "port": port.name,
                    "layout": "before: 4096-byte appends (baseline)" if legacy else "littlefs-aligned blocks",
                    "seconds": seconds,
                    "sim_days": days,
                    **once,
                    "upy_per_4k": upy["per_4k"],
                    "upy_per_4k_records": upy["per_4k_records"],
                    **life,
                }
            )
    return out


def render(all_rows: Sequence[dict[str, Any]]) -> str:
    first = all_rows[0]
    minutes = first["seconds"] / 60
    lines = [
        f"Offline queue, one {minutes:g}-minute outage at 50 Hz x 6 channels (default config: 411-byte DATA "
        "frames, a HEALTH frame every 30 s, [queue] defaults), then reconnect and ACK; erases counted per "
        "flash block. littlefs-python = littlefs 2.11 under CPython; MicroPython = the unix port's VfsLfs2 "
        "(MicroPython's littlefs, mtime attributes on, as on the boards). Per 4 KB appended = erases / (bytes "
        "the queue appended to segment files / 4096); per 4 KB of records = per 4096 bytes of frames with "
        "their 7-byte headers (block padding counted against the queue).",
        "",
        "| port | queue write pattern | block writes | erases | per 4 KB appended | per 4 KB of records "
        "| MicroPython: per 4 KB appended | MicroPython: per 4 KB of records |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in all_rows:
        lines.append(
            f"| {r['port']} | {r['layout']} | {r['block_writes']} | {r['erases']} | {r['per_4k']:.3f} "
            f"| {r['per_4k_records']:.3f} | {r['upy_per_4k']:.3f} | {r['upy_per_4k_records']:.3f} |"
        )
    lines += [
        "",
        f"Wear-out at one {minutes:g}-minute outage a day: {first['sim_days']} simulated days on littlefs-python "
        f"(the filesystem also holds the firmware twice, at the root and in an A/B slot, "
        f"{first['static_bytes'] // 1024} KiB; littlefs "
        "spreads erases over the free blocks and moves a metadata pair after block_cycles = 100 erases). "
        f"Hottest block = the most erased block over those days (conservative: it includes a metadata pair's "
        f"run of erases before it moves); mean = erases per free block per day, the long-run rate. "
        f"{ERASE_CYCLES:,} erase cycles per sector.",
        "",
        "| port | queue write pattern | free blocks | erases / day | mean per free block / day "
        "| hottest block / day | days to wear out the hottest block (years) | at the mean rate (years) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in all_rows:
        lines.append(
            f"| {r['port']} | {r['layout']} | {r['free_blocks']} | {r['erases_day']:.0f} | {r['mean_day']:.2f} "
            f"| {r['hottest_day']:.2f} | {r['days']:,.0f} ({r['days'] / 365:,.0f}) "
            f"| {ERASE_CYCLES / r['mean_day']:,.0f} ({ERASE_CYCLES / r['mean_day'] / 365:,.0f}) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--outage-min", type=float, default=None, help=f"outage a day (default {OUTAGE_S // 60})")
    parser.add_argument("--days", type=int, default=None, help=f"days simulated for the wear-out (default {DAYS})")
    args = parser.parse_args(argv)
    seconds = QUICK_OUTAGE_S if args.quick else OUTAGE_S
    if args.outage_min is not None:
        seconds = int(args.outage_min * 60)
    days = args.days if args.days is not None else QUICK_DAYS if args.quick else DAYS
    print(render(rows_for(seconds, days)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
