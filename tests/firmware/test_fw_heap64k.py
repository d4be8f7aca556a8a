"""The firmware runs in a 64 KB heap through >= 100,000 six-channel samples with
link outages, without MemoryError, every frame delivered or counted.

Heap size, as on a board: the unix port here is 64-bit, where every pointer and
object header is twice the size it is on the ESP32 / RP2040, so "64 KB" is taken as
MicroPython's `-X heapsize=64wk` (64 KB of 32-bit words = 128 KB here). On a board the
hardware (machine.Timer, I2C, ADC) is C code outside the heap; here it is the Python
simulation board plus its signal generators, so their footprint, measured in a first
process, is added on top. The modules run from .mpy files made with mpy-cross, as the
flash tool puts them on a board (source would be compiled in RAM first). The simulated
clock runs as fast as the CPU allows.

A literal `-X heapsize=64k` cannot work on this port: the firmware, shared_protocol and
umqtt modules loaded from .mpy take ~75 KB of 64-bit heap before anything runs, and
the simulated hardware ~36 KB more (MemoryError while importing core/app). Scanned
with this scenario: every size from 163k up runs (docs/firmware.md, "The 64 KB heap").
"""

from __future__ import annotations

import platform
import subprocess
from collections.abc import Callable
from pathlib import Path

from shared_protocol import DATA, FLAG_HISTORICAL, HEALTH
from tests.firmware.gateway_stub import GatewayStub
from tests.firmware.simdevice import SimDevice, base_config
from tests.support.upy import ROOT, run_micropython
from tools.mosquitto import Mosquitto

FIRMWARE_HEAP = 64 * 1024 * 2  # 64wk on a 64-bit port
SAMPLES = 100_000
# native emitter of this machine, for the viper functions (mpy-cross needs -march for them)
HOST_ARCH = "-march=" + {"x86_64": "x64", "amd64": "x64", "aarch64": "aarch64", "armv7l": "armv7m"}.get(
    platform.machine().lower(), "x64"
)
MPY_CROSS = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "mpy-cross")


def build_mpy(dest: Path) -> Path:
    """Compile firmware/sensorfw, shared_protocol and umqtt to .mpy under dest."""
    sources = [
        (ROOT / "firmware", ROOT / "firmware" / "sensorfw"),
        (ROOT, ROOT / "shared_protocol"),
        (ROOT / ".cache" / "upy-lib", ROOT / ".cache" / "upy-lib" / "umqtt"),
    ]
    for base, tree in sources:
        for src in sorted(tree.rglob("*.py")):
            out = dest / src.relative_to(base).with_suffix(".mpy")
            out.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([MPY_CROSS, "-O3", HOST_ARCH, "-o", str(out), str(src)], check=True, capture_output=True)
    return dest


SIM_FOOTPRINT = """
import gc
gc.collect()
a = gc.mem_alloc()
from sensorfw.boards import sim
b = sim.SimBoard()
i2c = b.make_i2c(0, -1, -1, 400000)
gc.collect()
print(gc.mem_alloc() - a)
"""


def sim_footprint(lib: Path, flash: Path) -> int:
    """Heap bytes the simulated hardware (sim board, I2C MPU-6050, generators) takes."""
    res = run_micropython(
        ["-c", SIM_FOOTPRINT], heapsize="1m", env={"MICROPYPATH": str(lib), "EDGELINE_SIM_DIR": str(flash)}
    )
    assert res.returncode == 0, res.stderr
    return int(res.stdout.split()[-1])


def test_100k_samples_in_64k_heap_with_outages(
    mosquitto: Mosquitto, gateway: GatewayStub, flash: Callable[[str], Path], tmp_path: Path
) -> None:
    lib = build_mpy(tmp_path / "mpy")
    cfg = base_config(
        mosquitto.port,
        sample={"rate_hz": 100, "batch": 32, "ring_rows": 64, "event_ring": 8},
        queue={"ram_frames": 4, "flash_frames": 128, "block_bytes": 2048, "segment_blocks": 4},
        health_s=30,
        watchdog_ms=0,
    )
    main = lib / "main.py"  # run from the .mpy tree: the script's directory comes first on sys.path
    main.write_text((ROOT / "firmware" / "main.py").read_text())
    sim_bytes = sim_footprint(lib, flash("probe"))
    assert 10_000 < sim_bytes < 60_000, sim_bytes
    heap = FIRMWARE_HEAP + sim_bytes
    dev = SimDevice(flash("dev1"), cfg, heapsize=str(heap), main=str(main))
    # 100,000 samples at 100 Hz = 1000 simulated s; network gone twice
    env = {
        "EDGELINE_SIM_SPEED": "max",
        "EDGELINE_SIM_SAMPLES": SAMPLES,
        "EDGELINE_SIM_LINK_DOWN": "200-230,600-620",
        "EDGELINE_SIM_DRAIN_S": 20,
        "MICROPYPATH": str(lib),
    }
    dev.env.update({k: str(v) for k, v in env.items()})
    rc = dev.run(timeout=300)
    out = dev.text()
    assert rc == 0, out[-3000:]
    assert "MemoryError" not in out
    st = dev.stats()
    assert st["samples"] >= SAMPLES
    assert st["losses"] >= 2 and st["overruns"] == 0, st
    assert st["queue_depth"] == 0, st
    data = gateway.of(DATA)
    # every frame delivered or counted as dropped (at this clock speed the device can
    # outrun a loaded gateway's ACKs; no-loss within capacity is test_fw_outage's job)
    assert st["frames"] >= SAMPLES // 32
    assert len({r.frame.seq for r in data}) + st["dropped"] >= st["frames"], st
    assert any(r.frame.flags & FLAG_HISTORICAL for r in data)
    assert gateway.of(HEALTH)
    # live heap of the firmware at its fullest HEALTH point (after gc.collect)
    firmware_live = heap - st["min_free_heap"] - sim_bytes
    print("heap", heap, "sim", sim_bytes, "firmware live", firmware_live, "mem_peak", st["mem_peak"])
    assert 0 < firmware_live < FIRMWARE_HEAP
