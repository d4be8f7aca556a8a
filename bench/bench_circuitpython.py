"""The CircuitPython path beside the MicroPython one, measured the same way in the same run.

1. Capture cost per reading (bench/upy_cp_capture_cost.py beside
   bench/upy_firmware_cost.py, sharing bench/upy_cost_common.py): the MPU-6050 FIFO
   drained 5 samples at a time at 100 Hz, and one ADC channel sampled per timer tick at
   100 Hz, each through ring -> DATA frame of 32 -> offline queue (+ ACK). On CircuitPython
   the timer is polled from the main loop (cpport/board.py Board.poll) and the hardware is
   reached through the CircuitPython board layer; on MicroPython the timer's soft callback
   is dispatched by C code. Each runtime's simulated hardware (C code and chips on a board)
   is timed alone and subtracted; ratios are to the bare loop of the same process. Both
   processes use the Pico W profile (pico_w, cp_pico_w).
2. Minimum heap (bench_boards._min_heap, the bisection of the boards bench): the default
   configuration (one MPU-6050 at 50 Hz) for 60 s with a 10 s network outage, connected to
   a real Mosquitto (umqtt / MiniMQTT) with the gateway's ACKs, bisected to 1 KB; the
   simulated hardware's footprint and the stand-ins for the port's C modules taken off,
   the 64-bit firmware share divided by 1.42 for a 32-bit board. MicroPython runs main.py
   over .mpy files (as the flash tool installs them); CircuitPython runs code.py over .py
   sources compiled at import (as the flash tool's `circuitpy` puts them on CIRCUITPY:
   CircuitPython cannot load MicroPython's .mpy); each runtime's simulation from .mpy.
   In a full run also: CircuitPython with its pinned libraries as .mpy (what that would
   save), and the ESP32-S3 profile run once a little above the Pico W's minimum. The
   CircuitPython simulation runs in real time, so its bisections take minutes.

    .venv/bin/python -m bench --only circuitpython [--quick] [--output FILE]
    .venv/bin/python -m bench.bench_circuitpython [--quick]
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import cli
from bench.bench_boards import WORD_RATIO, DeviceFactory, _min_heap
from bench.bench_firmware import _cost

if TYPE_CHECKING:
    from tests.firmware.simdevice import SimDevice

ROOT = Path(__file__).resolve().parent.parent
CPSIM = ROOT / "firmware" / "cpsim"

# Free heap with Wi-Fi up under CircuitPython: the board profiles' working figures
# (boards/cp_pico_w.py, boards/cp_esp32s3.py), not measured here. The baseline of the
# MicroPython row is bench_boards.FREE (~190 KB on a Pico W).
CP_FREE = {
    "cp_pico_w": 120 * 1024,  # "of the ~190 KB MicroPython leaves with Wi-Fi up, count on ~120 KB"
    "cp_esp32s3": 150 * 1024,  # the N8 module without PSRAM; the N8R8's heap is in its 8 MB of PSRAM
}

# The viper routine of the MPU-6050 driver: CircuitPython has no native emitter, so the
# import fails there (SyntaxError) and the driver unpacks in bytecode. The unix port has
# one, so the CircuitPython run gets a module that fails the same way.
NO_VIPER = 'raise SyntaxError("CircuitPython: no native code emitter (micropython.viper)")\n'

# Heap bytes of the simulation for a CircuitPython board (the cp_sim board, busio.I2C with
# the simulated MPU-6050 and its signal generator), measured as tests/firmware/
# test_fw_heap64k.py's SIM_FOOTPRINT measures MicroPython's: the board layer
# (cpport/board.py) and the modules standing in for the port's own (there: the emulated
# machine, network and socket; here: CircuitPython's modules, STAND_INS) are loaded first.
CP_SIM_FOOTPRINT = """
import gc, os, time
import socketpool, storage
import sensorfw.cpport.board
profile = __import__("sensorfw.boards." + os.getenv("EDGELINE_SIM_BOARD"), None, None, ("NAME",))
gc.collect()
a = gc.mem_alloc()
from sensorfw.boards.cp_sim import SimBoard
b = SimBoard(profile)
i2c = b.make_i2c(0, -1, -1, 400000)
# wake the simulated chip at 100 Hz and let it sample: its signal generator exists from then on
i2c.writeto_mem(0x68, 0x6B, b"\\x01")
i2c.writeto_mem(0x68, 0x1A, b"\\x03")
i2c.writeto_mem(0x68, 0x19, b"\\x09")
time.sleep(0.2)
i2c.readfrom_mem_into(0x68, 0x72, bytearray(2))
gc.collect()
print(gc.mem_alloc() - a)
"""

# Heap bytes of the modules that stand in for the port's C modules: MicroPython's emulated
# machine / network / socket, CircuitPython's modules of firmware/cpsim (with the signal
# generators its analogio imports). Taken off both runtimes' firmware share here; the
# boards bench leaves them in it.
STAND_INS = {
    "micropython": """
import gc
gc.collect()
a = gc.mem_alloc()
from sensorfw.boards import sim_machine
sim_machine.install("rp2")
gc.collect()
print(gc.mem_alloc() - a)
""",
    "circuitpython": """
import gc
gc.collect()
a = gc.mem_alloc()
import os, time
import alarm, analogio, board, busio, countio, digitalio, keypad, microcontroller, supervisor, wifi
import socketpool, storage, watchdog
gc.collect()
print(gc.mem_alloc() - a)
""",
}


def _mpy(src: Path, out: Path) -> None:
    """One module to .mpy, as tests/firmware/test_fw_heap64k.py's build_mpy compiles them."""
    from tests.firmware.test_fw_heap64k import HOST_ARCH, MPY_CROSS

    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([MPY_CROSS, "-O3", HOST_ARCH, "-o", str(out), str(src)], check=True, capture_output=True)


def cp_tree(d: Path, libs_mpy: bool = False) -> str:
    """The CircuitPython code under d, and its MICROPYPATH (as firmware/cp/code.py is run on
    the unix port: CircuitPython's modules first, then the firmware, the repository root for
    shared_protocol, the pinned libraries). libs_mpy: the pinned libraries (MiniMQTT,
    adafruit_connection_manager, adafruit_ticks) compiled to .mpy, the form the Adafruit
    bundle ships them in (there with CircuitPython's mpy-cross; here the unix port's).

    The firmware is .py source, as the flash tool's `circuitpy` puts it on CIRCUITPY and
    CircuitPython compiles it at import (the MPU-6050 driver's viper module fails to compile
    there: no native emitter; here it fails the same way). The simulation (firmware/cpsim,
    standing in for CircuitPython's C modules, and the simulation boards with their chip and
    signal models) is .mpy, as in the MicroPython runs: on a board it is C code and hardware,
    and compiling it here would fragment the heap in a way no board sees."""
    from tools.fetch_upy_deps import DEFAULT_CP_CACHE

    lib = d / "cplib"
    pkg = lib / "sensorfw"
    shutil.copytree(ROOT / "firmware" / "sensorfw", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "firmware" / "otaslots.py", lib / "otaslots.py")  # the A/B loader code.py runs
    (pkg / "drivers" / "mpu6050_fast.py").write_text(NO_VIPER)
    for src in sorted((pkg / "boards").glob("*.py")):
        if src.name.startswith(("sim", "cp_sim")):
            _mpy(src, src.with_suffix(".mpy"))
            src.unlink()
    cpsim = d / "cpsim"  # the name matters: cpsim/os.py and time.py step past it on sys.path
    for src in sorted(CPSIM.rglob("*.py")):
        _mpy(src, (cpsim / src.relative_to(CPSIM)).with_suffix(".mpy"))
    libs = DEFAULT_CP_CACHE
    if libs_mpy:
        libs = d / "cplib-mpy"
        for src in sorted(DEFAULT_CP_CACHE.rglob("*.py")):
            _mpy(src, (libs / src.relative_to(DEFAULT_CP_CACHE)).with_suffix(".mpy"))
    return ":".join(str(p) for p in (cpsim, lib, ROOT, libs))


def _upy_int(script: str, env: dict[str, str], heapsize: str = "1m") -> int:
    """Run a -c script on the unix port; its last word, an int."""
    from tests.support.upy import run_micropython

    res = run_micropython(["-c", script], heapsize=heapsize, env=env, timeout=60)
    if res.returncode != 0:
        raise RuntimeError(res.stdout.decode() + res.stderr.decode())
    return int(res.stdout.split()[-1])


def prepare_circuitpython(d: Path, board: str, libs_mpy: bool = False) -> tuple[int, DeviceFactory, dict[str, str]]:
    """CircuitPython: code.py over .py sources (libs_mpy: the pinned libraries as .mpy),
    settings.toml on the drive, boot.py run once per drive (it gives the code write
    access), MiniMQTT."""
    from tests.circuitpython.cpdevice import CPDevice

    env = {"MICROPYPATH": cp_tree(d, libs_mpy)}
    probe = d / "cp-probe"
    probe.mkdir()
    sim = _upy_int(CP_SIM_FOOTPRINT, {**env, "EDGELINE_SIM_DIR": str(probe), "EDGELINE_SIM_BOARD": board})

    def device(drive: Path, cfg: dict[str, Any], heap: int) -> SimDevice:
        dev = CPDevice(drive, cfg)
        dev.heapsize = str(heap)
        dev.env.update({**env, "EDGELINE_SIM_BOARD": board})
        dev.power_on()
        return dev

    return sim, device, env


def stand_ins() -> dict[str, int]:
    """Heap bytes of the stand-ins for each port's C modules, loaded from .mpy as the heap
    runs load them."""
    from tests.firmware.test_fw_heap64k import build_mpy

    with tempfile.TemporaryDirectory(prefix="bench-cp-") as tmp:
        d = Path(tmp)
        mp = {"MICROPYPATH": str(build_mpy(d / "mpy")), "EDGELINE_SIM_DIR": str(d)}
        cp = {"MICROPYPATH": cp_tree(d), "EDGELINE_SIM_DIR": str(d)}
        return {
            "micropython": _upy_int(STAND_INS["micropython"], mp),
            "circuitpython": _upy_int(STAND_INS["circuitpython"], cp),
        }


# The CircuitPython runs join Wi-Fi in 1 s at most: CircuitPython's wifi.radio.connect()
# blocks for wifi.connect_timeout_ms (5 s by default on the CircuitPython profiles) when the
# network is away, and the loop with it. MicroPython's join does not block; its runs keep
# every default.
CP_OVER: dict[str, Any] = {"wifi": {"connect_timeout_ms": 1000}}
ONE_RUN = 1 << 20  # a bisection step wider than the bracket: one run at its top
S3_MARGIN = 8 * 1024


def rows(quick: bool = False) -> list[dict[str, Any]]:
    n = 2000 if quick else 10000
    reps = 2 if quick else 25
    mp = _cost(n, reps, args=("analog",), env={"EDGELINE_SIM_BOARD": "pico_w"})
    cp = _cost(n, reps, script="upy_cp_capture_cost.py", micropypath=(CPSIM,))
    out: list[dict[str, Any]] = [{"kind": "cost", "mp": mp, "cp": cp}]
    si = stand_ins()
    step = ONE_RUN if quick else None  # quick: that each runs, once
    h = _min_heap("pico_w", quick, step=step)
    out.append({**h, "runtime": "MicroPython", "form": "main.py, .mpy", "stand_ins": si["micropython"]})
    cp_run: dict[str, Any] = {
        "prepare": prepare_circuitpython,
        "seconds": 3 if quick else 60,
        "free": CP_FREE["cp_pico_w"],
        "over": CP_OVER,
    }
    h = _min_heap("cp_pico_w", quick, step=step, **cp_run)
    out.append({**h, "runtime": "CircuitPython", "form": "code.py, .py", "stand_ins": si["circuitpython"]})
    if quick:
        return out
    # what shipping the libraries as .mpy would save (the flash tool copies their .py)
    h2 = _min_heap("cp_pico_w", quick, **{**cp_run, "prepare": partial(prepare_circuitpython, libs_mpy=True)})
    form = "code.py, .py; MiniMQTT & co. .mpy"
    out.append({**h2, "runtime": "CircuitPython", "form": form, "stand_ins": si["circuitpython"], "variant": True})
    # the ESP32-S3 runs the same code but for its profile: one run a little above the
    # Pico W's minimum (near it, start-up succeeds or not from one KB to the next)
    top = h["min_heap"] + S3_MARGIN
    try:
        s3 = _min_heap(
            "cp_esp32s3", quick, step=ONE_RUN, bracket=(top - 1024, top), **{**cp_run, "free": CP_FREE["cp_esp32s3"]}
        )
        s3.update(runtime="CircuitPython", form="code.py, .py", stand_ins=si["circuitpython"])
        s3["checked_at"] = f"cp_pico_w's + {S3_MARGIN // 1024} KB"
        out.append(s3)
    except RuntimeError as e:
        out.append({"kind": "s3_fails", "board": "cp_esp32s3", "min_heap": top, "error": str(e)})
    return out


def _ns(r: dict[str, Any], key: str) -> float:
    """ns per reading of a variant (key without _us)."""
    return float(r[key + "_us"]) * 1000.0 / float(r["readings"])


def _cost_rows(mp: dict[str, Any], cp: dict[str, Any]) -> list[str]:
    def cell(r: dict[str, Any], key: str | None) -> str:
        if key is None:
            return "| - | -"
        return f"| {_ns(r, key):.0f} | {r[key + '_ratio']:.1f}x"

    def line(what: str, mk: str | None, ck: str | None) -> str:
        versus = f"{_ns(cp, ck) / _ns(mp, mk):.1f}x" if mk and ck else ""
        return f"| {what} {cell(mp, mk)} {cell(cp, ck)} | {versus} |"

    per = mp["per_drain"]
    sim = "  of which the simulated chip and bus (hardware / C on a board)"
    return [
        line("bare loop storing the same values into an array (baseline)", "bare", "bare"),
        line(f"MPU-6050 FIFO, drain of {per} samples -> ring -> DATA frame -> queue (+ ACK)", "firmware", "cp_fifo"),
        line(sim, "firmware_sim", "cp_fifo_sim"),
        line("  without the simulated chip and bus", "firmware_own", "cp_fifo_own"),
        line(
            "  without them, CircuitPython path with the unix port's viper unpacking (CircuitPython has none)",
            "firmware_own",
            "cp_fifo_viper_own",
        ),
        line("ADC, one reading per timer tick -> ring -> DATA frame -> queue (+ ACK)", "analog", "cp_analog"),
        line("  of which the simulated ADC (C on a board)", "analog_sim", "cp_analog_sim"),
        line("  without the simulated ADC", "analog_own", "cp_analog_own"),
    ]


def _kb32(r: dict[str, Any]) -> float:
    """The firmware's share of a heap row on a 32-bit board, KB."""
    return float(r["min_heap"] - r["sim_bytes"] - r["stand_ins"]) / WORD_RATIO / 1024


def _left(r: dict[str, Any]) -> str:
    """What the firmware leaves of the board's free heap: "52% left" or "~90 KB over"."""
    left = r["free"] / 1024 - _kb32(r)
    if left >= 0:
        return f"{left * 1024 / r['free']:.0%} left"
    return f"~{-left:.0f} KB over"


def _heap_line(r: dict[str, Any]) -> str:
    fw = r["min_heap"] - r["sim_bytes"] - r["stand_ins"]
    on32 = f"~{_kb32(r):.0f} KB"
    if r["runs"] > 1:
        mh, left = f"{r['min_heap']:,} B", _left(r)
    elif r.get("checked_at"):  # one run above another board's minimum: an upper bound
        mh, on32, left = f"<= {r['min_heap']:,} B (one run: {r['checked_at']})", "<= " + on32, "-"
    else:  # --quick: one run at the top of the bracket
        mh, on32, left = f"<= {r['min_heap']:,} B (one run)", "<= " + on32, "-"
    return (
        f"| {r['runtime']} | {r['board']} | {r['form']} | {r['seconds']} | {mh} | {r['sim_bytes']:,} B "
        f"| {r['stand_ins']:,} B | {fw:,} B | {on32} | {r['free'] // 1024} KB | {left} |"
    )


def _notes(all_rows: Sequence[dict[str, Any]]) -> list[str]:
    """What the figures mean on a board, from this run's numbers."""
    out = ["", "Reading the figures:", ""]
    cost = [r for r in all_rows if r["kind"] == "cost"]
    heap = {r["board"]: r for r in all_rows if r["kind"] == "heap" and not r.get("variant")}
    if cost:
        mp, cp = cost[0]["mp"], cost[0]["cp"]
        poll_ns = cp["idle_poll_own_us"] * 1000 / cp["polls"]
        own, own_v, own_mp = _ns(cp, "cp_fifo_own"), _ns(cp, "cp_fifo_viper_own"), _ns(mp, "firmware_own")
        out += [
            f"- Capture: without the simulated hardware, the CircuitPython path costs {own / own_mp:.1f}x the "
            f"MicroPython path per reading with the MPU-6050 FIFO ({own:.0f} against {own_mp:.0f} ns here) and "
            f"{_ns(cp, 'cp_analog_own') / _ns(mp, 'analog_own'):.1f}x with the timer-paced ADC. Of the FIFO "
            f"path's difference, {own - own_v:.0f} ns is the FIFO unpacking in bytecode (the same path with the "
            "unix port's viper routine); the rest is Python that MicroPython does in C: the polled timer "
            "(Board.poll), the cpport Clock around supervisor.ticks_ms / time.monotonic_ns, I2CMem over busio. "
            "Ratios carry over to a board roughly, nanoseconds not at all: this is an x86 core, not a Cortex-M0+ or "
            "an LX7.",
            f"- The polling itself: Board.poll with nothing due costs {poll_ns:.0f} ns, and the main loop polls "
            "about once a millisecond (Board.idle sleeps 1 ms): ~1000 polls, "
            f"~{poll_ns:.0f} us a second, against ~{600 * own / 1000:.0f} us a second for capturing 100 Hz x 6 "
            "channels. MicroPython's timer interrupts instead.",
            "- Not visible on this 64-bit port: on a 32-bit CircuitPython board time.monotonic_ns() is a long "
            "int (heap-allocated) once the board has run for a second, so every call of the cpport Clock's "
            "ticks_us(), one per timer tick or FIFO drain, allocates: the capture path makes garbage there.",
        ]
    if heap:
        out.append(
            f"- Heap, 64-bit port to 32-bit board: as in the boards section, the firmware share divided by {WORD_RATIO} "
            "(measured for MicroPython: the default configuration ran in 184k on this port and in 130k on a 32-bit "
            "build of the same source); CircuitPython boards are 32-bit too and get the same factor, an estimate "
            "(no 32-bit CircuitPython build was measured). Here the stand-ins for each port's C modules (MicroPython: "
            "the emulated machine, network and socket; CircuitPython: firmware/cpsim, with the signal generators its "
            "analogio imports) are taken off as well; the boards section leaves them in the firmware share, which "
            + (
                f"puts its MicroPython figure ~{heap['pico_w']['stand_ins'] / WORD_RATIO / 1024:.0f} KB higher on a board."
                if "pico_w" in heap
                else "puts its figures higher."
            )
        )
        mp_h = heap.get("pico_w")
        cp_rows = [r for r in all_rows if r["kind"] == "heap" and r["board"] == "cp_pico_w"]
        cp_h = next((r for r in cp_rows if not r.get("variant")), None)
        cp_mpy = next((r for r in cp_rows if r.get("variant")), None)
        if mp_h and cp_h and mp_h["runs"] > 1 and cp_h["runs"] > 1:
            out.append(
                f"- Pico W: MicroPython's firmware takes ~{_kb32(mp_h):.0f} KB of the ~{mp_h['free'] // 1024} KB "
                f"free with Wi-Fi up ({_left(mp_h)}); CircuitPython's ~{_kb32(cp_h):.0f} KB, "
                f"{_kb32(cp_h) / _kb32(mp_h):.1f}x as much, against the ~{cp_h['free'] // 1024} KB the cp_pico_w "
                f"profile counts on ({_left(cp_h)}; the ~{cp_h['free'] // 1024} KB are the profile's working "
                "estimate, not measured here: CircuitPython keeps more of the RAM for itself than MicroPython). "
                "The start-up is the peak: "
                "CircuitPython compiles code.py and every library's .py at import, on the board (it cannot load "
                "MicroPython's .mpy), and near the minimum it stops with `START ERROR: out of memory at start-up` "
                "while MiniMQTT (48 KB of source) compiles, with far more free in total than the allocation that "
                "failed; once running, the lowest free heap at a HEALTH point in the minimum heap was "
                f"{cp_h['stats']['min_free_heap']:,} B (MicroPython: {mp_h['stats']['min_free_heap']:,} B; "
                "64-bit, simulation included). The bisection moves by a few KB from run to run: near the "
                "minimum, start-up succeeds or fails from one KB to the next."
            )
        if cp_h and cp_mpy and cp_h["runs"] > 1 and cp_mpy["runs"] > 1:
            saved = cp_h["min_heap"] - cp_mpy["min_heap"]
            out.append(
                "- With MiniMQTT, adafruit_connection_manager and adafruit_ticks as .mpy (the form the Adafruit "
                "bundle ships them in, made with CircuitPython's mpy-cross; the flash tool copies their .py today) "
                f"the minimum is {cp_mpy['min_heap']:,} B: {saved:,} B less, ~{saved / WORD_RATIO / 1024:.0f} KB "
                f"on a board, which leaves the firmware at ~{_kb32(cp_mpy):.0f} KB ({_left(cp_mpy)}, against the "
                "profile's figure)."
            )
        s3 = heap.get("cp_esp32s3")
        if s3:
            out.append(
                "- ESP32-S3: the same firmware but for the board profile (pins); it ran in cp_pico_w's minimum + "
                f"{S3_MARGIN // 1024} KB. On an N8R8 module CircuitPython's heap is in the 8 MB of PSRAM, so the "
                f"firmware's ~{_kb32(cp_h or s3):.0f} KB do not matter; against an N8's ~{s3['free'] // 1024} KB (no "
                "PSRAM; the cp_esp32s3 profile's figure) they are "
                f"{_left({**s3, 'min_heap': (cp_h or s3)['min_heap']})}."
            )
        if any(r["kind"] == "s3_fails" for r in all_rows):
            out.append(f"- ESP32-S3: did not run in cp_pico_w's minimum + {S3_MARGIN // 1024} KB (see above).")
    out += [
        "- The CircuitPython runs set wifi.connect_timeout_ms = 1000: CircuitPython's wifi.radio.connect() blocks "
        "for that long when the network is away (found here: with MicroPython's 15 s default the 8 s watchdog "
        "reset the board during the outage; the CircuitPython profiles now default to 5 s and a join longer than "
        "watchdog_ms - 1 s is refused with the config). Everything else is the default configuration on both.",
        '- Reproduce: `make bench ARGS="--only circuitpython --output /tmp/circuitpython.md"` (minutes: the '
        "CircuitPython simulation runs in real time, 60 s per bisection run; without --output a full run rewrites "
        'docs/benchmarks.md with this section alone); `make bench ARGS="--only circuitpython --quick"` checks in '
        "seconds that it runs (one heap run per runtime, as `make test` does in tests/test_bench_quick.py).",
    ]
    return out


def render(all_rows: Sequence[dict[str, Any]]) -> str:
    lines: list[str] = []
    for r in all_rows:
        if r["kind"] != "cost":
            continue
        mp, cp = r["mp"], r["cp"]
        poll_ns = cp["idle_poll_own_us"] * 1000 / cp["polls"]
        lines += [
            f"Cost per captured reading at 100 Hz, 32 samples per DATA frame, Pico W profile, unix port "
            f"({mp['samples']:,} samples x 6 readings per round; ns: fastest of {mp['rounds']} rounds; "
            "ratios: to the fastest bare loop of the same process; 'without' rows: fastest path - fastest "
            "simulation, each simulation timed inside the same loop as its path). MicroPython: the timer's soft callback is dispatched by C code (not timed), the "
            "driver unpacks the FIFO in viper code. CircuitPython: Board.poll runs the timer from the main "
            "loop, the board layer (I2CMem over busio, ADC over analogio) is Python, no viper (bytecode "
            "unpacking); both inside the figures.",
            "",
            "| path | MicroPython ns/reading | vs bare loop | CircuitPython ns/reading | vs bare loop "
            "| CircuitPython / MicroPython |",
            "|---|---|---|---|---|---|",
            *_cost_rows(mp, cp),
            f"| CircuitPython main loop: Board.poll with nothing due, ns per poll (not per reading; the loop polls "
            f"about once a ms) | - | - | {poll_ns:.0f} | - | |",
        ]
    heap = [r for r in all_rows if r["kind"] == "heap"]
    if heap:
        lines += [
            "",
            "Minimum heap, default configuration (one MPU-6050 at 50 Hz) with a network outage from 1/3 to 1/2 of "
            "the run, real Mosquitto (umqtt.simple / MiniMQTT) and the gateway's ACKs, bisected to 1 KB (one run in "
            "--quick); firmware = minimum - simulated hardware - stand-ins for the port's C modules; 32-bit board "
            f"= firmware / {WORD_RATIO}:",
            "",
            "| runtime | board | code on the board | simulated s | minimum heap (64-bit port) | simulated hardware "
            "| stand-ins for the port's C modules | firmware (64-bit) | firmware on a 32-bit board "
            "| baseline: free heap with Wi-Fi | headroom left |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
            *[_heap_line(r) for r in heap],
        ]
    for r in all_rows:
        if r["kind"] == "s3_fails":
            lines += ["", f"cp_esp32s3 did not run in {r['min_heap']:,} B (cp_pico_w's minimum + 8 KB): {r['error']}"]
    lines += _notes(all_rows)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    return cli.run("CircuitPython beside MicroPython: capture cost, minimum heap", rows, render, argv)


if __name__ == "__main__":
    raise SystemExit(main())
