"""The status page in a real headless chromium (Debian's chromium and chromedriver), served by
a real gateway process fed by paced vibration devices over a real Mosquitto."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from gateway.config import WebSection
from gateway.live import LiveView
from gateway.registry import Registry
from gateway.web.server import WebServer
from gateway.web.state import WebState
from tests.support.waiting import wait_until
from tests.web.pages import full_page, plot_pixels, plots, wait_for_plots
from tests.web.site import DEVICES, FAULTY, Site

CHANNELS = 6  # the vibration devices' ax..gz


def _fleet_rows(driver: Any) -> dict[str, list[str]]:
    # read in one call: the table is rebuilt every 2 s, element handles would go stale
    rows = driver.execute_script(
        "return [...document.querySelectorAll('#fleet tr[data-device]')]"
        ".map((r) => [r.dataset.device, [...r.cells].map((c) => c.textContent)]);"
    )
    return {name: cells for name, cells in rows}


def _all_online(driver: Any) -> dict[str, list[str]] | None:
    rows = _fleet_rows(driver)
    return rows if len(rows) == len(DEVICES) and all(v[1] == "online" for v in rows.values()) else None


def test_fleet_table_lists_every_device_online_with_the_gateway_header(site: Site, browser: Any) -> None:
    browser.get(site.url)
    rows = WebDriverWait(browser, 20, 0.2).until(_all_online)
    assert list(rows) == sorted(DEVICES)  # sorted by device
    for cells in rows.values():
        assert cells[3].endswith("Hz") and cells[8] == "1.2.3", cells  # rate, firmware (SimDevice's)
    header = WebDriverWait(browser, 10).until(lambda d: "broker" in (t := d.find_element(By.ID, "gateway").text) and t)
    assert "gw1" in header and "site s1" in header and "broker connected" in header, header
    assert "Cloud link connected 127.0.0.1:" in header, header
    lanes = browser.execute_script(
        "return [...document.querySelectorAll('#lanes tr')].map((r) => r.cells[0].textContent);"
    )
    assert lanes == ["lane", "alert", "registry", "summary", "raw"], lanes
    # sorting by a column, then back
    browser.find_elements(By.CSS_SELECTOR, "#fleet th")[0].click()
    assert list(_fleet_rows(browser)) == sorted(DEVICES, reverse=True)


def test_device_page_draws_live_readings_and_scores_with_threshold_and_alert_markers(
    site: Site, browser: Any, tmp_path: Path
) -> None:
    # The fault on pump-01 raised an alert; once it cleared, both markers belong on the plot.
    wait_until(
        lambda: site.get(f"/api/device/{FAULTY}")["alerts"].get("vibration", {}).get("state") == "cleared",
        30,
        "the alert on pump-01 to clear",
        poll=0.2,
    )
    browser.get(f"{site.url}device/{FAULTY}")
    found = wait_for_plots(browser, CHANNELS + 1, min_points=5)
    assert [p["kind"] for p in found].count("score") == 1
    before = {p["title"]: p["points"] for p in found}
    # live: new points arrive without the page being reloaded or the plots rebuilt

    def grown_plots() -> list[dict[str, Any]] | None:
        now = plots(browser)
        return now if all(p["points"][0] > before[p["title"]][0] for p in now) else None

    grown = wait_until(grown_plots, 15, "the plots to grow", poll=0.2)
    assert len(grown) == CHANNELS + 1
    score = next(p for p in grown if p["kind"] == "score")
    assert score["points"][1] == score["points"][0]  # the threshold line spans the scores
    assert score["markers"][:2] == ["raised", "cleared"], score["markers"]

    png, found = full_page(browser)
    (tmp_path / "status-page.png").write_bytes(png)
    for px in plot_pixels(png, found):
        # a line of data across the plot: far more than a few stray pixels of its colour
        assert px.series > 150, (px, tmp_path / "status-page.png")
        assert px.drawn > 0.01 * px.area, (px, tmp_path / "status-page.png")
    text = browser.find_element(By.ID, "device").text
    assert "online" in text and "cleared" in text, text


def test_a_page_without_the_chart_library_says_how_to_fix_it(tmp_path: Path, browser: Any) -> None:
    registry = Registry(tmp_path / "registry.sqlite")
    state = WebState(LiveView(registry), detail_devices=10, status={"gateway": "gw-x", "site": "s9"})
    server = WebServer(WebSection(port=0), state, vendor_dir=tmp_path / "no-vendor")
    server.start()
    try:
        assert server.url is not None
        browser.get(server.url + "device/pump-01")
        banner = WebDriverWait(browser, 10).until(lambda d: d.find_element(By.ID, "vendor-missing"))
        assert "chart library is missing" in banner.text
        assert "uPlot.iife.min.js" in banner.text and "tools/fetch_web_assets.py" in banner.text
        assert browser.find_element(By.ID, "plots-missing").is_displayed()
        browser.get(server.url)
        assert browser.find_element(By.ID, "vendor-missing").is_displayed()
    finally:
        server.stop()
        registry.close()
