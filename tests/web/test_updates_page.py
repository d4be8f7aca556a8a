"""The signed updates on the status page (real headless chromium, the live page and the offline
snapshot) and in /metrics (scraped over HTTP, parsed with prometheus_client's parser).

The status is fed to a real WebServer, as the other page tests without a gateway do, and made by
the real parts: bundles signed with a release key and verified by the real UpdateService (one
signed by a stranger's key and one replayed are refused), a model's transitions with the real
shadow verdict (gateway/updates/shadow.py), and FirmwareRollouts.status() of two rollouts (the
full OTA path is tested with boards in tests/updates). One more test runs the real gateway
process: a refused bundle reaches its /api/status and /metrics."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
from prometheus_client.parser import text_string_to_metric_families
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from gateway.config import WebSection
from gateway.control_socket import request, socket_path
from gateway.live import LiveView
from gateway.registry import Registry
from gateway.updates.bundle import Bundle
from gateway.updates.events import UpdateEvents
from gateway.updates.rollout import FirmwareRollouts, Policy, Rollout
from gateway.updates.service import UpdateService
from gateway.updates.settings import ShadowSettings, UpdatesSettings
from gateway.updates.shadow import ShadowScorer, Tally, judge
from gateway.web.server import WebServer
from gateway.web.snapshot import snapshot_html
from gateway.web.state import WebState
from tests.support.gateway_proc import GatewayProcess
from tests.support.mosquitto import Mosquitto
from tests.support.waiting import wait_until
from tests.updates.conftest import make_release_key
from tools.release.pack import build_bundle

RULES = ShadowSettings(windows=20, max_alert_rate=0.05, min_agreement=0.9)
MODEL = {"model.json": b'{"format": "edgeline-model"}', "model.tflite": b"TFL3" + bytes(60)}
FW_TOTAL = 131384  # bytes of a release's manifest and files


class ModelHandler:
    """The model handler's transitions (gateway/updates/models.py, tested with real models in
    tests/updates): installed and into shadow, then the verdict on a tally of windows."""

    def __init__(self, events: UpdateEvents) -> None:
        self.events = events
        self.shadows: dict[str, ShadowScorer] = {}
        self.info: dict[str, dict[str, Any]] = {}

    def install(self, bundle: Bundle, staged: Path) -> None:
        info = self.info[bundle.name] = {
            "version": bundle.version,
            "counter": bundle.counter,
            "bundle_id": bundle.bundle_id,
        }
        self.events.record("model", bundle.name, "installed", **info)
        self.shadows[bundle.name] = ShadowScorer(cast(Any, None), 1.5, RULES, started=time.time())
        self.events.record("model", bundle.name, "shadow", windows=RULES.windows, current="1.0.0", **info)

    def conclude(self, name: str, tally: Tally) -> None:
        verdict = judge(tally, RULES, timed_out=False)
        assert verdict is not None and verdict.promote, verdict
        del self.shadows[name]
        self.events.record("model", name, "promoted", replaced="1.0.0", figures=verdict.figures, **self.info[name])

    def status(self) -> dict[str, Any]:
        """In the shape of ModelUpdates.status()."""
        out = {
            "vib": {"version": "1.1-int8", "counter": 2, "previous": "1.0.0", "candidate": None, "shadow": None},
            "fan": {"version": "1.0.0", "counter": 0, "previous": None, "candidate": "2.0", "shadow": None},
        }
        for name, scorer in self.shadows.items():
            out[name]["shadow"] = scorer.status()
        return out


class ConfigHandler:
    """A configuration refused after verification, as the config handler records a failed
    check-config (no refusal code: /metrics counts it as reason "handler")."""

    def __init__(self, events: UpdateEvents) -> None:
        self.events = events

    def install(self, bundle: Bundle, staged: Path) -> None:
        reason = "check-config failed: [forward] port: expected 1..65535, got 0; nothing changed"
        self.events.record("config", "gateway", "refused", reason=reason, version=bundle.version)


def _rollouts(tmp: Path, events: UpdateEvents) -> dict[str, Any]:
    settings = UpdatesSettings(trusted_keys=(), state_dir=tmp / "ota")
    rollouts = FirmwareRollouts(settings, events, devices=dict, send=lambda *a: None)
    files = (("sensorfw/app.mpy", FW_TOTAL - 300, "0" * 64),)
    running = Rollout(
        "sensorfw-native", "ab" * 32, "sensorfw-9.1.0", 4, "native", files,
        Policy(("dev*",), ("dev1",), 3, 0.5), [["dev1"], ["dev2", "dev3", "dev4"]], wave=1,
    )  # fmt: skip
    running.devices = {
        "dev1": {"state": "confirmed", "reason": None, "offset": FW_TOTAL, "total": FW_TOTAL, "resends": 0},
        "dev2": {"state": "transferring", "reason": None, "offset": FW_TOTAL // 2, "total": FW_TOTAL, "resends": 3},
        "dev3": {
            "state": "failed",
            "reason": "rolled_back_crash: the new firmware raised at start-up: the board went back to its old firmware",
            "offset": FW_TOTAL,
            "total": FW_TOTAL,
        },
        "dev4": {"state": "switching", "reason": None, "offset": FW_TOTAL, "total": FW_TOTAL},
    }
    halted = Rollout(
        "sensorfw-xtensawin", "cd" * 32, "sensorfw-9.1.0", 4, "xtensawin", files,
        Policy(("esp-*",), ("esp-1",), 5, 0.0), [["esp-1"], ["esp-2"]], state="halted",
        reason="failure rate 1.00 above max_failure_rate 0 (last: esp-1: no answer); `edgeline-gateway ota resume` goes on",
    )  # fmt: skip
    halted.devices = {
        "esp-1": {"state": "failed", "reason": "no answer from the board for 60 s", "offset": 4000, "total": FW_TOTAL},
        "esp-2": {"state": "pending", "reason": None},
    }
    rollouts.rollouts = {r.name: r for r in (running, halted)}
    return rollouts.status()


def updates_status(tmp: Path) -> dict[str, Any]:
    """A gateway's status after: a model promoted after shadow, a second one in shadow, a
    replayed bundle and one signed by an untrusted key refused, a config refused by its handler,
    two firmware rollouts."""
    key = make_release_key(tmp / "keys")
    stranger = make_release_key(tmp / "stranger", "stranger")
    events = UpdateEvents(state_topic=None, publish=None, submit=None)
    settings = UpdatesSettings(trusted_keys=(key.pub_path,), state_dir=tmp / "updates")
    service = UpdateService(settings, site="s1", gateway_id="gw1", events=events)
    models = ModelHandler(events)
    service.register("model", models)
    service.register("config", ConfigHandler(events))
    (tmp / "bundles").mkdir()

    def bundle(kind: str, name: str, version: str, counter: int, signer: Any = key) -> Path:
        files, entry = (MODEL, "model.json") if kind == "model" else ({"gateway.toml": b"[web]\n"}, "gateway.toml")
        now = time.time()
        return build_bundle(
            tmp / "bundles" / f"{name}-{version}-{counter}.bundle", key=signer.private, files=files, kind=kind,
            name=name, version=version, counter=counter, entry=entry, created=now, expires=now + 3600,
        )  # fmt: skip

    def install(path: Path) -> dict[str, Any]:
        answer = service.install_file(path)
        service.tick(time.time())
        return answer

    service.start()
    try:
        vib = bundle("model", "vib", "1.1-int8", 2)
        assert install(vib)["ok"]
        models.conclude("vib", Tally(windows=20, alerts=0, agreed=19, current_alerts=1, seconds=0.003))
        assert install(bundle("model", "fan", "2.0", 1))["ok"]
        models.shadows["fan"].tally = Tally(windows=7, alerts=1, agreed=6)
        assert install(bundle("config", "gateway", "c2", 1))["ok"]
        assert install(vib)["reason"] == "replayed"
        assert install(bundle("model", "vib", "1.2", 3, signer=stranger))["reason"] == "unknown_key"
        updates = service.status()
    finally:
        service.stop()
    return {
        "gateway": "gw1",
        "site": "s1",
        "written_at": time.time(),
        "updates": updates,
        "model_updates": models.status(),
        "ota": _rollouts(tmp, events),
    }


@dataclass
class Fed:
    status: dict[str, Any]
    url: str
    tmp: Path


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fed]:
    tmp = tmp_path_factory.mktemp("updates-page")
    status = updates_status(tmp)
    registry = Registry(tmp / "registry.sqlite")
    server = WebServer(WebSection(port=0), WebState(LiveView(registry), detail_devices=10, status=status))
    server.start()
    try:
        assert server.url is not None
        yield Fed(status, server.url, tmp)
    finally:
        server.stop()
        registry.close()


# ---------------------------------------------------------------------------- the page

PANEL_JS = """
const rows = (sel, attr) => Object.fromEntries([...document.querySelectorAll(sel)]
  .map((r) => [r.getAttribute(attr), [...r.cells].map((c) => c.textContent)]));
const section = document.getElementById("updates-section");
return {
  visible: !!section && !section.hidden && section.offsetHeight > 0,
  bundles: rows("#update-bundles tr[data-bundle]", "data-bundle"),
  models: rows("#update-models tr[data-pipeline]", "data-pipeline"),
  devices: rows("tr[data-ota-device]", "data-ota-device"),
  rollouts: Object.fromEntries([...document.querySelectorAll("p.rollout")].map((p) => [p.dataset.rollout, p.textContent])),
  progress: [...document.querySelectorAll("tr[data-ota-device] progress")].map((p) => p.position),
  recent: document.querySelectorAll("#update-recent tr").length - 1,
};
"""


def _panel(driver: Any) -> dict[str, Any]:
    def ready(d: Any) -> Any:
        got = d.execute_script(PANEL_JS)
        return got if got["visible"] and got["bundles"] and got["devices"] else None

    panel: dict[str, Any] = WebDriverWait(driver, 10, 0.1).until(ready)
    return panel


def _check_panel(p: dict[str, Any]) -> None:
    # the latest transition per bundle: the refused one with its reason, the one in shadow
    assert sorted(p["bundles"]) == ["config/gateway", "model/fan", "model/vib"]
    _, state, version, when, details = p["bundles"]["model/vib"]
    assert state == "refused" and version == "-" and when.endswith("ago"), p["bundles"]["model/vib"]
    assert details.startswith("unknown_key: ") and "trusted_keys" in details, details
    state, details = p["bundles"]["config/gateway"][1], p["bundles"]["config/gateway"][4]
    assert state == "refused" and "check-config failed: [forward] port" in details
    assert p["bundles"]["model/fan"][1:3] == ["shadow", "2.0"]
    assert (
        "in shadow: 7 of 20 windows so far, alert rate 14.3 %, agreement 85.7 %, errors 0"
        in p["bundles"]["model/fan"][4]
    )
    # the promoted model's figures stay visible after the refusal of a later bundle
    _, model, rollback, candidate, verdict = p["models"]["vib"]
    assert model == "1.1-int8 (update 2)" and rollback == "1.0.0" and candidate == "-"
    assert verdict == (
        "promoted 1.1-int8; 20 windows, alert rate 0.0 % (0 alerts, the current model 1), agreement 95.0 %, errors 0"
    ), verdict
    assert p["models"]["fan"][3].startswith("2.0 in shadow: 7 of 20 windows"), p["models"]["fan"]
    assert p["models"]["fan"][4] == "-"
    # the rollouts: canary done, a wave in progress; the halted one says why
    running = p["rollouts"]["sensorfw-native"]
    assert running.startswith("sensorfw-native sensorfw-9.1.0 running, wave 1 of 1 after the canaries"), running
    assert "confirmed 1" in running and "transferring 1" in running
    assert p["rollouts"]["sensorfw-xtensawin"].startswith(
        "sensorfw-xtensawin sensorfw-9.1.0 halted, canary wave (esp-1)"
    )
    assert "failure rate 1.00 above max_failure_rate 0" in p["rollouts"]["sensorfw-xtensawin"]
    d = p["devices"]
    assert d["dev1"][1:3] == ["confirmed", "-"]
    assert d["dev2"][1:3] == ["transferring", f" 50 % of {FW_TOTAL:,} B"], d["dev2"]
    assert d["dev2"][3] == "resends 3"
    assert d["dev3"][1] == "rolled back" and d["dev3"][3].startswith("rolled_back_crash: the new firmware raised")
    assert d["dev4"][1] == "switching" and "switches to the new slot" in d["dev4"][3]
    assert d["esp-1"][1:2] == ["failed"] and d["esp-2"][1:2] == ["pending"]
    assert p["progress"] == [pytest.approx(0.5, abs=0.01)]  # one bar: the device transferring
    assert p["recent"] == 11  # every transition, newest first (at most 12)


def test_the_updates_panel_shows_refusals_verdicts_and_rollouts(fed: Fed, browser: Any) -> None:
    browser.get(fed.url)
    _check_panel(_panel(browser))
    text = browser.find_element(By.ID, "updates").text
    assert "received 3, refused 2" in text, text  # since the gateway started


def test_the_offline_snapshot_shows_the_same_panel(fed: Fed, browser: Any) -> None:
    now = time.time()
    snapshot = {"status": {**fed.status, "now": now}, "fleet": {"now": now, "devices": []}, "devices": {}}
    path = fed.tmp / "status.html"
    path.write_text(snapshot_html({**snapshot, "taken_at": now}), encoding="utf-8")
    browser.get(path.as_uri())
    _check_panel(_panel(browser))


def test_the_panel_stays_hidden_without_updates(tmp_path: Path, browser: Any) -> None:
    registry = Registry(tmp_path / "registry.sqlite")
    state = WebState(LiveView(registry), detail_devices=10, status={"gateway": "gw-x", "site": "s9", "updates": None})
    server = WebServer(WebSection(port=0), state)
    server.start()
    try:
        assert server.url is not None
        browser.get(server.url)
        WebDriverWait(browser, 10, 0.1).until(lambda d: "gw-x" in d.find_element(By.ID, "gateway").text)
        assert not browser.find_element(By.ID, "updates-section").is_displayed()
    finally:
        server.stop()
        registry.close()


# ---------------------------------------------------------------------------- /metrics


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url + "metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_count_bundles_verdicts_and_firmware_devices(fed: Fed, tmp_path: Path) -> None:
    m = _scrape(fed.url)

    def v(name: str, **labels: str) -> float | None:
        return m.get((name, tuple(sorted(labels.items()))))

    assert v("edgeline_updates_enabled") == 1
    assert v("edgeline_update_bundles_received_total", kind="model") == 2
    assert v("edgeline_update_bundles_received_total", kind="config") == 1
    assert v("edgeline_update_bundles_refused_total", kind="model", reason="replayed") == 1
    assert v("edgeline_update_bundles_refused_total", kind="model", reason="unknown_key") == 1
    assert v("edgeline_update_bundles_refused_total", kind="config", reason="handler") == 1
    assert v("edgeline_update_transitions_total", kind="model", state="shadow") == 2
    assert v("edgeline_model_promotions_total", pipeline="vib") == 1
    assert v("edgeline_model_promotions_total", pipeline="fan") == 0  # every pipeline, from zero
    assert v("edgeline_model_rejections_total", pipeline="vib") == 0
    assert v("edgeline_model_shadow_windows", pipeline="fan") == 7
    assert v("edgeline_model_shadow_windows_needed", pipeline="fan") == 20
    assert v("edgeline_model_shadow_windows", pipeline="vib") is None  # not in shadow
    native = {
        state: v("edgeline_firmware_devices", rollout="sensorfw-native", state=state)
        for state in ("pending", "transferring", "switching", "trial", "confirmed", "failed", "current")
    }
    assert native == {
        "pending": 0, "transferring": 1, "switching": 1, "trial": 0, "confirmed": 1, "failed": 1, "current": 0,
    }  # fmt: skip
    assert v("edgeline_firmware_rollout_state", rollout="sensorfw-native", state="running") == 1
    assert v("edgeline_firmware_rollout_state", rollout="sensorfw-xtensawin", state="halted") == 1
    assert v("edgeline_firmware_rollout_state", rollout="sensorfw-xtensawin", state="running") == 0

    # without [updates]: the gauge says so, no other update series
    registry = Registry(tmp_path / "registry.sqlite")
    server = WebServer(WebSection(port=0), WebState(LiveView(registry), 10, status={"gateway": "g", "updates": None}))
    server.start()
    try:
        assert server.url is not None
        off = _scrape(server.url)
    finally:
        server.stop()
        registry.close()
    assert off[("edgeline_updates_enabled", ())] == 0
    assert not [n for n, _ in off if n.startswith(("edgeline_update_", "edgeline_model_", "edgeline_firmware_"))]


def test_a_running_gateway_serves_a_refused_bundle_on_its_page_and_metrics(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    key = make_release_key(tmp_path / "keys")
    stranger = make_release_key(tmp_path / "stranger", "stranger")
    now = time.time()
    forged = build_bundle(
        tmp_path / "vib-9.bundle", key=stranger.private, files=MODEL, kind="model", name="vib", version="9",
        counter=9, entry="model.json", created=now, expires=now + 3600,
    )  # fmt: skip
    gp = GatewayProcess(
        tmp_path / "gw",
        mosquitto.port,
        extra_toml=f'[web]\nport = 0\n\n[updates]\nenabled = true\ntrusted_keys = ["{key.pub_path}"]\n',
    )
    try:
        url = gp.start().wait_subscribed()["web"]["url"]
        answer = request(socket_path(gp.data), {"op": "update.install", "file": str(forged)}, timeout=30)
        assert answer["reason"] == "unknown_key", answer

        def refused() -> dict[str, Any] | None:
            with urllib.request.urlopen(url + "api/status", timeout=10) as resp:
                st: dict[str, Any] = json.loads(resp.read())
            return st if (st.get("updates") or {}).get("current", {}).get("model/vib") else None

        st = wait_until(refused, 10, "the refusal in /api/status", poll=0.1)
        assert st["updates"]["current"]["model/vib"]["code"] == "unknown_key"
        m = _scrape(url)
        assert m[("edgeline_update_bundles_refused_total", (("kind", "model"), ("reason", "unknown_key")))] == 1
        assert m[("edgeline_updates_enabled", ())] == 1
    finally:
        assert gp.stop() == 0
