"""A signed model bundle through the real `edgeline-gateway run` process: `update install`, shadow
on the windows of a pump publishing to the real Mosquitto, promotion, `model status`,
`model rollback`, and the promoted model kept over a restart."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tests.gateway.mqtt_util import Client
from tests.inference.data import mpu_channels
from tests.support.gateway_proc import GatewayProcess
from tests.support.mosquitto import Mosquitto
from tests.support.simdevice import SimDevice
from tests.support.upy import ROOT
from tests.support.waiting import wait_until
from tests.updates.conftest import ReleaseKey
from tests.updates.model_site import FLOAT32, INT8, SCALE
from tools.train import sim_data


def cli(gp: GatewayProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args, "-c", str(gp.config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def model_files(manifest: Path) -> dict[str, bytes]:
    tflite = json.loads(manifest.read_text())["model_file"]
    return {manifest.name: manifest.read_bytes(), tflite: (manifest.parent / tflite).read_bytes()}


def wait_state(client: Client, state: str, timeout: float = 30.0) -> dict[str, Any]:
    def check(topic: str, payload: bytes) -> bool:
        return bool(json.loads(payload).get("model/vib", {}).get("state") == state)

    _, payload, _ = client.wait_for(check, timeout)
    return dict(json.loads(payload)["model/vib"])


def test_model_bundle_shadowed_promoted_and_rolled_back_in_the_running_gateway(
    tmp_path: Path, mosquitto: Mosquitto, release_key: ReleaseKey, make_bundle: Callable[..., Path]
) -> None:
    gp = GatewayProcess(
        tmp_path / "gw",
        mosquitto.port,
        extra_toml=f"""
[[pipelines]]
name = "vib"
model = "{FLOAT32}"
devices = ["pump-*"]

[updates]
enabled = true
trusted_keys = ["{release_key.pub_path}"]

[updates.shadow]
windows = 12
""",
    )
    bundle = make_bundle(
        kind="model", name="vib", version="1.1-int8", counter=2, files=model_files(INT8), entry=INT8.name
    )
    watch = Client(mosquitto.host, mosquitto.port, client_id="watch")
    watch.subscribe("el/s1/_gateway/updates")
    pump = Client(mosquitto.host, mosquitto.port, client_id="pump-1")
    dev = SimDevice("pump-1", channels=mpu_channels())
    raw = np.round(sim_data.stream(32 * 60, seed=502, warmup=1000) * SCALE).astype(np.int16).reshape(-1, 32, 6)
    try:
        gp.start()
        res = cli(gp, "update", "install", str(bundle))
        assert res.returncode == 0, res.stderr
        assert "model vib 1.1-int8 (counter 2): verified" in res.stdout
        wait_state(watch, "shadow")
        status = cli(gp, "model", "status")
        assert "candidate 1.1-int8 in shadow: 0 of 12 windows" in status.stdout, status.stdout
        pump.publish(dev.topic("birth"), dev.birth())
        for block in raw:
            pump.publish(dev.topic("data"), dev.data(block))
        promoted = wait_state(watch, "promoted")
        assert promoted["figures"]["windows"] >= 12 and promoted["figures"]["errors"] == 0
        assert promoted["replaced"] == "1.0.0"
        status = cli(gp, "model", "status")
        assert status.stdout.splitlines() == ["pipeline vib: model 1.1-int8 (update 2), rollback to 1.0.0"]
        line = "models: pipeline vib: model 1.1-int8 (update 2), rollback to 1.0.0"
        wait_until(lambda: line in cli(gp, "status").stdout, 10, "the promotion in edgeline-gateway status")
        assert gp.stop() == 0

        gp.start()  # the promoted model again after a restart
        st = json.loads(cli(gp, "model", "status", "--json").stdout)
        assert st["pipelines"]["vib"]["version"] == "1.1-int8"
        assert gp.wait_subscribed()["pipelines"]["vib"]["model_version"] == "1.0.0"  # the int8 manifest's own
        res = cli(gp, "model", "rollback", "vib")
        assert res.returncode == 0 and res.stdout.strip() == "pipeline vib: model 1.0.0 (was 1.1-int8)"
        rolled = wait_state(watch, "rolled_back")
        assert rolled["version"] == "1.0.0" and rolled["counter"] == 0
        res = cli(gp, "model", "rollback", "nope")
        assert res.returncode == 1 and "no pipeline 'nope'" in res.stderr
        # a replayed bundle is refused by the service: the model stays
        res = cli(gp, "update", "install", str(bundle))
        assert res.returncode != 0 and "replayed" in res.stderr
    finally:
        gp.stop()
        watch.close()
        pump.close()
    offline = cli(gp, "model", "status")
    assert "pipeline vib: model 1.0.0 (update none: the configuration names it), rollback to 1.1-int8" in offline.stdout
