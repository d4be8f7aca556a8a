"""Gateway configuration updates: check-config before the swap, the trial after the restart,
confirmation when healthy, automatic rollback when not (also after a kill -9 in the trial),
with the real `edgeline-gateway run` process and a real Mosquitto."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.config import ConfigError, load
from gateway.updates.events import UpdateEvents
from gateway.updates.gwconfig import ROLLBACK_FILE, TRIAL_FILE, ConfigUpdates, prev_path, start_config
from tests.gateway.mqtt_util import Client
from tests.support.gateway_proc import GatewayProcess
from tests.support.mosquitto import Mosquitto, free_port
from tests.support.upy import ROOT
from tests.support.waiting import wait_until
from tests.updates.conftest import ReleaseKey
from tests.updates.model_site import StandInBundle


def updates_toml(key: ReleaseKey, *, health_timeout_s: float, max_starts: int) -> str:
    return f"""
[updates]
enabled = true
trusted_keys = ["{key.pub_path}"]

[updates.config]
health_timeout_s = {health_timeout_s}
max_starts = {max_starts}
"""


def install(gp: GatewayProcess, new_text: str, counter: int = 2) -> tuple[ConfigUpdates, list[Any], list[int]]:
    """The config handler on the gateway's files (the gateway stopped): what install leaves behind
    is what the restarted gateway finds."""
    cfg = load(gp.config)
    assert cfg.updates is not None
    staged = gp.dir / f"staged-{counter}"
    staged.mkdir()
    (staged / "gateway.toml").write_text(new_text)
    records: list[Any] = []
    events = UpdateEvents(state_topic=None, publish=None, submit=lambda lane, rec: records.append(rec))
    restarts: list[int] = []
    handler = ConfigUpdates(
        config_path=gp.config,
        state_dir=cfg.updates.state_dir,
        settings=cfg.updates.config,
        events=events,
        restart=lambda: restarts.append(1),
    )
    handler.install(
        StandInBundle("config", "gateway", f"c{counter}", counter, "gateway.toml", f"{counter:064x}"), staged
    )
    return handler, records, restarts


def status_of(gp: GatewayProcess, pid: int) -> dict[str, Any] | None:
    """status.json once the process pid writes it."""
    try:
        st: dict[str, Any] = json.loads((gp.data / "status.json").read_text())
    except (FileNotFoundError, ValueError):
        return None
    return st if st.get("pid") == pid else None


def update_state(client: Client, state: str, timeout: float = 30.0) -> dict[str, Any]:
    """The retained updates topic once it shows the config update in ``state``."""

    def check(topic: str, payload: bytes) -> bool:
        return bool(json.loads(payload).get("config/gateway", {}).get("state") == state)

    _, payload, _ = client.wait_for(check, timeout)
    return dict(json.loads(payload)["config/gateway"])


def test_check_config_refuses_and_nothing_changes(tmp_path: Path, release_key: ReleaseKey) -> None:
    gp = GatewayProcess(tmp_path, free_port(), extra_toml=updates_toml(release_key, health_timeout_s=5, max_starts=2))
    old = gp.config.read_bytes()
    state_dir = gp.data / "updates"
    cases = [
        (old.decode().replace("[mqtt]", "[mqtt]\nqos = 3"), "check-config failed: mqtt.qos: unknown key"),
        (old.decode().replace("enabled = true", "enabled = false"), "it disables [updates]"),
        (old.decode() + '\n[[pipelines]]\nname = "vib"\nmodel = "missing.json"\n', "does not exist"),
    ]
    for n, (text, reason) in enumerate(cases):
        handler, records, restarts = install(gp, text, counter=2 + n)
        assert records[-1]["state"] == "refused" and reason in records[-1]["reason"], records[-1]
        assert "nothing changed" in records[-1]["reason"] and restarts == [] and handler.trial is None
        assert gp.config.read_bytes() == old
        assert not prev_path(gp.config).exists() and not (state_dir / TRIAL_FILE).exists()
        assert not gp.config.with_name("gateway.toml.new").exists()
    # a good one is swapped: .prev kept, the trial marker written, the restart asked for
    new = old.decode().replace("status_interval_s = 0.2", "status_interval_s = 0.3")
    handler, records, restarts = install(gp, new, counter=9)
    assert [r["state"] for r in records] == ["installed"] and restarts == [1]
    assert gp.config.read_text() == new and prev_path(gp.config).read_bytes() == old
    trial = json.loads((state_dir / TRIAL_FILE).read_text())
    assert trial["starts"] == 0 and trial["version"] == "c9"
    assert (state_dir / TRIAL_FILE).stat().st_mode & 0o777 == 0o600
    # the next start counts it; with its starts used up, the one after rolls it back
    start_config(gp.config)
    assert json.loads((state_dir / TRIAL_FILE).read_text())["starts"] == 1
    start_config(gp.config)
    cfg = start_config(gp.config)
    assert cfg.gateway.status_interval_s == 0.2 and gp.config.read_bytes() == old
    note = json.loads((state_dir / ROLLBACK_FILE).read_text())
    assert note["reason"] == "2 start(s) without becoming healthy ([updates.config] max_starts = 2)"


def test_at_start_a_trial_file_that_does_not_load_is_rolled_back_and_an_unswapped_trial_dropped(
    tmp_path: Path, release_key: ReleaseKey
) -> None:
    gp = GatewayProcess(tmp_path, free_port(), extra_toml=updates_toml(release_key, health_timeout_s=5, max_starts=2))
    old = gp.config.read_bytes()
    state_dir = gp.data / "updates"
    install(gp, old.decode().replace("status_interval_s = 0.2", "status_interval_s = 0.4"))

    def load_fails_for_the_new(path: Path) -> Any:  # e.g. a file it names was removed since the check
        if path == gp.config and path.read_bytes() != old:
            raise ConfigError("mqtt.password_file: /etc/edgeline/mqtt.pw does not exist")
        return load(path)

    cfg = start_config(gp.config, load=load_fails_for_the_new)
    assert cfg.gateway.status_interval_s == 0.2 and gp.config.read_bytes() == old
    note = json.loads((state_dir / ROLLBACK_FILE).read_text())
    assert note["reason"].startswith("the new configuration does not load: mqtt.password_file")
    assert not (state_dir / TRIAL_FILE).exists()
    # a power cut between the trial marker and the swap: the marker names another file, dropped
    (state_dir / TRIAL_FILE).write_text(json.dumps({"sha256": "0" * 64, "starts": 0, "version": "x"}))
    assert start_config(gp.config).gateway.status_interval_s == 0.2
    assert not (state_dir / TRIAL_FILE).exists() and gp.config.read_bytes() == old


@pytest.fixture
def watcher(mosquitto: Mosquitto) -> Any:
    client = Client(mosquitto.host, mosquitto.port, client_id="watch-updates")
    client.subscribe("el/s1/_gateway/updates")
    yield client
    client.close()


def test_good_config_bundle_swapped_restarted_into_and_confirmed(
    tmp_path: Path,
    mosquitto: Mosquitto,
    watcher: Client,
    release_key: ReleaseKey,
    make_bundle: Callable[..., Path],
) -> None:
    toml = updates_toml(release_key, health_timeout_s=20, max_starts=2)
    gp = GatewayProcess(tmp_path / "gw", mosquitto.port, extra_toml=toml)
    old = gp.config.read_text()
    new = old.replace("status_interval_s = 0.2", "status_interval_s = 0.3")
    good = make_bundle(kind="config", version="c3", counter=3, files={"gateway.toml": new.encode()})
    bad = make_bundle(kind="config", version="c2", counter=2, files={"gateway.toml": b"[gateway]\nid = 5\n"})
    try:
        gp.start()
        pid = gp.proc.pid if gp.proc is not None else 0
        res = cli(gp, "update", "install", str(bad))  # verified (its counter used up), refused by check-config
        assert res.returncode == 0, res.stderr
        refused = update_state(watcher, "refused")
        assert refused["version"] == "c2" and refused["reason"].startswith("check-config failed: ")
        assert gp.config.read_text() == old and not prev_path(gp.config).exists()
        res = cli(gp, "update", "install", str(good))
        assert res.returncode == 0, res.stderr
        update_state(watcher, "installed")
        trial = update_state(watcher, "trial")  # recorded by the re-executed gateway
        assert trial["starts"] == 1 and trial["version"] == "c3"
        confirmed = update_state(watcher, "confirmed")
        assert confirmed["version"] == "c3" and confirmed["counter"] == 3
        st = wait_until(lambda: (s := status_of(gp, pid)) and s["config_update"]["trial"] is None and s, 10, "no trial")
        assert st["status_interval_s"] == 0.3 and st["ingest"]["subscribed"]
        assert not (gp.data / "updates" / TRIAL_FILE).exists() and gp.config.read_text() == new
        assert prev_path(gp.config).read_text() == old
        assert "restarting: " in gp.log.read_text()
    finally:
        assert gp.stop() == 0


def cli(gp: GatewayProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args, "-c", str(gp.config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_unhealthy_config_rolled_back_by_itself(
    tmp_path: Path, mosquitto: Mosquitto, watcher: Client, release_key: ReleaseKey
) -> None:
    gp = GatewayProcess(
        tmp_path, mosquitto.port, extra_toml=updates_toml(release_key, health_timeout_s=2, max_starts=2)
    )
    old = gp.config.read_bytes()
    install(gp, old.decode().replace(f"port = {mosquitto.port}", f"port = {free_port()}"))  # loads, never connects
    try:
        gp.start()  # in trial on the wrong port; 2 s later rolled back, re-executed, subscribed on the old one
        rolled = update_state(watcher, "rolled_back")
        assert rolled["reason"] == "not healthy within health_timeout_s = 2 s" and rolled["version"] == "c2"
        assert gp.config.read_bytes() == old and not (gp.data / "updates" / TRIAL_FILE).exists()
        assert gp.proc is not None and gp.proc.poll() is None  # the same process, re-executed
        assert "restarting: " in gp.log.read_text()
    finally:
        assert gp.stop() == 0


def test_kill_9_in_the_trial_then_rolled_back_at_the_next_start(
    tmp_path: Path, mosquitto: Mosquitto, watcher: Client, release_key: ReleaseKey
) -> None:
    gp = GatewayProcess(
        tmp_path, mosquitto.port, extra_toml=updates_toml(release_key, health_timeout_s=60, max_starts=1)
    )
    old = gp.config.read_bytes()
    install(gp, old.decode().replace(f"port = {mosquitto.port}", f"port = {free_port()}"))
    trial_file = gp.data / "updates" / TRIAL_FILE
    with open(gp.log, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "-c", str(gp.config)],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        st = wait_until(lambda: status_of(gp, proc.pid), 20, "the gateway running in trial")
        assert st["config_update"]["trial"]["starts"] == 1 and not st["ingest"]["subscribed"]
    finally:
        proc.send_signal(signal.SIGKILL)  # a power cut in the trial
        proc.wait(10)
    try:
        gp.start()  # as systemd would: the trial has used its start, so back to the old file
        rolled = update_state(watcher, "rolled_back")
        assert rolled["reason"] == "1 start(s) without becoming healthy ([updates.config] max_starts = 1)"
        assert gp.config.read_bytes() == old and not trial_file.exists()
    finally:
        assert gp.stop() == 0
