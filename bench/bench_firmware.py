"""Firmware figures on the MicroPython unix port, each beside a baseline from the same run.

1. Cost per captured reading: the firmware path (MPU-6050 FIFO drained 5 samples at a
   time by Sampler.on_drain -> sample ring -> DATA frame in the offline queue, ACK
   trimming) against a bare loop storing the same values into an array and against a
   naive per-sample handler that only reads the sensor's registers and stores its
   values (no ring, no frames, no queue); the firmware drained after every sample shows
   what the FIFO's batching saves. The simulated chip and bus under each path (Python
   here, hardware and C code on a board) are timed alone and subtracted.
2. Heap of the long run (tests/firmware/test_fw_heap64k.py scenario): the test's
   regression bound for the firmware (FIRMWARE_HEAP, 64-bit bytes) plus the measured
   footprint of the simulated hardware; lowest free heap seen at HEALTH time,
   micropython.mem_peak(). The bisected minimum per board is bench_boards.py's.

    .venv/bin/python -m bench.bench_firmware [--quick]
"""

from __future__ import annotations

import ast
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench import cli

ROOT = Path(__file__).resolve().parent.parent


def _cost(
    rows: int,
    reps: int,
    *,
    script: str = "upy_firmware_cost.py",
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    micropypath: Sequence[Path] = (),
) -> dict[str, Any]:
    """Run a cost script of bench/ on the unix port (in a scratch directory, which is also
    the simulated flash) and return its RESULT dict; micropypath: put before the default."""
    from tests.support.upy import run_micropython

    with tempfile.TemporaryDirectory(prefix="bench-fw-") as d:
        res = run_micropython(
            [str(ROOT / "bench" / script), str(rows), str(reps), *args],
            cwd=d,
            timeout=600,
            env={"EDGELINE_SIM_DIR": d, **(env or {})},
            micropypath=micropypath,
        )
    if res.returncode != 0:
        raise RuntimeError(res.stdout.decode() + res.stderr.decode())
    line = [ln for ln in res.stdout.decode().splitlines() if ln.startswith("RESULT ")][-1]
    out: dict[str, Any] = ast.literal_eval(line[len("RESULT ") :])
    return out


def _heap_run(samples: int, link_down: str) -> dict[str, Any]:
    from tests.firmware.gateway_stub import GatewayStub
    from tests.firmware.simdevice import SimDevice, base_config
    from tests.firmware.test_fw_heap64k import FIRMWARE_HEAP, build_mpy, sim_footprint
    from tools.mosquitto import Mosquitto

    with tempfile.TemporaryDirectory(prefix="bench-heap-") as tmp:
        d = Path(tmp)
        lib = build_mpy(d / "mpy")
        main = lib / "main.py"
        main.write_text((ROOT / "firmware" / "main.py").read_text())
        sim_bytes = sim_footprint(lib, d / "probe")
        heap = FIRMWARE_HEAP + sim_bytes
        broker = Mosquitto(d / "broker").start()
        try:
            with GatewayStub(broker.host, broker.port):
                cfg = base_config(
                    broker.port,
                    sample={"rate_hz": 100, "batch": 32, "ring_rows": 64, "event_ring": 8},
                    queue={"ram_frames": 4, "flash_frames": 128, "block_bytes": 2048, "segment_blocks": 4},
                    health_s=30,
                    watchdog_ms=0,
                )
                dev = SimDevice(d / "flash", cfg, heapsize=str(heap), main=str(main))
                dev.env.update(
                    {
                        "EDGELINE_SIM_SPEED": "max",
                        "EDGELINE_SIM_SAMPLES": str(samples),
                        "EDGELINE_SIM_LINK_DOWN": link_down,
                        "EDGELINE_SIM_DRAIN_S": "20",
                        "MICROPYPATH": str(lib),
                    }
                )
                rc = dev.run(timeout=600)
                if rc != 0:
                    raise RuntimeError(dev.text()[-2000:])
                st = dev.stats()
        finally:
            broker.kill()
    return {"heap": heap, "sim_bytes": sim_bytes, **st}


def rows(quick: bool = False) -> list[dict[str, Any]]:
    # many short rounds: the fastest of each variant is then from a quiet moment
    n = 2000 if quick else 10000
    c = _cost(n, 2 if quick else 25)
    readings = c["readings"]
    per = c["per_drain"]

    def row(what: str, key: str) -> dict[str, Any]:
        return {
            "kind": "cost",
            "what": what,
            "ns": float(c[key + "_us"]) * 1000.0 / readings,
            "ratio": c[key + "_ratio"],
        }

    sim = "  of which the simulated chip and bus (hardware / C on a board)"
    out: list[dict[str, Any]] = [
        row("bare loop storing the same values into an array", "bare"),
        row("naive per-sample handler: register read + store (no ring, frame, queue)", "naive"),
        row(sim, "naive_sim"),
        row("  naive handler without the simulated chip and bus", "naive_own"),
        row(f"firmware: FIFO drain of {per} samples -> ring -> DATA frame -> queue (+ ACK)", "firmware"),
        row(sim, "firmware_sim"),
        row("  firmware without the simulated chip and bus", "firmware_own"),
        row("firmware with the FIFO drained after every sample", "firmware1"),
        row(sim, "firmware1_sim"),
        row("  firmware drained per sample, without the simulated chip and bus", "firmware1_own"),
    ]
    # simulated seconds at 100 Hz; quick: one short outage inside 50 s
    h = _heap_run(5000, "20-25") if quick else _heap_run(100000, "200-230,600-620")
    out.append({"kind": "heap", **h})
    return out


def render(all_rows: Sequence[dict[str, Any]]) -> str:
    lines = [
        "Cost per captured reading, MPU-6050 at 100 Hz (6 channels), 32 samples per DATA frame, unix port, one process",
        "(ns: fastest of many rounds, each variant once per round; 'without' rows: fastest path - fastest"
        " simulation; ratios: to the fastest bare loop of the same run)",
        "",
        "| path | ns/reading | vs bare loop |",
        "|---|---|---|",
    ]
    for r in all_rows:
        if r["kind"] == "cost":
            lines.append(f"| {r['what']} | {r['ns']:.0f} | {r['ratio']:.1f}x |")
    for r in all_rows:
        if r["kind"] != "heap":
            continue
        live = r["heap"] - r["min_free_heap"] - r["sim_bytes"]
        lines += [
            "",
            f"Heap, {r['samples']:,} samples x 6 channels at 100 Hz (simulated clock at full speed), two link outages",
            "",
            "| figure | bytes |",
            "|---|---|",
            f"| heap given: the test's bound for the firmware ({r['heap'] - r['sim_bytes']:,} B on this 64-bit "
            f"port) + simulated hardware | {r['heap']:,} |",
            f"| simulated hardware (sim board, I2C MPU-6050, signal generators) | {r['sim_bytes']:,} |",
            f"| lowest free heap at a HEALTH point (after gc.collect) | {r['min_free_heap']:,} |",
            f"| firmware live heap at that point (given - free - simulated hardware) | {live:,} |",
            f"| micropython.mem_peak() (bytes ever requested from the allocator: GC churn, not live) "
            f"| {r['mem_peak']:,} |",
            f"| frames / dropped / overruns / MemoryError | {r['frames']:,} / {r['dropped']} / {r['overruns']} / 0 |",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return cli.run("edgeline firmware benchmark (MicroPython unix port)", rows, render, argv)


if __name__ == "__main__":
    raise SystemExit(main())
