"""Fixtures for the inference tests: simulated vibration windows and watch-like windows."""

from __future__ import annotations

import numpy as np
import pytest

from tests.inference.data import FAULT_SEEDS, HEALTHY_SEEDS
from tools.train import sim_data


@pytest.fixture(scope="session")
def healthy_windows() -> np.ndarray:
    return sim_data.machine_set(HEALTHY_SEEDS, 30, seed=11)


@pytest.fixture(scope="session")
def fault_windows() -> dict[tuple[str, float], np.ndarray]:
    return {
        (kind, sev): sim_data.machine_set(FAULT_SEEDS, 12, seed=12, fault=kind, severity=sev)
        for kind in ("bearing", "imbalance", "noise")
        for sev in (0.1, 0.5, 1.0)
    }


@pytest.fixture(scope="session")
def motion_windows() -> np.ndarray:
    """Watch-like windows (10 Hz, 100 samples, 6 channels): sines + noise, deterministic."""
    rng = np.random.default_rng(5)
    t = np.arange(100) / 10.0
    freqs = rng.uniform(0.2, 3.0, size=(24, 1, 6))
    amps = rng.uniform(0.1, 8.0, size=(24, 1, 6))
    w = amps * np.sin(2 * np.pi * freqs * t[None, :, None]) + rng.normal(0, 0.3, size=(24, 100, 6))
    return w.astype(np.float32)
