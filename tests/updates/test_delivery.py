"""Delivery cloud -> gateway against a real Mosquitto as the cloud broker and the real Forwarder:
``edgeline-release publish`` (retained chunks, then the meta), the UpdateService fetches, verifies
and hands the bundle to its handler; refusals reach the cloud as records on lane "registry"; a
damaged chunk is refused and fetched anew when published again; a kill -9 in mid-transfer
resumes without fetching a chunk it already holds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.forward import ForwardConfig, Forwarder
from gateway.updates.bundle import Bundle
from gateway.updates.delivery import chunk_topic, split
from gateway.updates.events import UpdateEvents
from gateway.updates.service import UpdateService
from gateway.updates.settings import UpdatesSettings
from tests.forward.helpers import Collector, forward_config, wait_until
from tests.support.mosquitto import Mosquitto
from tests.support.upy import ROOT
from tests.updates.conftest import ReleaseKey, make_release_key
from tools.release.publish import Broker, publish_bundle

GW, SITE = "gw1", "plant1"
CHUNK = 4096
Make = Callable[..., Path]


@dataclass
class Recorder:
    """A handler that keeps what it was handed."""

    installed: list[tuple[Bundle, dict[str, bytes]]] = field(default_factory=list)
    event: threading.Event = field(default_factory=threading.Event)

    def install(self, bundle: Bundle, staged: Path) -> None:
        files = {p.relative_to(staged).as_posix(): p.read_bytes() for p in staged.rglob("*") if p.is_file()}
        self.installed.append((bundle, files))
        self.event.set()


@dataclass
class GatewaySide:
    service: UpdateService
    forwarder: Forwarder
    handler: Recorder
    events: UpdateEvents

    def refusals(self) -> list[dict[str, Any]]:
        return [e for e in self.events.status()["recent"] if e["state"] == "refused"]


@pytest.fixture
def cloud(mosquitto: Mosquitto) -> Mosquitto:
    return mosquitto


@pytest.fixture
def registry(cloud: Mosquitto) -> Iterator[Collector]:
    collector = Collector(cloud, f"edgeline/{GW}/registry")
    yield collector
    collector.close()


@pytest.fixture
def start_gateway(cloud: Mosquitto, release_key: ReleaseKey, tmp_path: Path) -> Iterator[Callable[[], GatewaySide]]:
    started: list[tuple[GatewaySide, threading.Event, threading.Thread]] = []

    def start() -> GatewaySide:
        forwarder = Forwarder(ForwardConfig.from_dict(forward_config(cloud)), GW, tmp_path / "data")
        events = UpdateEvents(state_topic=None, publish=None, submit=forwarder.submit)
        settings = UpdatesSettings(trusted_keys=(release_key.pub_path,), state_dir=tmp_path / "data" / "updates")
        service = UpdateService(settings, site=SITE, gateway_id=GW, events=events, link=forwarder)
        handler = Recorder()
        service.register("model", handler)
        forwarder.start()
        service.start()
        stop = threading.Event()

        def processing() -> None:  # the runner's loop: tick now and then
            import time

            while not stop.wait(0.02):
                service.tick(time.time())

        thread = threading.Thread(target=processing, daemon=True)
        thread.start()
        side = GatewaySide(service, forwarder, handler, events)
        started.append((side, stop, thread))
        return side

    yield start
    for side, stop, thread in started:
        stop.set()
        thread.join(5)
        side.service.stop()
        side.forwarder.stop()


def broker_of(cloud: Mosquitto) -> Broker:
    return Broker(cloud.host, cloud.port)


def update_records(registry: Collector, state: str) -> list[dict[str, Any]]:
    return [
        m["record"]
        for _t, m in registry.snapshot()
        if isinstance(m, dict) and m.get("record", {}).get("type") == "update" and m["record"]["state"] == state
    ]


def test_published_bundle_is_fetched_verified_and_installed(
    make_bundle: Make, cloud: Mosquitto, registry: Collector, start_gateway: Callable[[], GatewaySide], tmp_path: Path
):
    files = {"model.json": b'{"m": 1}', "model.tflite": os.urandom(5 * CHUNK + 123)}
    path = make_bundle(name="vibration", version="2.0", counter=4, files=files, entry="model.json", gateways=(GW,))
    meta = publish_bundle(path, broker_of(cloud), gateway=GW, chunk_size=CHUNK)
    assert meta.chunks > 5
    side = start_gateway()
    assert side.handler.event.wait(30), side.service.status()
    ((bundle, got),) = side.handler.installed
    assert (bundle.name, bundle.version, bundle.counter, bundle.bundle_id) == ("vibration", "2.0", 4, meta.bundle_id)
    assert got == files
    status = side.service.status()
    assert status["chunks_fetched"] == meta.chunks and status["received"] == 1
    assert side.service.counters.last("model", "vibration") == 4
    received = wait_until(lambda: update_records(registry, "received"), "the 'received' record in the cloud")
    assert received[0]["name"] == "vibration" and received[0]["version"] == "2.0"
    assert not any((tmp_path / "data" / "updates" / "incoming").iterdir())  # the chunks are gone


def test_refused_bundle_is_reported_to_the_cloud_and_nothing_staged(
    make_bundle: Make, cloud: Mosquitto, registry: Collector, start_gateway: Callable[[], GatewaySide], tmp_path: Path
):
    stranger = make_release_key(tmp_path / "other", "stranger")
    bad = make_bundle(name="intruder", key=stranger.private)
    wrong = make_bundle(name="elsewhere", sites=("plant9",))
    side = start_gateway()
    publish_bundle(bad, broker_of(cloud), gateway=GW, chunk_size=CHUNK)
    publish_bundle(wrong, broker_of(cloud), gateway=GW, chunk_size=CHUNK)
    records = wait_until(
        lambda: len(update_records(registry, "refused")) >= 2 and update_records(registry, "refused"), "refusals"
    )
    by_name = {r["name"]: r for r in records}
    assert by_name["intruder"]["code"] == "unknown_key" and stranger.key_id in by_name["intruder"]["reason"]
    assert by_name["elsewhere"]["code"] == "wrong_target" and "plant9" in by_name["elsewhere"]["reason"]
    assert side.handler.installed == []
    assert list((tmp_path / "data" / "updates" / "staged").iterdir()) == []
    assert side.service.counters.last("model", "intruder") == 0


def test_damaged_chunk_is_refused_then_fetched_again_when_published_again(
    make_bundle: Make, cloud: Mosquitto, start_gateway: Callable[[], GatewaySide]
):
    path = make_bundle(files={"model.json": b"{}", "model.tflite": os.urandom(4 * CHUNK)})
    meta = publish_bundle(path, broker_of(cloud), gateway=GW, chunk_size=CHUNK)
    data = bytearray(path.read_bytes()[2 * CHUNK : 3 * CHUNK])
    data[100] ^= 0xFF  # one flipped bit in chunk 2, as the broker keeps it
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.connect(cloud.host, cloud.port)
    client.loop_start()
    client.publish(chunk_topic("edgeline", GW, meta, 2), bytes(data), qos=1, retain=True).wait_for_publish(10)
    client.disconnect()
    client.loop_stop()
    side = start_gateway()
    (refusal,) = wait_until(side.refusals, "the refusal of the damaged chunk")
    assert (
        refusal["code"] == "bad_hash"
        and "chunk 2" in refusal["reason"]
        and "publish the bundle again" in refusal["reason"]
    )
    assert side.handler.installed == []
    publish_bundle(path, broker_of(cloud), gateway=GW, chunk_size=CHUNK)  # published again: a live meta
    assert side.handler.event.wait(30), side.service.status()
    assert side.handler.installed[0][0].bundle_id == meta.bundle_id


def test_kill9_mid_transfer_resumes_without_fetching_held_chunks(
    make_bundle: Make, cloud: Mosquitto, release_key: ReleaseKey, tmp_path: Path
):
    files = {"model.json": b"{}", "model.tflite": os.urandom(11 * CHUNK)}
    path = make_bundle(name="resume", files=files)
    _, chunks = split(path.read_bytes(), "model", "resume", CHUNK)
    total, first = len(chunks), 5
    out = tmp_path / "out"
    out.mkdir()
    state_dir = tmp_path / "data" / "updates"
    config = tmp_path / "receiver.json"
    config.write_text(
        json.dumps(
            {
                "forward": forward_config(cloud),
                "gateway_id": GW,
                "site": SITE,
                "data_dir": str(tmp_path / "data"),
                "state_dir": str(state_dir),
                "trusted_keys": [str(release_key.pub_path)],
                "out": str(out),
            }
        )
    )

    def receiver() -> subprocess.Popen[bytes]:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        return subprocess.Popen([sys.executable, "-m", "tests.updates.receiver", str(config)], cwd=ROOT, env=env)

    # the publisher got only the first chunks (and the meta) out before its link went down
    meta = publish_bundle(path, broker_of(cloud), gateway=GW, chunk_size=CHUNK, only_chunks=range(first))
    proc = receiver()
    try:
        held = state_dir / "incoming" / meta.bundle_id

        def chunks_held() -> int:
            return sum(1 for p in held.iterdir() if p.name.isdigit()) if held.is_dir() else 0

        wait_until(lambda: chunks_held() == first, "the first chunks written to incoming/")
        proc.send_signal(signal.SIGKILL)  # power cut with the transfer half done
        proc.wait(10)
        publish_bundle(
            path, broker_of(cloud), gateway=GW, chunk_size=CHUNK, only_chunks=range(first, total), with_meta=False
        )
        proc = receiver()
        installed = out / f"installed-{meta.bundle_id}.json"
        wait_until(installed.exists, "the bundle installed after the restart")
        doc = json.loads(installed.read_text())
        # No chunk held before the kill is fetched again. The broker keeps the killed session's
        # subscriptions (persistent session) and queues the new chunks for it; on the restart they
        # come once queued and possibly once retained: a chunk received twice is kept once.
        assert set(doc["chunks_seen"]) == set(range(first, total)), doc["chunks_seen"]
        assert doc["status"]["chunks_fetched"] == total - first
        assert doc["files"] == {p: len(d) for p, d in files.items()}
        assert doc["status"]["current"]["model/resume"]["state"] == "received"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_refused_bundle_is_not_fetched_again_after_a_restart(
    make_bundle: Make, cloud: Mosquitto, start_gateway: Callable[[], GatewaySide], tmp_path: Path
):
    stranger = make_release_key(tmp_path / "other", "stranger")
    publish_bundle(make_bundle(name="intruder", key=stranger.private), broker_of(cloud), gateway=GW, chunk_size=CHUNK)
    first = start_gateway()
    wait_until(first.refusals, "the refusal")
    first.service.stop()
    first.forwarder.stop()
    again = start_gateway()  # the retained meta of the refused bundle comes again on subscribe
    later = publish_bundle(make_bundle(name="later", counter=2), broker_of(cloud), gateway=GW, chunk_size=CHUNK)
    assert again.handler.event.wait(30)  # the deliveries are in order: the old meta was seen before this
    assert again.refusals() == [] and again.service.status()["chunk_messages"] == later.chunks


def test_transfer_goes_on_after_the_cloud_link_is_lost(
    make_bundle: Make, cloud: Mosquitto, start_gateway: Callable[[], GatewaySide], tmp_path: Path
):
    files = {"model.json": b"{}", "model.tflite": os.urandom(9 * CHUNK)}
    path = make_bundle(name="linkloss", files=files)
    meta = publish_bundle(path, broker_of(cloud), gateway=GW, chunk_size=CHUNK, only_chunks=range(4))
    side = start_gateway()
    held = tmp_path / "data" / "updates" / "incoming" / meta.bundle_id
    wait_until(lambda: held.is_dir() and sum(1 for p in held.iterdir() if p.name.isdigit()) == 4, "4 chunks held")
    cloud.stop()  # the link is lost; the broker keeps its retained messages (persistence)
    wait_until(lambda: side.forwarder.status()["connection"]["state"] != "connected", "the link down")
    cloud.start()
    publish_bundle(path, broker_of(cloud), gateway=GW, chunk_size=CHUNK, only_chunks=range(4, meta.chunks))
    assert side.handler.event.wait(30), side.service.status()  # subscriptions made again on the reconnect
    assert side.handler.installed[0][1] == files
    assert side.service.status()["chunks_fetched"] == meta.chunks


def test_a_new_release_clears_the_chunks_of_the_one_it_replaces(
    make_bundle: Make, cloud: Mosquitto, start_gateway: Callable[[], GatewaySide]
):
    from tools.release.publish import retained

    old = publish_bundle(make_bundle(name="vib", counter=1), broker_of(cloud), gateway=GW, chunk_size=CHUNK)
    new = publish_bundle(
        make_bundle(name="vib", counter=2, version="2"), broker_of(cloud), gateway=GW, chunk_size=CHUNK
    )
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.connect(cloud.host, cloud.port)
    client.loop_start()
    try:
        held = retained(client, "edgeline/gw1/bundles/#", broker_of(cloud), "edgeline/gw1/bundles")
    finally:
        client.disconnect()
        client.loop_stop()
    assert not [t for t in held if old.bundle_id in t]
    assert sorted(t for t in held if new.bundle_id in t) == sorted(
        chunk_topic("edgeline", GW, new, i) for i in range(new.chunks)
    )
    side = start_gateway()
    assert side.handler.event.wait(30)
    assert [b.version for b, _ in side.handler.installed] == ["2"]
