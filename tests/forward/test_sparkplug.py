"""Sparkplug B payloads toward the cloud (pysparkplug), as an alternative to the JSON default."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pysparkplug as spb

from gateway.forward import ForwardConfig, Forwarder
from gateway.forward.sparkplug import decode_sparkplug
from tests.forward.helpers import Collector, forward_config
from tests.support.mosquitto import Mosquitto


def test_sparkplug_ddata_carries_key_and_flattened_record(
    mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path
) -> None:
    cloud = mosquitto_factory()
    collector = Collector(cloud, "spBv1.0/#", raw=True)
    cfg = ForwardConfig.from_dict(forward_config(cloud, payload_format="sparkplug", sparkplug_group="plant7"))
    fwd = Forwarder(cfg, "gws", tmp_path / "data")
    fwd.start()
    try:
        fwd.submit("alert", {"device": "pump3", "score": 0.97, "count": 12, "ok": False, "tags": ["a", "b"]})
        fwd.submit("summary", {"device": "pump3", "stats": {"x": {"mean": 1.5, "count": 10}}})
        assert fwd.wait_drained(20)
        got = collector.wait_for(lambda m: sum(1 for t, _ in m if "/DDATA/" in t) >= 2)
    finally:
        fwd.stop()
        collector.close()
    births = [p for t, p in got if t == "spBv1.0/plant7/NBIRTH/gws"]
    assert births and spb.NBirth.decode(births[0]).metrics
    data = [(t, decode_sparkplug(p)) for t, p in got if "/DDATA/" in t]
    assert [t for t, _ in data] == ["spBv1.0/plant7/DDATA/gws/alert", "spBv1.0/plant7/DDATA/gws/summary"]
    alert = data[0][1]
    assert alert["edgeline/key"] == f"gws/alert/{fwd.status()['epoch']}-1"
    assert alert["edgeline/seq"] == 1
    assert alert["record/device"] == "pump3"
    assert alert["record/score"] == 0.97
    assert alert["record/count"] == 12
    assert alert["record/ok"] is False
    assert alert["record/tags"] == '["a","b"]'
    assert data[1][1]["record/stats/x/mean"] == 1.5
