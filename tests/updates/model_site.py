"""An in-process gateway running the real vibration model (LiteRT), a simulated MPU-6050 pump
fed through the whole pipeline, and model bundles made from the committed models."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gateway.config import Config, from_dict
from gateway.ingest import RawFrame
from gateway.pipeline import Gateway
from gateway.runner import load_models
from gateway.updates.events import UpdateEvents
from gateway.updates.models import ModelUpdates
from tests.gateway.doubles import Published
from tests.inference.data import MODELS, mpu_channels
from tests.support.simdevice import SimDevice
from tools.train import sim_data

FLOAT32 = MODELS / "vibration_anomaly_float32.json"
INT8 = MODELS / "vibration_anomaly_int8.json"
MOTIONS = MODELS / "basic_motions_float32.json"
SCALE = np.array([sim_data.ACCEL_LSB_PER_G] * 3 + [sim_data.GYRO_LSB_PER_DPS] * 3, np.float32)


@dataclass(frozen=True)
class StandInBundle:
    """The fields of a verified bundle a model handler reads."""

    kind: str
    name: str
    version: str
    counter: int
    entry: str
    bundle_id: str


def payload(manifest: Path, dest: Path, **changes: Any) -> Path:
    """A staged payload: the manifest (with changes to its fields, e.g. a threshold) and its .tflite."""
    dest.mkdir(parents=True)
    data = json.loads(manifest.read_text())
    shutil.copyfile(manifest.parent / data["model_file"], dest / data["model_file"])
    for key, value in changes.items():
        target = data
        *path, last = key.split(".")
        for part in path:
            target = target[part]
        target[last] = value
    (dest / manifest.name).write_text(json.dumps(data))
    return dest


def config(tmp_path: Path, *, windows: int = 24, rules: list[dict[str, Any]] | None = None) -> Config:
    return from_dict(
        {
            "gateway": {"id": "gw1", "site": "s1", "data_dir": str(tmp_path / "data")},
            "pipelines": [{"name": "vib", "model": str(FLOAT32), "devices": ["pump-*"]}],
            "rules": rules or [],
            "updates": {
                "enabled": True,
                "trusted_keys": [str(tmp_path / "release.pub")],
                "shadow": {"windows": windows, "max_alert_rate": 0.05, "min_agreement": 0.9},
            },
        },
        base_dir=tmp_path,
    )


class Site:
    """Gateway + model handler + one pump; ``run(n)`` feeds windows through the pipeline."""

    def __init__(self, cfg: Config, *, boot: int = 1) -> None:
        """boot: the pump's boot number (a restarted site needs a new one, or its frames are duplicates)."""
        assert cfg.updates is not None
        self.config = cfg
        self.pub = Published()
        self.records: list[tuple[str, dict[str, Any]]] = []
        self.gw = Gateway(
            cfg, self.pub, submit=lambda lane, rec: self.records.append((lane, rec)), models=load_models(cfg)
        )
        self.events = UpdateEvents(state_topic=None, publish=None, submit=self.gw.outbox.forward)
        self.models = ModelUpdates(
            self.gw, state_dir=cfg.updates.state_dir, rules=cfg.updates.shadow, events=self.events
        )
        self.models.restore()
        self.stage = self.gw.stages[0]
        self.dev = SimDevice("pump-1", channels=mpu_channels(), boot=boot)
        self.t = 1_700_000_000.0
        self.gw.process([RawFrame(self.dev.topic("birth"), self.dev.birth(), self.t)])
        raw = np.round(sim_data.stream(32 * 400, seed=501, warmup=1000) * SCALE).astype(np.int16)
        self.raw = raw.reshape(-1, 32, 6)
        self.sent = 0

    def run(self, frames: int, batch: int = 8) -> None:
        """frames DATA frames of healthy vibration (32 samples each; a window every 2 frames)."""
        for start in range(0, frames, batch):
            out = []
            for _ in range(min(batch, frames - start)):
                self.t += 0.32
                out.append(RawFrame(self.dev.topic("data"), self.dev.data(self.raw[self.sent % len(self.raw)]), self.t))
                self.sent += 1
            self.gw.process(out)
            self.models.tick(self.t)

    def states(self) -> list[str]:
        return [e["state"] for e in self.events.status()["recent"]]

    def last(self) -> dict[str, Any]:
        return dict(self.events.status()["current"]["model/vib"])

    def close(self) -> None:
        assert self.gw.close()
