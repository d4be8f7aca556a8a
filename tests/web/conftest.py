"""Fixtures of the status page tests: one running site (broker, gateway with its page, paced
devices) and one headless chromium per module."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.web.site import Site, running_site
from tools.demo.browser import headless_chromium


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with running_site(tmp_path_factory.mktemp("site")) as s:
        yield s


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    driver = headless_chromium(1280, 1000)
    try:
        yield driver
    finally:
        driver.quit()
