"""The gateway process with ``[encryption] enabled = true``: frames with a known marker in their
readings reach the raw log encrypted (no plaintext in the database or its WAL), summaries reach a
real cloud broker through the encrypted forward queue, and after a kill -9 and a restart (a new
nonce epoch) every frame reads back."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.atrest import EncryptionSettings, key_name, open_keyring
from gateway.cli import main
from gateway.forward.queue import key_usage as queue_key_usage
from gateway.rawlog import key_usage, read_all
from shared_protocol import DATA
from tests.forward.helpers import Collector, records
from tests.support.gateway_proc import GatewayProcess
from tests.support.mosquitto import Mosquitto
from tests.support.simdevice import SimDevice
from tests.support.waiting import wait_until

# Readings whose int16 samples spell the marker in the frame's bytes (3 channels, little-endian).
MARKER = b"EKRY!!"
SAMPLES = np.tile(np.frombuffer(MARKER, dtype="<i2"), (32, 1))


def _publisher(broker: Mosquitto) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="pump-9")
    c.connect(broker.host, broker.port)
    c.loop_start()
    return c


def test_gateway_encrypts_the_raw_log_and_the_forward_queue(
    mosquitto: Mosquitto,
    mosquitto_factory: Callable[..., Mosquitto],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cloud = mosquitto_factory()
    collector = Collector(cloud)
    extra = (
        f'[summary]\ninterval_s = 0.5\n\n[forward]\nhost = "{cloud.host}"\nport = {cloud.port}\n'
        "backoff_min_s = 0.05\nbackoff_max_s = 0.3\n\n[encryption]\nenabled = true\n"
    )
    gw = GatewayProcess(tmp_path / "gw", mosquitto.port, extra_toml=extra).start()
    rawlog = gw.data / "rawlog.sqlite"
    pub = _publisher(mosquitto)
    dev = SimDevice("pump-9")
    try:
        pub.publish(dev.topic("birth"), dev.birth(), qos=1)
        for _ in range(10):
            pub.publish(dev.topic("data"), dev.data(SAMPLES), qos=1)
        ring = open_keyring(EncryptionSettings(key_dir=gw.data / "keys"))
        frames = lambda: [r for r in read_all(rawlog, "pump-9", keys=ring) if r.type == DATA]  # noqa: E731
        wait_until(lambda: len(frames()) == 10, 20, "the 10 DATA frames in the raw log")
        assert all(MARKER * 2 in r.payload for r in frames())  # what was stored is what was sent
        got = collector.wait_for(lambda m: any(r["lane"] == "summary" for r in records(m)), timeout=30)
        summary = next(r["record"] for r in records(got) if r["lane"] == "summary")
        assert summary["device"] == "pump-9"
        status = gw.wait_subscribed()
        assert status["encryption"] == {"key_dir": str(gw.data / "keys"), "active_key": key_name(ring.active_id)}
        assert main(["status", "-c", str(gw.config)]) == 0
        assert f"encryption at rest: key {key_name(ring.active_id)}; unreadable: 0 raw log chunk(s)" in (
            capsys.readouterr().out
        )

        gw.kill()  # kill -9; the restart takes a new epoch of the same key
        gw.start()
        for _ in range(5):
            pub.publish(dev.topic("data"), dev.data(SAMPLES), qos=1)
        wait_until(lambda: len(frames()) == 15, 20, "the 5 more DATA frames after the restart")
        for path in (rawlog, Path(f"{rawlog}-wal"), gw.data / "forward.db", gw.data / "forward.db-wal"):
            if path.exists():
                assert MARKER not in path.read_bytes(), path
        assert set(key_usage(rawlog)) == {ring.active_id}  # no plain chunk
        assert 0 not in queue_key_usage(gw.data / "forward.db")  # no plain record
        ring.refresh()
        assert ring.infos()[0].next_epoch >= 3  # raw log and forward queue, and the raw log again
        ring.close()
    finally:
        pub.disconnect()
        pub.loop_stop()
        collector.close()
        gw.kill()
