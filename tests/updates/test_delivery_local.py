"""UpdateService without a cloud link: a local bundle file (``update install``) is verified the same
way; the counter is used up when the bundle is handed to its handler (on tick), so the same or an
older bundle is refused afterwards; a kind without a handler and a failing handler are reported."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.updates.bundle import Bundle
from gateway.updates.events import UpdateEvents
from gateway.updates.service import UpdateService
from gateway.updates.settings import UpdatesSettings
from tests.updates.conftest import ReleaseKey

Make = Callable[..., Path]


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.installed: list[tuple[Bundle, Path]] = []
        self.fail = fail

    def install(self, bundle: Bundle, staged: Path) -> None:
        if self.fail:
            raise RuntimeError("the handler broke")
        self.installed.append((bundle, staged))


@pytest.fixture
def records() -> list[dict[str, Any]]:
    return []


@pytest.fixture
def service(release_key: ReleaseKey, tmp_path: Path, records: list[dict[str, Any]]) -> Iterator[UpdateService]:
    events = UpdateEvents(
        state_topic=None, publish=None, submit=lambda lane, rec: records.append({"lane": lane, **rec})
    )
    settings = UpdatesSettings(trusted_keys=(release_key.pub_path,), state_dir=tmp_path / "updates")
    svc = UpdateService(settings, site="plant1", gateway_id="gw1", events=events)
    svc.start()
    yield svc
    svc.stop()


def staged_dirs(service: UpdateService) -> list[str]:
    return sorted(p.name for p in (service.state_dir / "staged").iterdir())


def test_install_then_replay_is_refused(service: UpdateService, make_bundle: Make, records: list[dict[str, Any]]):
    handler = Recorder()
    service.register("model", handler)
    path = make_bundle(counter=3)
    answer = service.install_file(path)
    assert answer["ok"] and answer["bundle"]["counter"] == 3
    assert handler.installed == []  # handed over on the processing thread's tick only
    service.tick(time.time())
    ((bundle, staged),) = handler.installed
    assert bundle.counter == 3
    assert sorted(p.name for p in staged.iterdir()) == ["model.json", "model.tflite"]
    assert service.install_file(path)["reason"] == "replayed"
    assert service.install_file(make_bundle(counter=2, version="0.9"))["reason"] == "replayed"
    assert [r["state"] for r in records] == ["received", "refused", "refused"]
    assert all(r["lane"] == "registry" and r["type"] == "update" for r in records)
    assert service.handle({"op": "update.status"})["status"]["refused"] == 2


def test_two_bundles_with_one_counter_before_a_tick(service: UpdateService, make_bundle: Make):
    handler = Recorder()
    service.register("model", handler)
    a, b = make_bundle(counter=5, version="a"), make_bundle(counter=5, version="b")
    assert service.install_file(a)["ok"] and service.install_file(b)["ok"]  # both verify: counter 5 is new
    service.tick(time.time())
    assert [bundle.version for bundle, _ in handler.installed] == ["a"]
    assert service.status()["current"]["model/pipe"]["code"] == "replayed"
    assert staged_dirs(service) == [handler.installed[0][0].bundle_id]  # b's staged copy is gone


def test_refusals_write_nothing(service: UpdateService, make_bundle: Make):
    service.register("model", Recorder())
    now = time.time()
    assert service.install_file(make_bundle(created=now - 10, expires=now - 1))["reason"] == "expired"
    assert service.install_file(make_bundle(gateways=("gw2",)))["reason"] == "wrong_target"
    assert staged_dirs(service) == [] and service.counters.last("model", "pipe") == 0


def test_no_handler_and_failing_handler(service: UpdateService, make_bundle: Make):
    assert service.install_file(make_bundle(kind="config", counter=1))["ok"]
    service.tick(time.time())
    refused = service.status()["current"]["config/gateway"]
    assert refused["state"] == "refused" and refused["code"] == "no_handler"
    assert service.counters.last("config", "gateway") == 0  # not used up: a gateway with a handler can take it
    service.register("model", Recorder(fail=True))
    assert service.install_file(make_bundle(counter=1))["ok"]
    service.tick(time.time())
    failed = service.status()["current"]["model/pipe"]
    assert failed["state"] == "failed" and "the handler broke" in failed["reason"]
    assert service.counters.last("model", "pipe") == 1


def test_bad_requests(service: UpdateService):
    assert service.handle({"op": "update.install", "file": "relative.bundle"})["reason"] == "bad_request"
    assert service.handle({"op": "update.nope"})["reason"] == "bad_request"


def test_meta_checks_and_chunk_store(tmp_path: Path):
    import dataclasses
    import json

    from gateway.updates.bundle import BundleError
    from gateway.updates.delivery import ChunkStore, parse_meta, split

    data = bytes(range(256)) * 50
    meta, chunks = split(data, "model", "vib", 1000)
    assert parse_meta("model", "vib", meta.to_json(), len(data)) == meta
    with pytest.raises(BundleError) as info:  # refused before a single chunk is fetched
        parse_meta("model", "vib", meta.to_json(), len(data) - 1)
    assert info.value.reason == "too_large" and "max_bundle_bytes" in str(info.value)
    doc = json.loads(meta.to_json())
    for change in ({"chunks": 3}, {"chunk_size": 0}, {"bundle_id": "x"}, {"chunk_sha256": doc["chunk_sha256"][:-1]}):
        with pytest.raises(BundleError) as info:
            parse_meta("model", "vib", json.dumps({**doc, **change}).encode(), 1 << 30)
        assert info.value.reason == "bad_format"
    for kind, name in (("kernel", "vib"), ("model", "../x")):
        with pytest.raises(BundleError):
            parse_meta(kind, name, meta.to_json(), 1 << 30)
    # chunks that match their hashes but not the bundle id (a forged meta) are refused at assembly
    forged = dataclasses.replace(meta, bundle_id="0" * 64)
    store = ChunkStore(tmp_path / "incoming", forged)
    for i, chunk in enumerate(chunks):
        assert store.put(i, chunk)
    assert not store.put(0, chunks[0])  # held already
    with pytest.raises(BundleError) as info:
        store.assemble(tmp_path / "out.bundle")
    assert info.value.reason == "bad_hash" and not (tmp_path / "out.bundle").exists()
    with pytest.raises(BundleError) as info:
        ChunkStore(tmp_path / "incoming2", meta).put(1, chunks[2])
    assert info.value.reason == "bad_hash"
    resumed = ChunkStore(tmp_path / "incoming", forged)  # what a restart finds
    assert resumed.complete and resumed.missing() == []
