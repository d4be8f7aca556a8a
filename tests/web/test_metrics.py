"""Prometheus /metrics of a real gateway process, scraped over HTTP and parsed with
prometheus_client's own parser; and the Grafana dashboard's expressions against it."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.support.gateway_proc import GatewayProcess
from tests.support.mosquitto import Mosquitto
from tests.support.simdevice import SimDevice
from tests.support.upy import ROOT
from tests.support.waiting import wait_until
from tests.web.feeder import CHANNELS, MODEL, NS

DATA_FRAMES = 10  # per device: 320 samples, 4 windows of the model (128, hop 64)
DETAIL_DEVICES = 2  # gateway.status_detail_devices: per-device series up to 2 devices
DASHBOARD = ROOT / "deploy" / "grafana" / "edgeline.json"


@dataclass
class Scraped:
    url: str
    gateway: GatewayProcess
    client: mqtt.Client

    def families(self) -> dict[str, list[Sample]]:
        with urllib.request.urlopen(self.url + "metrics", timeout=10) as resp:
            assert resp.headers["Content-Type"].startswith("text/plain; version=")  # the text format
            text = resp.read().decode()
        return {f.name: f.samples for f in text_string_to_metric_families(text)}

    def value(self, name: str, **labels: str) -> float | None:
        for family in self.families().values():
            for s in family:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    return s.value
        return None


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scraped]:
    work = tmp_path_factory.mktemp("metrics")
    broker = Mosquitto(work / "broker").start()
    cloud = Mosquitto(work / "cloud").start()
    gw = GatewayProcess(
        work / "gw",
        broker.port,
        extra_toml=f"""
[web]
port = 0

[[pipelines]]
name = "vibration"
model = "{MODEL}"

[forward]
host = "127.0.0.1"
port = {cloud.port}
""",
    )
    text = gw.config.read_text().replace(
        "status_interval_s = 0.2", f"status_interval_s = 0.2\nstatus_detail_devices = {DETAIL_DEVICES}"
    )
    gw.config.write_text(text)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="metrics-test")
    try:
        gw.start()
        client.connect("127.0.0.1", broker.port, 30)
        client.loop_start()
        for name in ("pump-01", "pump-02"):
            dev = SimDevice(name, channels=list(CHANNELS), nsamples=NS)
            client.publish(dev.topic("birth"), dev.birth(), qos=1).wait_for_publish(5)
            client.publish(dev.topic("health"), dev.health(rssi=-61, queue_depth=3), qos=1)
            for _ in range(DATA_FRAMES):
                client.publish(dev.topic("data"), dev.data(), qos=1)
        bad = bytearray(SimDevice("pump-01", channels=list(CHANNELS), nsamples=NS).data())
        bad[-1] ^= 0xFF  # a broken CRC
        client.publish(SimDevice("pump-01").topic("data"), bytes(bad), qos=1)
        status = gw.status()
        assert status is not None
        yield Scraped(status["web"]["url"], gw, client)
    finally:
        client.loop_stop()
        gw.stop()
        broker.kill()
        cloud.kill()


def test_metrics_report_what_the_gateway_counted(scraped: Scraped) -> None:
    readings = 2 * DATA_FRAMES * NS * len(CHANNELS)
    wait_until(
        lambda: (
            scraped.value("edgeline_ingest_readings_total") == readings
            and scraped.value("edgeline_decode_errors_total") is not None
        ),
        20,
        "the readings and the bad frame in /metrics",
        poll=0.2,
    )
    fam = scraped.families()
    status = json.loads((scraped.gateway.data / "status.json").read_text())
    v = scraped.value
    assert v("edgeline_ingest_frames_total", kind="data") == 2 * DATA_FRAMES  # the bad one is counted apart
    assert v("edgeline_ingest_frames_total", kind="birth") == 2
    assert v("edgeline_ingest_data_frames_total") == 2 * DATA_FRAMES
    [(reason, n)] = status["bad_frames"]["by_reason"].items()
    assert v("edgeline_decode_errors_total", reason=reason) == n == 1
    assert v("edgeline_sequence_gaps_total") == 0 and v("edgeline_ingest_dropped_frames_total") == 0
    assert v("edgeline_mqtt_connected") == 1
    assert v("edgeline_windows_scored_total", pipeline="vibration") == 2 * 4

    # the inference histogram: cumulative buckets ending in +Inf == count == model calls
    buckets = [s for s in fam["edgeline_inference_seconds"] if s.name == "edgeline_inference_seconds_bucket"]
    counts = [s.value for s in buckets]
    assert counts == sorted(counts) and buckets[-1].labels["le"] == "+Inf"
    calls = status["pipelines"]["vibration"]["calls"]
    assert counts[-1] == v("edgeline_inference_seconds_count", pipeline="vibration") == calls > 0
    assert 0 < (v("edgeline_inference_seconds_sum", pipeline="vibration") or 0) < 5

    # the cloud link and the lanes
    wait_until(lambda: scraped.value("edgeline_forward_link_up") == 1, 20, "the cloud link", poll=0.2)
    assert v("edgeline_forward_link_state", state="connected") == 1
    assert {s.labels["lane"] for s in fam["edgeline_forward_queue_records"]} == {"alert", "registry", "summary", "raw"}

    # per device, as long as the fleet is small (the fleet rows are rebuilt once a second)
    assert v("edgeline_device_series_limited") == 0
    wait_until(lambda: v("edgeline_device_online", device="pump-01") == 1, 10, "pump-01's series", poll=0.2)
    assert v("edgeline_device_rssi_dbm", device="pump-02") == -61
    assert v("edgeline_device_queue_frames", device="pump-02") == 3
    seen = v("edgeline_device_last_seen_timestamp_seconds", device="pump-02")
    assert seen is not None and abs(seen - status["written_at"]) < 60

    # conventions: our names, counters end in _total, units in the names
    for name, samples in fam.items():
        if name.startswith(("process_", "python_")):
            continue
        assert re.fullmatch(r"edgeline_[a-z0-9_]+", name), name
        for s in samples:
            assert not s.name.endswith("_total") or s.name == name + "_total", s


def test_every_grafana_expression_names_an_exported_metric(scraped: Scraped) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs.append(dashboard["templating"]["list"][0]["query"]["query"])
    assert len(exprs) > 20
    exported = {s.name for samples in scraped.families().values() for s in samples}
    names = {n for e in exprs for n in re.findall(r"\b((?:edgeline|process)_[a-z0-9_]+)", e)}
    assert names and names <= exported, sorted(names - exported)
    # every family the gateway exports is on the dashboard, but for a few details
    families = {n for n in scraped.families() if n.startswith("edgeline_")}
    shown = {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in names}
    left_out = {
        "edgeline_forward_configured",
        "edgeline_forward_link_state",
        "edgeline_forward_connects",
        "edgeline_forward_inflight_records",
        "edgeline_forward_acked_records",
        "edgeline_forward_dropped_records",
        "edgeline_ingest_data_frames",
        "edgeline_ingest_queue_capacity_frames",
        "edgeline_mqtt_connected",
        "edgeline_device_series_limited",
        "edgeline_updates_enabled",  # the update series: tests/web/test_updates_page.py
        "edgeline_device_rssi_dbm",
        "edgeline_device_queue_frames",
    }
    assert families - shown - {"edgeline_gateway"} == left_out


def test_per_device_series_stop_beyond_status_detail_devices(scraped: Scraped) -> None:
    dev = SimDevice("fan-03", channels=list(CHANNELS), nsamples=NS)
    scraped.client.publish(dev.topic("birth"), dev.birth(), qos=1)
    wait_until(lambda: scraped.value("edgeline_devices") == 3, 20, "the third device", poll=0.2)
    wait_until(lambda: scraped.value("edgeline_device_series_limited") == 1, 10, "the per-device limit", poll=0.2)
    fam = scraped.families()
    assert "edgeline_device_online" not in fam and "edgeline_device_last_seen_timestamp_seconds" not in fam
    assert scraped.value("edgeline_devices_online") == 3  # the fleet totals stay


def test_grafana_dashboard_is_importable_json() -> None:
    d = json.loads(Path(DASHBOARD).read_text())
    assert d["__inputs"][0]["name"] == "DS_PROMETHEUS"
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    for p in d["panels"]:
        assert p["datasource"]["uid"] == "${DS_PROMETHEUS}" and p["targets"], p["title"]
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
