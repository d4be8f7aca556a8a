"""The gateway side of device-config in process, on a real Gateway (real SQLite, real alert
states, real frames through the pipeline): what is kept in data_dir/device_config.json is put
back in force at the next start, and an older acknowledgement never overwrites a newer one."""

from __future__ import annotations

import json
import time
from pathlib import Path

from gateway.config import from_dict
from gateway.devconfig import DeviceConfig
from gateway.ingest import RawFrame
from gateway.pipeline import Gateway
from shared_protocol import FLAG_HISTORICAL
from shared_protocol.config_change import APPLIED, ack_events
from shared_protocol.encode import encode_birth, encode_event
from tests.gateway.doubles import Published

CHANNELS = [("t", "degC", 0.01, 0.0, 1, 10.0)]


def _gateway(tmp_path: Path) -> tuple[Gateway, DeviceConfig]:
    cfg = from_dict({"gateway": {"id": "gw1", "site": "s1", "data_dir": str(tmp_path / "data")}})
    gw = Gateway(cfg, Published())
    dc = DeviceConfig(gw, tmp_path / "data")
    gw.control.event_listeners.append(dc.on_ack)
    dc.restore()
    return gw, dc


def _ack_frame(seq: int, cid: int, rate: float, *, flags: int = 0) -> bytes:
    pairs = ack_events(cid, APPLIED, (rate, 10, 5))
    buf = bytearray(128)
    n = encode_event(
        buf, 1, seq, 1000 + seq, flags, bytes(c for c, _ in pairs), [0] * len(pairs), [v for _, v in pairs], len(pairs)
    )
    return bytes(buf[:n])


def _birth() -> bytes:
    buf = bytearray(256)
    return bytes(buf[: encode_birth(buf, 1, 0, 1000, "fw", CHANNELS)])


def _frames(*items: tuple[str, bytes]) -> list[RawFrame]:
    now = time.time()
    return [RawFrame(f"el/s1/dev1/{kind}", payload, now) for kind, payload in items]


def test_thresholds_and_reported_configs_come_back_at_start(tmp_path: Path) -> None:
    gw, dc = _gateway(tmp_path)
    gw.process(
        _frames(
            ("birth", _birth()),
            ("event", _ack_frame(2, 77, 25.0)),
            ("event", _ack_frame(1, 76, 50.0, flags=FLAG_HISTORICAL)),
        )
    )
    # the acknowledgement of seq 1 came later but is older: the newer one stays
    assert dc.state["reported"]["dev1"]["config"] == {"sample_rate_hz": 25.0, "batch": 10, "health_interval_s": 5}
    assert gw.live.devices["dev1"].config["sample_rate_hz"] == 25.0
    gw.close()
    path = tmp_path / "data" / "device_config.json"
    saved = json.loads(path.read_text())
    assert saved["reported"]["dev1"]["change_id"] == 77
    saved["thresholds"] = {"dev1": {"vibration": 0.42}}  # as a threshold request saves it
    path.write_text(json.dumps(saved))

    gw2, _dc2 = _gateway(tmp_path)
    try:
        assert gw2.alerts.overrides() == {("dev1", "vibration"): 0.42}
        assert gw2.live.devices["dev1"].config == {"sample_rate_hz": 25.0, "batch": 10, "health_interval_s": 5}
    finally:
        gw2.close()
