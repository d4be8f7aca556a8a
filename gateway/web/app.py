"""The status page's routes (bottle): read-only, GET only.

    /                      the fleet table (static/index.html, data from /api/fleet, /api/status)
    /device/<id>           one device's live plots (static/device.html, data from /api/device/<id>)
    /api/status            the gateway's latest status (header: ingest, alerts, forward lanes, link)
    /api/fleet             one row per device (gateway/live.py fleet_row)
    /api/device/<id>       the device's row and plot histories; ?since=<unix time> for newer points
    /metrics               Prometheus text format (gateway/web/metrics.py)
    /static/...            our CSS and JS; /static/vendor/... uPlot

Any other method is answered 405 by bottle's router. With a password configured, every route
asks for it (HTTP Basic, any user name), compared in constant time.
"""

from __future__ import annotations

import hmac
import json
import math
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bottle
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.web.metrics import metrics_registry
from gateway.web.state import FETCH_HINT, STATIC_DIR, VENDOR_DIR, WebState, vendor_missing

DEVICE_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")  # the device id rule (shared_protocol.topics.valid_id)
REALM = "edgeline gateway"
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    # our own files only: no inline script, nothing from elsewhere
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'",
}


def to_json(data: Any) -> str:
    """JSON for the browser: NaN and infinities (a model may score them) become null."""
    try:
        return json.dumps(data, separators=(",", ":"), allow_nan=False)
    except ValueError:
        return json.dumps(_finite(data), separators=(",", ":"), allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def vendor_banner(vendor_dir: Path) -> str:
    """The error shown at the top of every page when uPlot was not fetched (empty when it was)."""
    missing = vendor_missing(vendor_dir)
    if not missing:
        return ""
    return (
        '<div class="banner error" id="vendor-missing" role="alert"><strong>The chart library is missing.</strong> '
        f"{', '.join(missing)} not found in gateway/web/static/vendor/: the plots cannot be drawn. "
        f"To fix it, {FETCH_HINT}.</div>"
    )


class StatusApp:
    """The bottle application over one WebState."""

    def __init__(
        self,
        state: WebState,
        *,
        password: str | None = None,
        static_dir: Path = STATIC_DIR,
        vendor_dir: Path = VENDOR_DIR,
    ) -> None:
        self.state = state
        self.password = password
        self.static_dir = static_dir
        self.vendor_dir = vendor_dir
        self.registry = metrics_registry(state)
        self.app = bottle.Bottle()
        self.app.install(self._guard)
        get = self.app.get
        get("/", callback=self.fleet_page)
        get("/device/<device>", callback=self.device_page)
        get("/api/status", callback=self.api_status)
        get("/api/fleet", callback=self.api_fleet)
        get("/api/device/<device>", callback=self.api_device)
        get("/metrics", callback=self.metrics)
        get("/static/vendor/<name>", callback=self.vendor_file)
        get("/static/<name>", callback=self.static_file)

    # ------------------------------------------------------------------ every route
    def _authorised(self) -> bool:
        if self.password is None:
            return True
        creds = bottle.request.auth  # (user, password) from "Authorization: Basic ...", or None
        if not creds or creds[1] is None:
            return False
        return hmac.compare_digest(creds[1].encode("utf-8"), self.password.encode("utf-8"))

    def _guard(self, callback: Callable[..., Any]) -> Callable[..., Any]:
        """Plugin: authentication, then the security headers on whatever the route returns."""

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not self._authorised():
                err = bottle.HTTPError(401, "the status page needs its password (HTTP Basic authentication)")
                err.set_header("WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"')
                raise err
            for name, value in SECURITY_HEADERS.items():
                bottle.response.set_header(name, value)
            return callback(*args, **kwargs)

        return wrapper

    @staticmethod
    def _json(data: Any, status: int = 200) -> str:
        bottle.response.status = status
        bottle.response.content_type = "application/json"
        bottle.response.set_header("Cache-Control", "no-store")
        return to_json(data)

    # ------------------------------------------------------------------ pages
    def _page(self, name: str) -> str:
        html = (self.static_dir / name).read_text(encoding="utf-8")
        return html.replace("<!--banner-->", vendor_banner(self.vendor_dir))

    def fleet_page(self) -> str:
        return self._page("index.html")

    def device_page(self, device: str) -> str:
        if not DEVICE_RE.match(device):
            raise bottle.HTTPError(404, "not a device id (1-32 characters from A-Z a-z 0-9 _ -)")
        return self._page("device.html")

    def static_file(self, name: str) -> Any:
        return bottle.static_file(name, root=str(self.static_dir))

    def vendor_file(self, name: str) -> Any:
        return bottle.static_file(name, root=str(self.vendor_dir))

    # ------------------------------------------------------------------ data
    def api_status(self) -> str:
        return self._json({**self.state.status, "now": time.time()})

    def api_fleet(self) -> str:
        return self._json({"now": time.time(), "devices": self.state.live.fleet()})

    def api_device(self, device: str) -> str:
        since_arg = bottle.request.query.get("since")
        since = None
        if since_arg:
            try:
                since = float(since_arg)
            except ValueError:
                return self._json({"error": f"since: expected a unix time in seconds, got {since_arg!r}"}, 400)
        detail = self.state.live.detail(device, since=since) if DEVICE_RE.match(device) else None
        if detail is None:
            return self._json({"error": f"unknown device {device!r}"}, 404)
        return self._json({**detail, "now": time.time()})

    def metrics(self) -> bytes:
        bottle.response.content_type = CONTENT_TYPE_LATEST
        return generate_latest(self.registry)
