"""tools/fetch_web_assets.py: the npm tarball is checked against its pinned sha512 before
anything is unpacked; the set-up left the pinned uPlot where the page serves it from."""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest

from gateway.web.state import VENDOR_DIR, vendor_missing
from tools.fetch_web_assets import UPLOT, FetchError, check_integrity, unpack, up_to_date


def _tarball(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_a_tarball_is_unpacked_only_when_its_sha512_matches_the_pin(tmp_path: Path) -> None:
    data = _tarball({m: m.encode() for m in UPLOT.members})
    pin = replace(UPLOT, integrity="sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode())
    check_integrity(pin, data)
    written = unpack(pin, data, tmp_path / "vendor")
    assert sorted(p.name for p in written) == ["LICENSE", "uPlot.iife.min.js", "uPlot.min.css"]
    assert (tmp_path / "vendor" / "uPlot.min.css").read_bytes() == b"dist/uPlot.min.css"
    with pytest.raises(FetchError, match="differs from the pinned"):
        check_integrity(pin, data + b"x")
    with pytest.raises(FetchError, match="has no package/LICENSE"):  # the first member it lacks
        unpack(pin, _tarball({m: b"" for m in UPLOT.members if m != "LICENSE"}), tmp_path / "other")


def test_setup_fetched_the_pinned_uplot() -> None:
    assert vendor_missing(VENDOR_DIR) == []
    assert up_to_date(UPLOT, VENDOR_DIR), "run .venv/bin/python tools/fetch_web_assets.py"
    assert "MIT" in (VENDOR_DIR / "LICENSE").read_text()
