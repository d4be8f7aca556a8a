"""The gateway with its forwarder: alerts, summaries and raw windows reach a second ("cloud")
Mosquitto; the cloud can ask for a raw window."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from gateway.config import from_dict
from gateway.runner import Runner
from tests.gateway.doubles import RMSModel
from tests.gateway.mqtt_util import Client
from tests.support.simdevice import SimDevice


def test_alert_summary_and_raw_windows_reach_the_cloud(tmp_path: Path, mosquitto_factory: Callable[..., Any]) -> None:
    local = mosquitto_factory()
    cloud = mosquitto_factory()
    cfg = from_dict(
        {
            "gateway": {"id": "gw1", "site": "s1", "data_dir": str(tmp_path / "data"), "status_interval_s": 0.2},
            "mqtt": {"host": local.host, "port": local.port},
            "pipelines": [{"name": "vib", "model": "unused.json", "devices": ["pump-*"]}],
            "summary": {"interval_s": 0.5},
            "raw": {"alert_before_s": 3.0, "alert_after_s": 0.0, "alert_holdoff_s": 60},
            "forward": {"host": cloud.host, "port": cloud.port, "commit_interval_ms": 1},
        }
    )
    up = Client(cloud.host, cloud.port, client_id="cloud-consumer")
    up.subscribe("edgeline/gw1/#")
    runner = Runner(cfg, models={"vib": RMSModel()})
    t = threading.Thread(target=runner.run, daemon=True)
    t.start()
    try:
        assert runner.mqtt.subscribed.wait(10)  # SUBACK: the pump's first frame is not missed
        pump = SimDevice("pump-1")
        dev = Client(local.host, local.port, client_id="pump-1")
        dev.publish(pump.topic("birth"), pump.birth())
        t_first = time.time()
        for _ in range(4):
            dev.publish(pump.topic("data"), pump.data())
        fault = pump.raw_block(lambda t: np.stack([4000 * np.sin(2 * np.pi * 37 * t), 0 * t, 0 * t], axis=1))
        dev.publish(pump.topic("data"), pump.data(fault))

        def record(lane: str, pred: Callable[[dict[str, Any]], bool] = lambda r: True) -> dict[str, Any]:
            _t, p, _ = up.wait_for(
                lambda topic, p: topic == f"edgeline/gw1/{lane}" and pred(json.loads(p)["record"]), timeout=20
            )
            msg = json.loads(p)
            assert msg["key"].startswith(f"gw1/{lane}/")
            return msg["record"]  # type: ignore[no-any-return]

        alert = record("alert")
        assert alert["device"] == "pump-1" and alert["site"] == "s1" and alert["score"] > alert["threshold"]
        # The readings around the alert, from the raw log: all 5 frames (160 samples) lie in the span.
        around = record("raw", lambda r: r["reason"] == "alert")
        assert around["device"] == "pump-1" and around["channels"] == ["ax", "ay", "temp"]
        assert around["ref"]["seq"] == alert["seq"]
        vals = np.asarray(around["values"])
        assert vals.shape[1] == 3 and 1 <= len(vals) <= 160
        assert np.abs(vals[:, 0]).max() > 3.5  # the 4 g fault is in it
        assert set(np.round(vals[:, 2], 3)) <= {0.0, 25.0}  # temp: 25 C, 0 in the fault frame
        summary = record("summary", lambda r: r.get("device") == "pump-1" and r.get("count", 0) > 0)
        assert summary["channels"]["temp"]["max"] == 25.0
        registry = record("registry", lambda r: r.get("event") == "birth")
        assert registry["device"] == "pump-1" and registry["fw_version"] == "1.2.3"
        # The cloud asks for a raw window; a bad request is rejected and reported.
        up.publish(
            "edgeline/gw1/cmd/request_raw",
            json.dumps(
                {"op": "request_raw", "device": "pump-1", "start": t_first - 5, "end": time.time() + 1, "id": "r-7"}
            ).encode(),
        )
        asked = record("raw", lambda r: r["reason"] == "request")
        assert asked["ref"]["id"] == "r-7" and len(asked["values"]) == 5 * 32
        assert asked["t"] == sorted(asked["t"])
        up.publish("edgeline/gw1/cmd/request_raw", json.dumps({"op": "request_raw", "device": "../x"}).encode())
        rejected = record("registry", lambda r: r.get("type") == "command_rejected")
        assert "device" in rejected["error"]
        dev.close()
    finally:
        runner.stop_event.set()
        t.join(20)
        up.close()
    assert not t.is_alive()
