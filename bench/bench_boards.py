"""The firmware on the port-faithful emulation of each board (issue 11): heap and timing.

1. Minimum heap: the default configuration (one MPU-6050 at 50 Hz, every other key at its
   default) runs 60 simulated seconds, with a 10 s network outage, from .mpy files as the
   flash tool installs them; the heap size is bisected to 1 KB. The simulated hardware
   (sim board, emulated `machine`, I2C MPU-6050, signal generators) is C code outside the
   heap on a board, so its footprint, measured in a separate process, is taken off. The
   64-bit unix port needs ~1.42x the heap of a 32-bit board for the same objects (the
   firmware's default config ran in 184k on this port and in 130k on a 32-bit build of the
   same source, docs/firmware.md "Memory"), so the board figure is the firmware's share
   divided by 1.42. Baselines: the free heap with Wi-Fi up (ESP32 ~110 KB, Pico W ~190 KB); the target
   leaves >= 25 % of it.
2. Timing gaps: the same firmware with the main loop blocked in C code that services no
   callback (a 1 s and a 4 s block, as flash erase or GC would), MPU-6050 paced by its FIFO
   against the timer-paced capture of an ADC channel (the baseline path), both at 50 Hz on
   the emulated ESP32: soft callbacks dropped by the port's scheduler (the truth the
   firmware cannot see), samples the firmware counted as missed, and DATA timing holes.
"""

from __future__ import annotations

import itertools
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.firmware.simdevice import SimDevice

WORD_RATIO = 1.42  # 64-bit unix port heap / 32-bit board heap for the same objects
# free heap with Wi-Fi up on each board (shared design notes, ports.md): the baselines
FREE = {"esp32_devkit": 110 * 1024, "pico_w": 190 * 1024}
TARGET_HEADROOM = 0.25  # of an ESP32's free heap, left after the firmware


def _env(lib: Path) -> dict[str, str]:
    return {"MICROPYPATH": str(lib), "EDGELINE_SIM_SPEED": "max"}


# A device for one bisection run: flash directory, config, heap size -> a SimDevice to run
DeviceFactory = Callable[[Path, dict[str, Any], int], "SimDevice"]
# Prepare a runtime in a scratch directory for a board: (simulated hardware's heap bytes,
# device factory, environment of every run)
Prepare = Callable[[Path, str], tuple[int, DeviceFactory, dict[str, str]]]


def prepare_micropython(d: Path, board: str) -> tuple[int, DeviceFactory, dict[str, str]]:
    """MicroPython: main.py over .mpy files, as the flash tool installs them."""
    from tests.firmware.simdevice import SimDevice
    from tests.firmware.test_fw_heap64k import build_mpy, sim_footprint
    from tests.support.upy import ROOT

    lib = build_mpy(d / "mpy")
    main = lib / "main.py"
    main.write_text((ROOT / "firmware" / "main.py").read_text())
    sim = sim_footprint(lib, d / "probe", board)

    def device(flash: Path, cfg: dict[str, Any], heap: int) -> SimDevice:
        return SimDevice(flash, cfg, heapsize=str(heap), main=str(main))

    return sim, device, _env(lib)


def _min_heap(
    board: str,
    quick: bool,
    *,
    prepare: Prepare = prepare_micropython,
    seconds: int | None = None,
    step: int | None = None,
    free: int | None = None,
    over: dict[str, Any] | None = None,
    bracket: tuple[int, int] = (60_000, 400_000),
) -> dict[str, Any]:
    """Bisect the smallest heap the default configuration runs `seconds` in, within
    bracket (the top must run). prepare: the runtime; step: the bisection's resolution (a
    step of the bracket's width: one run at the top); over: config keys on top of the
    defaults."""
    from tests.firmware.gateway_stub import GatewayStub
    from tools.mosquitto import Mosquitto

    if seconds is None:
        seconds = 10 if quick else 60
    with tempfile.TemporaryDirectory(prefix="bench-boards-") as tmp:
        d = Path(tmp)
        mq = Mosquitto(d / "broker").start()
        sim, device, run_env = prepare(d, board)
        gw = GatewayStub(mq.host, mq.port).start()  # ACKs, as the gateway
        cfg = {
            "device_id": "d1",
            "site": "s1",
            "broker": {"host": mq.host, "port": mq.port},
            "sensors": [{"type": "mpu6050"}],
            **(over or {}),
        }
        env = {
            **run_env,
            "EDGELINE_SIM_BOARD": board,
            "EDGELINE_SIM_DURATION_S": str(seconds),
            "EDGELINE_SIM_LINK_DOWN": f"{seconds // 3}-{seconds // 3 + seconds // 6}",
        }
        runs = 0

        def runs_in(heap: int) -> dict[str, Any] | None:
            nonlocal runs
            runs += 1
            fl = d / f"flash-{heap}"
            dev = device(fl, cfg, heap)
            dev.env.update(env)
            try:
                rc = dev.run(timeout=seconds + 60)
            except subprocess.TimeoutExpired:
                return None  # hung (seen on the edge of the heap): it does not run in it
            out = dev.text()
            if rc != 0 or "ERROR" in out or "MemoryError" in out or not (fl / "stats.json").exists():
                return None
            return dev.stats()

        lo, hi = bracket
        try:
            best = runs_in(hi)
            if best is None:
                raise RuntimeError(f"the default config does not run on {board} even in {hi} B of heap")
            if step is None:
                step = 32768 if quick else 1024  # quick: only that it runs
            while hi - lo > step:
                mid = (lo + hi) // 2
                st = runs_in(mid)
                if st is None:
                    lo = mid
                else:
                    hi, best = mid, st
                print(f"  {board}: {mid:,} B {'runs' if st else 'fails'}", flush=True)
        finally:
            gw.stop()
            mq.kill()
    firmware64 = hi - sim
    board32 = int(firmware64 / WORD_RATIO)
    free = FREE[board] if free is None else free
    return {
        "kind": "heap",
        "board": board,
        "seconds": seconds,
        "min_heap": hi,
        "sim_bytes": sim,
        "firmware64": firmware64,
        "board32": board32,
        "free": free,
        "headroom": 1 - board32 / free,
        "samples": best["samples"],
        "runs": runs,
        "stats": best,
    }


def _timing(sensor: dict[str, Any], quick: bool) -> dict[str, Any]:
    from shared_protocol import DATA
    from tests.firmware.gateway_stub import GatewayStub
    from tests.firmware.simdevice import SimDevice, base_config
    from tools.mosquitto import Mosquitto

    with tempfile.TemporaryDirectory(prefix="bench-timing-") as tmp:
        mq = Mosquitto(Path(tmp) / "broker").start()
        gw = GatewayStub(mq.host, mq.port).start()
        try:
            cfg = base_config(mq.port, sample={"rate_hz": 50, "batch": 25}, sensors=[sensor])
            dev = SimDevice(Path(tmp) / "flash", cfg, EDGELINE_SIM_BOARD="esp32_devkit")
            rc = dev.run(
                timeout=300,
                EDGELINE_SIM_SPEED="max",
                EDGELINE_SIM_DURATION_S=12,
                EDGELINE_SIM_BLOCK_AT_S="3:1000,6:4000",
                EDGELINE_SIM_DRAIN_S=10,
            )
            if rc != 0:
                raise RuntimeError(dev.text()[-2000:])
            st = dev.stats()
            frames = {r.frame.seq: r.frame for r in gw.of(DATA)}
        finally:
            gw.stop()
            mq.kill()
    rows = [frames[s] for s in sorted(frames)]
    holes = []
    for a, b in itertools.pairwise(rows):
        end = a.ticks + a.fields["nsamples"] * a.fields["period_us"] // 1000
        holes.append(b.ticks - end)
    big = sorted(h for h in holes if h > 40)
    return {
        "kind": "timing",
        "path": "MPU-6050 FIFO" if sensor["type"] == "mpu6050" else "ADC, timer-paced",
        "samples": st["samples"],
        "missed": st["missed"],
        "stale": st["stale_ticks"],
        "sched_dropped": st["sched_dropped"],
        "holes_ms": big,
        "frames": len(rows),
    }


def rows(quick: bool = False) -> list[dict[str, Any]]:
    out = [_min_heap("esp32_devkit", quick)]
    if not quick:
        out.append(_min_heap("pico_w", quick))
    out.append(_timing({"type": "mpu6050"}, quick))
    out.append(_timing({"type": "analog", "pin": 34}, quick))
    return out


def _verdict(r: dict[str, Any]) -> str:
    if r["board"] != "esp32_devkit":
        return "-"
    limit = FREE["esp32_devkit"] * (1 - TARGET_HEADROOM)
    met = "met" if r["board32"] <= limit else "not met"
    return f"{met} (at most ~{limit / 1024:.0f} KB)"


def render(all_rows: Sequence[dict[str, Any]]) -> str:
    lines = [
        "Firmware on the emulated boards (`python -m bench --only boards`, bench/bench_boards.py).",
        "",
        "Minimum heap for the default configuration (one MPU-6050 at 50 Hz), bisected to 1 KB,",
        "and the 32-bit board figure (firmware share / 1.42):",
        "",
        "| board | simulated s | minimum heap (64-bit port) | simulated hardware | firmware (64-bit) "
        "| firmware on a 32-bit board | baseline: the board's free heap with Wi-Fi | headroom left "
        f"| target: >= {TARGET_HEADROOM:.0%} left on an ESP32 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in all_rows:
        if r["kind"] != "heap":
            continue
        lines.append(
            f"| {r['board']} | {r['seconds']} | {r['min_heap']:,} B | {r['sim_bytes']:,} B | {r['firmware64']:,} B "
            f"| ~{r['board32'] / 1024:.0f} KB | {r['free'] // 1024} KB | {r['headroom']:.0%} "
            f"| {_verdict(r)} |"
        )
    lines += [
        "",
        "Timing under blocked callbacks (ESP32, 50 Hz, the main loop blocked 1 s at t=3 s and 4 s at",
        "t=6 s in C code that services no callback); baseline: the timer-paced path:",
        "",
        "| capture path | soft callbacks dropped by the port | samples | counted missed | DATA timing holes (ms) |",
        "|---|---|---|---|---|",
    ]
    for r in all_rows:
        if r["kind"] != "timing":
            continue
        holes = ", ".join(str(h) for h in r["holes_ms"]) or "none"
        lines.append(f"| {r['path']} | {r['sched_dropped']} | {r['samples']} | {r['missed']} | {holes} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    import sys

    quick = "--quick" in sys.argv
    print(render(rows(quick)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
