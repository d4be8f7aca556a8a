"""Run every benchmark of the project and print each figure beside its baseline.

    .venv/bin/python -m bench            # full size; writes docs/benchmarks.md
    .venv/bin/python -m bench --quick    # tiny sizes: checks that every benchmark runs
    .venv/bin/python -m bench --only wire,decode

Each benchmark module has ``rows(quick) -> list[dict]`` (its figures, baselines measured in
the same run) and ``render(rows) -> str`` (its markdown table).
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# One core per stage, as the gateway runs: BLAS worker threads only fight the measured code
# for the machine's cores (set before any benchmark imports numpy).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

# (name, module, what it measures) in the order of the data's path through the system.
BENCHMARKS = (
    ("wire", "bench.bench_wire", "bytes per reading on the wire"),
    ("decode", "bench.bench_decode", "gateway decode throughput"),
    ("firmware", "bench.bench_firmware", "firmware capture cost and heap (unix port)"),
    ("boards", "bench.bench_boards", "firmware on the emulated ESP32 / Pico W: minimum heap, timing gaps"),
    (
        "circuitpython",
        "bench.bench_circuitpython",
        "CircuitPython beside MicroPython: capture cost per reading, minimum heap",
    ),
    ("tls", "bench.bench_tls", "TLS on the device: handshake, bytes, heap, capture during reconnects"),
    ("gateway", "bench.bench_gateway", "gateway ingest, alert latency, memory"),
    ("fleet", "bench.bench_fleet", "fleet scale: N devices in real time against one gateway core"),
    ("inference", "bench.bench_inference", "inference stage vs bare invoke()"),
    ("forward", "bench.bench_forward", "store-and-forward drain and write amplification"),
    ("atrest", "bench.bench_atrest", "encryption at rest: forward queue and raw log beside unencrypted"),
    ("flash", "bench.bench_flash", "deploy bytes and time against mpremote cp"),
    ("ota", "bench.bench_ota", "firmware over the air: the full firmware over MQTT beside a 115200-baud serial deploy"),
    ("flash-wear", "bench.bench_flash_wear", "offline-queue flash erases during an outage, on littlefs"),
)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, Python {platform.python_version()}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the edgeline benchmarks.")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: check that every benchmark runs")
    parser.add_argument("--only", default="", help="comma-separated names: " + ", ".join(b[0] for b in BENCHMARKS))
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="markdown file to write (default: docs/benchmarks.md for a full run, none for --quick)",
    )
    args = parser.parse_args(argv)
    wanted = {n for n in args.only.split(",") if n}
    unknown = wanted - {b[0] for b in BENCHMARKS}
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    output = args.output or (None if args.quick else ROOT / "docs" / "benchmarks.md")

    sections: list[str] = []
    failed: list[str] = []
    started = time.monotonic()
    for name, module_name, what in BENCHMARKS:
        if wanted and name not in wanted:
            continue
        print(f"== {name}: {what} ...", flush=True)
        t0 = time.monotonic()
        try:
            module = importlib.import_module(module_name)
            table = module.render(module.rows(quick=args.quick))
        except Exception as exc:  # a broken benchmark must not hide the others' figures
            failed.append(name)
            print(f"!! {name} failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            continue
        print(table, flush=True)
        print(f"   ({time.monotonic() - t0:.1f} s)\n", flush=True)
        sections.append(f"## {name}: {what}\n\n{table}\n")

    if output is not None and sections:
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        mode = "quick" if args.quick else "full"
        head = (
            "# Benchmarks\n\n"
            "Written by `make bench` (`python -m bench`). Every figure stands beside its baseline measured\n"
            "in the same run on the same machine: the ratio is what counts, absolute times vary.\n\n"
            f"- run: {stamp}, {mode} size, {time.monotonic() - started:.0f} s\n"
            f"- machine: {machine()}\n\n"
        )
        output.write_text(head + "\n".join(sections))
        print(f"wrote {output}")
    if failed:
        print(f"benchmarks that failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
