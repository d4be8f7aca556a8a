"""Helpers for the inference tests: committed model paths, simulated device schema."""

from __future__ import annotations

from pathlib import Path

from tests.support.upy import ROOT
from tools.train import sim_data

MODELS = ROOT / "models"
VIBRATION = {q: MODELS / f"vibration_anomaly_{q}.json" for q in ("float32", "int8")}
MOTIONS = {q: MODELS / f"basic_motions_{q}.json" for q in ("float32", "int8")}
ALL_MANIFESTS = [*VIBRATION.values(), *MOTIONS.values()]

# Simulated machines for tests use seeds far from the training ranges (10_000 + ...).
HEALTHY_SEEDS = range(501, 505)
FAULT_SEEDS = range(601, 603)


def mpu_channels() -> list[tuple[str, str, float, float, int, float]]:
    """The simulated MPU-6050's BIRTH channel tuples (name, unit, scale, offset, type, rate)."""
    return [(name, unit, 1 / 16384 if unit == "g" else 1 / 131, 0.0, 1, 100.0) for name, unit in sim_data.CHANNELS]


def copy_model(manifest: Path, dest: Path) -> Path:
    """Copy a manifest and its model file into dest; return the new manifest path."""
    import json

    data = json.loads(manifest.read_text())
    (dest / data["model_file"]).write_bytes((manifest.parent / data["model_file"]).read_bytes())
    out = dest / manifest.name
    out.write_text(manifest.read_text())
    return out
