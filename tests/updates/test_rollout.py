"""Staged firmware rollout (gateway/updates/rollout.py) with real signed bundles and board models
(tests/updates/ota_board_model.py): canary first, waves, halt on the failure rate, only online
devices, a device without its key, pause/resume/abort, and a restart that resumes from
rollout.json. The real firmware end to end: tests/updates/test_fwota_e2e.py."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.updates.bundle import Counters, extract, verify_bundle
from gateway.updates.events import UpdateEvents
from gateway.updates.rollout import FirmwareRollouts
from gateway.updates.settings import FirmwareSettings, UpdatesSettings
from shared_protocol import ota
from tests.updates.conftest import ReleaseKey
from tests.updates.ota_board_model import BoardModel, Frame, Link
from tools.release.pack import firmware_metadata

DEVICES = ("dev1", "dev2", "dev3")
NAME = "sensorfw-native"
FILES = {"sensorfw/app.mpy": os.urandom(900), "lib/umqtt/simple.mpy": os.urandom(300)}


@dataclass
class Device:
    online: bool = True
    fw_version: str | None = "1.0"
    birth_at: float | None = 1.0


class Site:
    """A gateway's rollouts, a registry of devices and their boards, on a clock the test moves."""

    def __init__(self, tmp_path: Path, release_key: ReleaseKey, *, keys: tuple[str, ...] = DEVICES) -> None:
        self.tmp = tmp_path
        self.release_key = release_key
        self.now = 1000.0
        self.registry = {d: Device() for d in DEVICES}
        self.boards = {d: BoardModel(d, self.key(d) if d in keys else b"") for d in DEVICES}
        self.link = Link(dict(self.boards))
        self.recorded: list[dict[str, Any]] = []
        self.settings = UpdatesSettings(
            trusted_keys=(release_key.pub_path,),
            state_dir=tmp_path / "state",
            firmware=FirmwareSettings(
                device_keys_dir=tmp_path / "devices",
                chunk_bytes=128,
                window=3,
                chunk_timeout_s=5.0,
                max_retries=2,
                confirm_timeout_s=60.0,
            ),
        )
        self.rollouts = self.open()

    def key(self, device: str) -> bytes:
        key = device.encode().ljust(32, b"k")
        path = self.tmp / "devices" / device / "ota.key"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, key)
        os.close(fd)
        return key

    def open(self) -> FirmwareRollouts:
        """A (re)started gateway: a new FirmwareRollouts on the same state_dir."""
        events = UpdateEvents(state_topic=None, publish=None, submit=None)
        original = events.record

        def record(*a: Any, **kw: Any) -> dict[str, Any]:
            event = original(*a, **kw)
            self.recorded.append(event)
            return event

        events.record = record  # type: ignore[method-assign]
        r = FirmwareRollouts(self.settings, events, lambda: self.registry, self.link.send, clock=lambda: self.now)
        self.link.deliver = lambda device, frame: r.on_event(device, frame, self.now)
        return r

    def install(self, make_bundle: Callable[..., Path], *, counter: int = 7, **policy: Any) -> None:
        rollout = {"devices": ["dev*"], "canary": [], "wave": 1, "max_failure_rate": 0.0, **policy}
        path = make_bundle(
            kind="firmware",
            name="sensorfw-native",
            version="2.0",
            counter=counter,
            files=FILES,
            firmware=firmware_metadata(arch="native", fw_version="2.0", **rollout),
        )
        bundle = verify_bundle(
            path,
            keys=self.release_key.trusted,
            site="s1",
            gateway_id="gw1",
            counters=Counters(self.tmp / "counters.json"),
            now=time.time(),
            max_bytes=1 << 20,
        )
        staged = self.tmp / "staged" / bundle.bundle_id
        extract(path, bundle, staged)
        self.rollouts.install(bundle, staged)
        self.link.run()

    def tick(self, seconds: float = 0.0) -> None:
        self.now += seconds
        self.rollouts.tick()
        self.link.run()

    def answer(self, device: str, code: int) -> None:
        """The board's answer after its restart (CONFIRMED or a rollback)."""
        transfer = self.boards[device].transfer or 0
        self.rollouts.on_event(
            device, Frame({"events": [(c, 0, v) for c, v in ota.answer_events(transfer, code, 0)]}), 0
        )
        self.link.run()

    def boot_new(self, device: str, *, confirm: bool = True) -> None:
        """The board restarts into the new slot (BIRTH 2.0), then confirms."""
        assert self.boards[device].switched is not None, f"{device} did not switch"
        self.registry[device] = Device(fw_version="2.0", birth_at=self.now)
        self.tick(0.1)
        if confirm:
            self.answer(device, ota.CONFIRMED)

    def states(self) -> dict[str, str]:
        st = self.rollouts.status()["rollouts"]["sensorfw-native"]
        return {d: f["state"] for d, f in st["devices"].items()}

    def rollout_state(self) -> str:
        return str(self.rollouts.status()["rollouts"]["sensorfw-native"]["state"])


def test_canary_then_waves_then_done(tmp_path: Path, release_key: ReleaseKey, make_bundle: Callable[..., Path]) -> None:
    site = Site(tmp_path, release_key)
    site.install(make_bundle, canary=["dev2"], wave=2)
    assert site.states() == {"dev2": "switching", "dev1": "pending", "dev3": "pending"}
    assert site.link.begins_to("dev1") == site.link.begins_to("dev3") == []  # the canary alone first
    site.boot_new("dev2", confirm=False)
    assert site.states()["dev2"] == "trial"
    site.tick(1)
    assert site.link.begins_to("dev1") == []  # not before the canary confirmed
    site.answer("dev2", ota.CONFIRMED)
    site.tick(0.1)
    assert site.states() == {"dev2": "confirmed", "dev1": "switching", "dev3": "switching"}  # one wave of 2
    site.boot_new("dev1")
    site.boot_new("dev3")
    assert site.rollout_state() == "done"
    assert [e["state"] for e in site.recorded if e.get("device") == "dev2"] == [
        "transferring",
        "switching",
        "trial",
        "confirmed",
    ]
    assert [e["state"] for e in site.recorded][-1] == "done"
    assert site.recorded[-1]["counts"] == {"confirmed": 3}
    site.install(make_bundle, counter=8)  # the next release: the files of the one before go
    assert [d.name for d in (tmp_path / "state" / "firmware").iterdir()] == [site.rollouts.rollouts[NAME].bundle_id]
    saved = json.loads((tmp_path / "state" / "rollout.json").read_text())
    assert saved["rollouts"]["sensorfw-native"]["state"] == "done"
    assert (tmp_path / "state" / "rollout.json").stat().st_mode & 0o777 == 0o600


def test_a_failing_canary_halts_before_the_other_waves(
    tmp_path: Path, release_key: ReleaseKey, make_bundle: Callable[..., Path]
) -> None:
    site = Site(tmp_path, release_key)
    site.install(make_bundle, canary=["dev1"], wave=1, max_failure_rate=0.3)
    site.registry["dev1"] = Device(fw_version="1.0", birth_at=site.now)  # came back on its old firmware
    site.answer("dev1", ota.ROLLED_BACK_CRASH)
    assert site.rollout_state() == "halted"
    halted = next(e for e in site.recorded if e["state"] == "halted")
    assert "failure rate 1.00 above max_failure_rate 0.3" in halted["reason"]
    site.tick(100)
    assert site.states() == {"dev1": "failed", "dev2": "pending", "dev3": "pending"}
    assert site.link.begins_to("dev2") == site.link.begins_to("dev3") == []
    failed = next(e for e in site.recorded if e["state"] == "failed")
    assert failed["device"] == "dev1" and "raised at start-up" in failed["reason"]
    assert failed["code"] == "rolled_back_crash"  # what /metrics counts failures by


def test_wrong_arch_and_missing_key_fail_with_reasons(
    tmp_path: Path, release_key: ReleaseKey, make_bundle: Callable[..., Path]
) -> None:
    site = Site(tmp_path, release_key, keys=("dev1", "dev2"))
    site.boards["dev2"].arch = "xtensawin"
    site.install(make_bundle, wave=3, max_failure_rate=1.0)
    site.boot_new("dev1")
    st = site.rollouts.status()["rollouts"]["sensorfw-native"]["devices"]
    assert st["dev2"]["state"] == "failed" and st["dev2"]["reason"].startswith("wrong_arch:")
    assert st["dev3"]["state"] == "failed" and "provision the device" in st["dev3"]["reason"]
    assert (st["dev2"]["code"], st["dev3"]["code"]) == ("wrong_arch", "no_key")
    assert site.link.begins_to("dev3") == []
    assert site.rollout_state() == "done"


def test_only_online_devices_are_updated(
    tmp_path: Path, release_key: ReleaseKey, make_bundle: Callable[..., Path]
) -> None:
    site = Site(tmp_path, release_key)
    site.registry["dev1"].online = False
    site.registry["dev3"].fw_version = "2.0"  # already there
    site.install(make_bundle, wave=3)
    assert site.states() == {"dev1": "pending", "dev2": "switching", "dev3": "current"}
    assert site.link.begins_to("dev1") == []
    site.registry["dev1"].online = True
    site.tick(1)
    assert site.states()["dev1"] == "switching"
    site.boot_new("dev1")
    site.boot_new("dev2")
    assert site.rollout_state() == "done"


def test_a_device_offline_past_the_confirm_timeout_fails(
    tmp_path: Path, release_key: ReleaseKey, make_bundle: Callable[..., Path]
) -> None:
    site = Site(tmp_path, release_key)
    for d in DEVICES:
        site.registry[d].online = False
    site.install(make_bundle, canary=["dev1"], max_failure_rate=0.5)
    site.tick(59)
    assert site.states()["dev1"] == "pending"
    site.tick(2)
    assert site.states()["dev1"] == "failed"
    assert site.rollout_state() == "halted"


def test_pause_resume_abort(tmp_path: Path, release_key: ReleaseKey, make_bundle: Callable[..., Path]) -> None:
    site = Site(tmp_path, release_key)
    site.link.drop_answers = True  # keep dev1 in flight
    site.install(make_bundle, canary=["dev1"], wave=1)
    handle = site.rollouts.handle
    assert handle({"op": "ota.pause"}) == {"ok": True, "name": "sensorfw-native", "state": "paused"}
    site.link.drop_answers = False
    site.tick(6)  # dev1 goes on (its BEGIN again after the timeout) while paused
    site.boot_new("dev1")
    assert site.states() == {"dev1": "confirmed", "dev2": "pending", "dev3": "pending"}
    assert handle({"op": "ota.resume", "name": "sensorfw-native"})["state"] == "running"
    site.link.drop_answers = True
    site.tick()
    assert site.states()["dev2"] == "begin"
    assert handle({"op": "ota.abort"})["state"] == "aborting"
    site.tick()
    assert site.rollout_state() == "aborted"
    assert site.states()["dev2"] == "failed"
    sent = [a for d, a in site.link.sent if d == "dev2"]
    assert sent[-1][0] == ota.OTA_ABORT
    refused = handle({"op": "ota.pause", "name": "nope"})
    assert refused["ok"] is False and "sensorfw-native" in refused["message"]
    assert handle({"op": "ota.status"})["rollouts"]["sensorfw-native"]["state"] == "aborted"


def test_a_restarted_gateway_resumes_from_rollout_json(
    tmp_path: Path, release_key: ReleaseKey, make_bundle: Callable[..., Path]
) -> None:
    site = Site(tmp_path, release_key)
    cut: list[int] = []

    def drop(device: str, parsed: tuple[int, int, tuple[Any, ...]]) -> bool:
        if parsed[0] == ota.OTA_CHUNK and parsed[2][0] >= 512:
            cut.append(1)
            return True  # the gateway stops here (killed): nothing more reaches the board
        return False

    site.link.drop = drop
    site.install(make_bundle, canary=["dev1"], wave=2)
    assert cut and site.states()["dev1"] == "transferring"
    transfer = site.link.begins_to("dev1")[0]
    site.link.drop = lambda d, a: False
    site.link.queue.clear()
    before = len(site.link.sent)
    site.rollouts = site.open()  # the restart: a new process reads rollout.json
    site.tick()
    assert site.link.begins_to("dev1") == [transfer, transfer]  # the same transfer, again
    assert site.states()["dev1"] == "switching"
    chunks = [a for d, a in site.link.sent[before:] if a[0] == ota.OTA_CHUNK]
    assert chunks[0][2][0] == 512  # resumed where the board was, not from 0
    site.boot_new("dev1")
    assert site.states() == {"dev1": "confirmed", "dev2": "switching", "dev3": "switching"}


def test_a_device_that_switched_while_the_gateway_was_down_gets_no_begin(
    tmp_path: Path, release_key: ReleaseKey, make_bundle: Callable[..., Path]
) -> None:
    site = Site(tmp_path, release_key)
    site.link.drop_answers = True  # its answers are lost: the gateway saves it as transferring
    site.install(make_bundle, canary=["dev1"])
    assert site.states()["dev1"] == "begin"
    site.registry["dev1"] = Device(fw_version="2.0", birth_at=site.now)  # it runs the release on trial
    begins = len(site.link.begins_to("dev1"))
    site.rollouts = site.open()
    site.tick()
    assert len(site.link.begins_to("dev1")) == begins
    assert site.states()["dev1"] == "trial"
    site.answer("dev1", ota.CONFIRMED)
    assert site.states()["dev1"] == "confirmed"
