"""The status page as one self-contained HTML file: header, fleet table, calibration, signed updates and every
device's plots, with the data, our CSS and JS and uPlot embedded, so it opens offline (the demo's
report).

``fetch_snapshot`` reads the data from a running gateway's page (the same JSON the live page
reads); ``snapshot_html`` writes the file. The page code is the live page's (static/status.js).
"""

from __future__ import annotations

import base64
import html
import json
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from gateway.web.app import to_json, vendor_banner
from gateway.web.state import STATIC_DIR, VENDOR_DIR, VENDOR_FILES


def _get(url: str, password: str | None, timeout: float) -> Any:
    req = urllib.request.Request(url)
    if password is not None:
        token = base64.b64encode(f"edgeline:{password}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def fetch_snapshot(base_url: str, *, password: str | None = None, timeout: float = 10.0) -> dict[str, Any]:
    """Status, fleet rows and each device's full plot history from a running gateway."""
    base = base_url.rstrip("/")
    status = _get(f"{base}/api/status", password, timeout)
    fleet = _get(f"{base}/api/fleet", password, timeout)
    devices = {}
    for row in fleet["devices"]:
        name = row["device"]
        devices[name] = _get(f"{base}/api/device/{urllib.parse.quote(name)}", password, timeout)
    return {"status": status, "fleet": fleet, "devices": devices, "taken_at": time.time()}


def _script_json(data: Any) -> str:
    # inside <script>: "</script>" must not appear, so every "<" is escaped
    return to_json(data).replace("<", "\\u003c")


def _inline(path: Path) -> str:
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    if "</script" in text.lower() or "</style" in text.lower():
        raise ValueError(f"{path} cannot be inlined (it closes its own element)")
    return text


def snapshot_html(
    snapshot: dict[str, Any],
    *,
    title: str = "edgeline gateway: snapshot",
    extra_html: str = "",
    static_dir: Path = STATIC_DIR,
    vendor_dir: Path = VENDOR_DIR,
) -> str:
    """One HTML file of the page with ``snapshot`` (from fetch_snapshot) embedded.

    extra_html: trusted HTML appended below the devices (the demo's report); escape its text."""
    js_name, css_name = VENDOR_FILES
    taken = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(snapshot.get("taken_at", time.time())))
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>{_inline(vendor_dir / css_name)}</style>
<style>{_inline(static_dir / "style.css")}</style>
</head>
<body data-page="snapshot">
{vendor_banner(vendor_dir)}
<header id="gateway" class="gateway"></header>
<main>
<p class="muted">A snapshot of the gateway's status page taken at {html.escape(taken)}; everything it shows
is in this file (it opens offline).</p>
<section><h2>Devices</h2><table id="fleet" class="fleet"></table></section>
<section id="calibration-section" hidden><h2>Calibration</h2><div id="calibration" class="updates"></div></section>
<section id="updates-section" hidden><h2>Updates</h2><div id="updates" class="updates"></div></section>
<div id="devices"></div>
{extra_html}
</main>
<script id="snapshot-data" type="application/json">{_script_json(snapshot)}</script>
<script>{_inline(vendor_dir / js_name)}</script>
<script>{_inline(static_dir / "status.js")}</script>
</body>
</html>
"""
