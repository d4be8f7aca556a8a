"""Per-device calibration on the status page (real headless chromium: the live page and the
offline snapshot) and in /metrics. The status is a real gateway's (gateway/pipeline.py with the
committed vibration model and real LiteRT, fed simulated frames as in
tests/gateway/test_calibration.py): one device calibrated, one still learning its normalisation;
it is served by a real WebServer as the other page tests without a running gateway do."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from selenium.webdriver.support.ui import WebDriverWait

from gateway.config import WebSection
from gateway.live import LiveView
from gateway.registry import Registry
from gateway.web.server import WebServer
from gateway.web.snapshot import snapshot_html
from gateway.web.state import WebState
from tests.gateway.test_calibration import Machine, N, feed, gateway


@dataclass
class Fed:
    status: dict[str, Any]
    url: str
    tmp: Path


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fed]:
    tmp = tmp_path_factory.mktemp("calibration-page")
    gw, _ = gateway(tmp)
    done, learning = Machine("pump-1", gain=2.0, seed=1), Machine("pump-2", gain=1.0, seed=2)
    gw.process(done.frames(1, "birth") + learning.frames(1, "birth"))
    feed(gw, done, 2 * N + 30)
    feed(gw, learning, 50)
    status = gw.status()
    gw.close()
    registry = Registry(tmp / "registry.sqlite")
    server = WebServer(WebSection(port=0), WebState(LiveView(registry), detail_devices=10, status=status))
    server.start()
    try:
        assert server.url is not None
        yield Fed(status, server.url, tmp)
    finally:
        server.stop()
        registry.close()


PANEL_JS = """
const section = document.getElementById("calibration-section");
return {
  visible: !!section && !section.hidden && section.offsetHeight > 0,
  rows: Object.fromEntries([...document.querySelectorAll("#calibration-devices tr[data-calibration]")]
    .map((r) => [r.dataset.calibration, [...r.cells].map((c) => c.textContent)])),
  note: (document.querySelector("#calibration p") || {}).textContent,
};
"""


def _check_panel(driver: Any, status: dict[str, Any]) -> None:
    def ready(d: Any) -> Any:
        got = d.execute_script(PANEL_JS)
        return got if got["visible"] and got["rows"] else None

    p: dict[str, Any] = WebDriverWait(driver, 10, 0.1).until(ready)
    cal = status["pipelines"]["vib"]["calibration"]
    learned = cal["devices"]["pump-1"]["threshold"]
    assert learned is not None and learned != cal["model_threshold"]
    assert sorted(p["rows"]) == ["vib/pump-1", "vib/pump-2"]
    pipeline, device, phase, windows, threshold, model, since, note = p["rows"]["vib/pump-1"]
    assert (pipeline, device, phase, windows) == ("vib", "pump-1", "calibrated", "done")
    assert threshold == f"{learned:,.4f}".rstrip("0").rstrip(".") and float(model) == pytest.approx(
        cal["model_threshold"], abs=1e-4
    )
    assert since == time.strftime("%Y-%m-%d %H:%M", time.localtime(cal["devices"]["pump-1"]["calibrated_at"]))
    assert note == "its own normalisation and threshold apply"
    assert p["rows"]["vib/pump-2"][2:5] == ["normalise", f"49 of {N}", "-"]
    assert "model's applies meanwhile" in p["rows"]["vib/pump-2"][7]
    assert p["note"].startswith(f"Per-device calibration: vib: {N} windows a phase, target false-alarm rate 0.02")


def test_the_calibration_panel_shows_a_calibrated_device(fed: Fed, browser: Any) -> None:
    browser.get(fed.url)
    _check_panel(browser, fed.status)


def test_the_offline_snapshot_shows_the_calibration_panel(fed: Fed, browser: Any) -> None:
    now = time.time()
    snapshot = {"status": {**fed.status, "now": now}, "fleet": {"now": now, "devices": []}, "devices": {}}
    path = fed.tmp / "status.html"
    path.write_text(snapshot_html({**snapshot, "taken_at": now}), encoding="utf-8")
    browser.get(path.as_uri())
    _check_panel(browser, fed.status)


def test_metrics_give_devices_per_phase_and_learned_thresholds(fed: Fed) -> None:
    with urllib.request.urlopen(fed.url + "metrics", timeout=10) as resp:
        text = resp.read().decode()
    m = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    cal = fed.status["pipelines"]["vib"]["calibration"]
    for phase, n in (("normalise", 1), ("threshold", 0), ("calibrated", 1)):
        assert m[("edgeline_calibration_devices", (("phase", phase), ("pipeline", "vib")))] == n
    key = ("edgeline_calibration_threshold", (("device", "pump-1"), ("pipeline", "vib")))
    assert m[key] == pytest.approx(cal["devices"]["pump-1"]["threshold"])
    assert ("edgeline_calibration_threshold", (("device", "pump-2"), ("pipeline", "vib"))) not in m
    assert m[("edgeline_calibration_model_threshold", (("pipeline", "vib"),))] == pytest.approx(cal["model_threshold"])
