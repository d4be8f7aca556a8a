"""What the browser tests read from the status page: uPlot's data through JS, and the plots'
regions of a screenshot (how many pixels of each plot's area are drawn in its series colour,
or differ from the background)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image
from selenium.webdriver.support.ui import WebDriverWait

# Per plot: its title, kind, how many non-null points each series holds, the plot area (the
# canvas region inside the axes, in page pixels), the series colours, and its alert markers.
PLOTS_JS = """
return (window.edgeline ? window.edgeline.plots : []).map((p) => {
  const u = p.u;
  const r = u.ctx.canvas.getBoundingClientRect();
  const k = window.devicePixelRatio || 1;
  return {
    title: p.title,
    kind: p.kind,
    points: u.data.slice(1).map((s) => s.filter((v) => v !== null && v !== undefined).length),
    box: [r.left + u.bbox.left / k, r.top + u.bbox.top / k, u.bbox.width / k, u.bbox.height / k],
    colours: u.series.slice(1).map((s) => s._stroke || s.stroke),
    markers: p.markers ? p.markers().map((m) => m.label) : [],
  };
});
"""


@dataclass
class PlotPixels:
    title: str
    series: int  # pixels within a small distance of the first series' colour
    drawn: int  # pixels differing from the background
    area: int


def plots(driver: Any) -> list[dict[str, Any]]:
    return driver.execute_script(PLOTS_JS)  # type: ignore[no-any-return]


def wait_for_plots(driver: Any, count: int, min_points: int, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Wait until ``count`` plots exist and every series of each holds ``min_points`` points."""

    def ready(d: Any) -> list[dict[str, Any]] | None:
        got = plots(d)
        return got if len(got) >= count and all(min(p["points"]) >= min_points for p in got) else None

    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(ready)  # type: ignore[no-any-return]


def full_page(driver: Any, width: int = 1280) -> tuple[bytes, list[dict[str, Any]]]:
    """A screenshot of the whole page (the viewport made as tall as the page) and the plots'
    regions measured in that same layout."""
    height = int(driver.execute_script("return document.documentElement.scrollHeight;"))
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
    )
    try:
        driver.execute_script("window.scrollTo(0, 0);")
        found = plots(driver)
        return driver.get_screenshot_as_png(), found
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def _rgb(colour: str) -> tuple[int, int, int]:
    c = colour.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


def plot_pixels(png: bytes, found: list[dict[str, Any]], background: str = "#ffffff") -> list[PlotPixels]:
    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int32)
    bg = np.array(_rgb(background))
    out = []
    for p in found:
        x, y, w, h = (round(v) for v in p["box"])
        region = img[y : y + h, x : x + w]
        colour = np.array(_rgb(p["colours"][0]))
        series = int((np.abs(region - colour).sum(axis=2) < 60).sum())
        drawn = int((np.abs(region - bg).sum(axis=2) > 30).sum())
        out.append(PlotPixels(p["title"], series, drawn, w * h))
    return out
