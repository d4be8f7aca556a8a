"""Regenerate docs/img/status-page.png: the device page of a running site (tests/web/site.py)
once its fault has raised and cleared an alert, as the browser test sees it.

    .venv/bin/python -m tests.web.update_docs_image [--out docs/img/status-page.png]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from tests.support.upy import ROOT
from tests.support.waiting import wait_until
from tests.web.pages import full_page, plot_pixels, wait_for_plots
from tests.web.site import FAULTY, running_site
from tools.demo.browser import headless_chromium

OUT = ROOT / "docs" / "img" / "status-page.png"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    with (
        tempfile.TemporaryDirectory(prefix="edgeline-docs-") as tmp,
        running_site(Path(tmp), fault_s=(4.0, 10.0)) as site,
    ):
        wait_until(
            lambda: site.get(f"/api/device/{FAULTY}")["alerts"].get("vibration", {}).get("state") == "cleared",
            60,
            "the alert to clear",
            poll=0.5,
        )
        # a little more history after the clear, as someone watching would see it
        n = len(site.get(f"/api/device/{FAULTY}")["history"]["t"])
        wait_until(lambda: len(site.get(f"/api/device/{FAULTY}")["history"]["t"]) > n + 15, 30, "more points", 0.5)
        driver = headless_chromium(1280, 1000)
        try:
            driver.get(f"{site.url}device/{FAULTY}")
            wait_for_plots(driver, 7, min_points=20)
            wait_until(lambda: "cleared 1," in driver.find_element("id", "gateway").text, 10, "the header", 0.2)
            png, found = full_page(driver)
        finally:
            driver.quit()
    bad = [p for p in plot_pixels(png, found) if p.series < 150]
    if bad:
        raise SystemExit(f"update_docs_image: plots without data: {bad}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(png)
    print(f"update_docs_image: {args.out} ({len(png):,} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
