"""Training/evaluation windows from the simulation board's signal generators.

Imports ``firmware/sensorfw/boards/sim_signals.py`` (pure Python, the same module the
simulated MPU-6050 uses) by putting ``firmware/`` on ``sys.path``, and turns its raw int16
register stream into float32 arrays of windows in physical units (g, deg/s), exactly what
the gateway gets after decoding DATA frames with the BIRTH scale factors.
"""

from __future__ import annotations

import importlib
import sys
from array import array
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parents[2]
_FIRMWARE = str(ROOT / "firmware")
if _FIRMWARE not in sys.path:
    sys.path.insert(0, _FIRMWARE)

sim_signals: Any = importlib.import_module("sensorfw.boards.sim_signals")

ACCEL_LSB_PER_G = 16384
GYRO_LSB_PER_DPS = 131
CHANNELS = (
    ("ax", "g"),
    ("ay", "g"),
    ("az", "g"),
    ("gx", "deg/s"),
    ("gy", "deg/s"),
    ("gz", "deg/s"),
)
FAULTS: tuple[str, ...] = tuple(sim_signals.FAULTS)


def stream(
    n_samples: int,
    *,
    seed: int,
    rate_hz: float = 100.0,
    shaft_hz: float = 24.7,
    fault: str = "none",
    severity: float = 1.0,
    warmup: int = 0,
) -> npt.NDArray[np.float32]:
    """(n_samples, 6) float32 in g / deg/s, quantised through the int16 registers."""
    vib: Any = sim_signals.Vibration(rate_hz, seed=seed, shaft_hz=shaft_hz)
    vib.set_fault(fault, severity)
    buf = array("h", bytes(2 * 6 * max(n_samples, warmup, 1)))
    if warmup:
        vib.fill_raw(buf, warmup, ACCEL_LSB_PER_G, GYRO_LSB_PER_DPS)
    vib.fill_raw(buf, n_samples, ACCEL_LSB_PER_G, GYRO_LSB_PER_DPS)
    raw = np.frombuffer(buf, dtype=np.int16, count=6 * n_samples).reshape(n_samples, 6)
    scale = np.array([1.0 / ACCEL_LSB_PER_G] * 3 + [1.0 / GYRO_LSB_PER_DPS] * 3, np.float32)
    return raw.astype(np.float32) * scale


def windows(
    n_windows: int,
    *,
    seed: int,
    window: int = 128,
    hop: int = 64,
    rate_hz: float = 100.0,
    shaft_hz: float = 24.7,
    fault: str = "none",
    severity: float = 1.0,
) -> npt.NDArray[np.float32]:
    """(n_windows, window, 6) float32 windows cut from one continuous stream."""
    from gateway.features import frame

    n_samples = window + hop * (n_windows - 1)
    s = stream(
        n_samples,
        seed=seed,
        rate_hz=rate_hz,
        shaft_hz=shaft_hz,
        fault=fault,
        severity=severity,
    )
    w = frame(s, window, hop)
    return w


def machine_set(
    seeds: range | list[int],
    windows_per_seed: int,
    *,
    seed: int,
    fault: str = "none",
    severity: float = 1.0,
    shaft_range: tuple[float, float] = (23.5, 26.0),
    window: int = 128,
    hop: int = 64,
) -> npt.NDArray[np.float32]:
    """Windows from several simulated machines (one per seed) whose shaft speeds vary.

    ``seed`` drives the choice of shaft speeds, so the whole set is reproducible.
    """
    rng = np.random.default_rng(seed)
    out = []
    for s in seeds:
        shaft = float(rng.uniform(*shaft_range))
        out.append(
            windows(
                windows_per_seed,
                seed=int(s),
                window=window,
                hop=hop,
                shaft_hz=shaft,
                fault=fault,
                severity=severity,
            )
        )
    return np.concatenate(out, axis=0)
