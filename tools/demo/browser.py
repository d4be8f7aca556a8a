"""Headless chromium (Debian's ``chromium`` and ``chromedriver``) driven by selenium: the demo's
screenshot of its status page, and the browser tests of the page (tests/web/)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def chromium_paths() -> tuple[str, str] | None:
    """(browser, driver) when both are installed (tools/setup.sh --test installs them)."""
    browser = next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def headless_chromium(width: int = 1280, height: int = 900) -> Any:
    """A selenium WebDriver on headless chromium, pixel ratio 1; the caller quits it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    paths = chromium_paths()
    if paths is None:
        raise RuntimeError("chromium and chromedriver are needed: run `tools/setup.sh --test` (Debian packages)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = paths[0]
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in containers and CI
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--force-device-scale-factor=1",
        f"--window-size={width},{height}",
        "--hide-scrollbars",
    ):
        opts.add_argument(arg)
    return webdriver.Chrome(options=opts, service=Service(executable_path=paths[1]))


def screenshot_page(
    url: str, path: Path, *, width: int = 1280, ready_js: str | None = None, timeout: float = 20.0
) -> None:
    """Open url and save a full-page PNG once ``ready_js`` (a JS expression) is true."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver = headless_chromium(width)
    try:
        driver.get(url)
        if ready_js:
            WebDriverWait(driver, timeout).until(lambda d: d.execute_script(f"return !!({ready_js});"))
        height = int(driver.execute_script("return document.documentElement.scrollHeight;"))
        driver.set_window_size(width, min(max(height, 600), 6000))
        driver.save_screenshot(str(path))
    finally:
        driver.quit()
