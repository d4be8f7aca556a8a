"""Down-link: cloud commands on <prefix>/<gateway>/cmd/# reach the gateway's callback; bad ones are
rejected with a specific error, counted, and reported upward."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gateway.forward import ForwardConfig, Forwarder
from tests.forward.helpers import Collector, forward_config, records
from tests.support.mosquitto import Mosquitto


def test_cloud_commands_reach_the_callback(mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path) -> None:
    cloud = mosquitto_factory()
    collector = Collector(cloud)
    received: list[dict[str, Any]] = []
    lock = threading.Lock()

    def on_command(cmd: dict[str, Any]) -> None:
        if cmd.get("op") == "explode":
            raise RuntimeError("handler bug")
        with lock:
            received.append(cmd)

    fwd = Forwarder(ForwardConfig.from_dict(forward_config(cloud)), "gwk", tmp_path / "data", on_command=on_command)
    fwd.start()
    cloud_app = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="cloud-app")
    cloud_app.connect(cloud.host, cloud.port)
    cloud_app.loop_start()
    try:
        deadline = time.monotonic() + 20
        while fwd.status()["connection"]["state"] != "connected":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.2)  # let the SUBSCRIBE reach the broker before the commands are sent
        request = {"op": "request_raw", "device": "d1", "start": 100.0, "end": 160.0}
        setting = {"op": "set", "stage": "windows", "key": "size", "value": 256}
        for topic, payload in [
            ("edgeline/gwk/cmd/request_raw", json.dumps(request).encode()),
            ("edgeline/gwk/cmd/pipeline", json.dumps(setting).encode()),
            ("edgeline/gwk/cmd/pipeline", b"\xff not json"),
            ("edgeline/gwk/cmd/pipeline", b"[1, 2]"),
            ("edgeline/gwk/cmd/pipeline", json.dumps({"op": "explode"}).encode()),
            ("edgeline/other-gw/cmd/pipeline", json.dumps(setting).encode()),  # not ours
        ]:
            cloud_app.publish(topic, payload, qos=1).wait_for_publish(10)
        deadline = time.monotonic() + 20
        while fwd.status()["commands"]["rejected"] < 3:
            assert time.monotonic() < deadline, fwd.status()["commands"]
            time.sleep(0.01)
        assert fwd.wait_drained(20)
        got = collector.wait_for(
            lambda m: sum(1 for r in records(m) if r["record"].get("type") == "command_rejected") >= 3
        )
        status = fwd.status()
    finally:
        cloud_app.disconnect()
        cloud_app.loop_stop()
        fwd.stop()
        collector.close()
    with lock:
        assert received == [
            {"command": "request_raw", "topic": "edgeline/gwk/cmd/request_raw", **request},
            {"command": "pipeline", "topic": "edgeline/gwk/cmd/pipeline", **setting},
        ]
    assert status["commands"]["received"] == 3  # two handled + one whose handler raised
    assert status["commands"]["rejected"] == 3
    errors = [r["record"]["error"] for r in records(got) if r["record"].get("type") == "command_rejected"]
    assert any("not a JSON object" in e for e in errors)
    assert any("expected a JSON object, got list" in e for e in errors)
    assert any("handler raised RuntimeError: handler bug" in e for e in errors)
