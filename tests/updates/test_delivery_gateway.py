"""The update service inside the real ``edgeline-gateway run`` (local Mosquitto, and a second one as
the cloud broker): a bundle published to the cloud is fetched and verified, a local
``edgeline-gateway update install`` of a bundle signed by an unknown key is refused with its
reason, reported to the cloud on lane "registry" and shown by ``update status``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.forward.helpers import Collector, wait_until
from tests.support.gateway_proc import GatewayProcess
from tests.support.mosquitto import Mosquitto
from tests.support.upy import ROOT
from tests.updates.conftest import ReleaseKey, make_release_key
from tools.release.publish import Broker, publish_bundle


@pytest.fixture
def brokers(mosquitto_factory: Callable[..., Mosquitto]) -> tuple[Mosquitto, Mosquitto]:
    return mosquitto_factory(), mosquitto_factory()  # local, cloud


@pytest.fixture
def gateway(brokers: tuple[Mosquitto, Mosquitto], release_key: ReleaseKey, tmp_path: Path) -> Iterator[GatewayProcess]:
    local, cloud = brokers
    extra = f"""
[forward]
host = "{cloud.host}"
port = {cloud.port}
backoff_min_s = 0.05
backoff_max_s = 0.3

[updates]
enabled = true
trusted_keys = ["{release_key.pub_path}"]
"""
    gp = GatewayProcess(tmp_path / "gw", local.port, extra_toml=extra, site="plant1").start()
    yield gp
    assert gp.stop() == 0


def cli(gp: GatewayProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "gateway", "update", *args, "-c", str(gp.config)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def update_records(registry: Collector) -> list[dict[str, Any]]:
    return [
        m["record"]
        for _t, m in registry.snapshot()
        if isinstance(m, dict) and m.get("record", {}).get("type") == "update"
    ]


def test_refused_local_install_and_a_delivered_bundle(
    gateway: GatewayProcess, brokers: tuple[Mosquitto, Mosquitto], make_bundle: Callable[..., Path], tmp_path: Path
):
    _, cloud = brokers
    registry = Collector(cloud, "edgeline/gw1/registry")
    try:
        stranger = make_release_key(tmp_path / "other", "stranger")
        bad = make_bundle(name="vibration", counter=7, key=stranger.private)
        done = cli(gateway, "install", str(bad))
        assert done.returncode == 1, done.stderr
        assert "refused (unknown_key)" in done.stderr and stranger.key_id in done.stderr
        refused = wait_until(
            lambda: [r for r in update_records(registry) if r["state"] == "refused"], "the refusal in the cloud"
        )
        assert refused[0]["code"] == "unknown_key" and refused[0]["name"] == "vibration"
        assert not any((gateway.data / "updates" / "staged").iterdir())  # nothing written for it

        good = make_bundle(kind="model", name="nopipe", counter=3, gateways=("gw1",))
        publish_bundle(good, Broker(cloud.host, cloud.port), gateway="gw1", chunk_size=1024)
        received = wait_until(
            lambda: [r for r in update_records(registry) if r["state"] == "received"], "the delivered bundle"
        )
        assert (received[0]["name"], received[0]["counter"], received[0]["source"]) == ("nopipe", 3, "cloud")
        st = wait_until(lambda: (s := gateway.status()) and s["updates"]["installed"] == 1 and s, "handed over")
        assert st["updates"]["received"] == 1 and st["updates"]["refused"] == 1

        shown = cli(gateway, "status")
        assert shown.returncode == 0, shown.stderr
        assert "model/vibration: refused: unknown_key" in shown.stdout
        overall = subprocess.run(
            [sys.executable, "-m", "gateway", "status", "-c", str(gateway.config)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert "updates: model/vibration: refused: unknown_key" in overall.stdout, overall.stdout + overall.stderr
        doc = json.loads(cli(gateway, "status", "--json").stdout)
        assert doc["ok"] and doc["status"]["trusted_keys"]
    finally:
        registry.close()
