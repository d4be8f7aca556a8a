"""Serve the status page: bottle's app on a threaded ``wsgiref`` server in a daemon thread.

The runner reads the password file first (``WebSection.read_password``: a file other users can
read stops the gateway there, as for MQTT), creates a ``WebServer``, starts it once the gateway runs and stops it at the end.
A port that cannot be bound raises ``WebError`` with what to change; the runner logs it and
keeps the data path running without the page (gateway/runner.py).
"""

from __future__ import annotations

import logging
import socket
import socketserver
import threading
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from gateway.config import WebSection
from gateway.errors import GatewayError
from gateway.web.app import StatusApp
from gateway.web.state import FETCH_HINT, STATIC_DIR, VENDOR_DIR, WebState, vendor_missing

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 10.0  # a client that stops sending does not keep a thread for long


class WebError(GatewayError):
    """The status page cannot be served; the message says what to change."""


class _Handler(WSGIRequestHandler):
    timeout = REQUEST_TIMEOUT_S

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)  # never the Authorization header


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the address up in DNS (getfqdn): slow or stuck offline.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)
        self.setup_environ()


class _Server6(_Server):
    address_family = socket.AF_INET6


class WebServer:
    def __init__(
        self,
        settings: WebSection,
        state: WebState,
        *,
        password: str | None = None,
        static_dir: Path = STATIC_DIR,
        vendor_dir: Path = VENDOR_DIR,
    ) -> None:
        self.settings = settings
        self.state = state
        self.vendor_dir = vendor_dir
        self.app = StatusApp(state, password=password, static_dir=static_dir, vendor_dir=vendor_dir)
        self.auth = password is not None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.error: str | None = None

    @property
    def port(self) -> int | None:
        return self._server.server_port if self._server is not None else None

    @property
    def url(self) -> str | None:
        if self._server is None:
            return None
        host = self.settings.address
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/"

    def start(self) -> None:
        s = self.settings
        cls = _Server6 if ":" in s.address else _Server
        try:
            self._server = make_server(s.address, s.port, self.app.app, server_class=cls, handler_class=_Handler)
        except OSError as exc:
            self.error = (
                f"web: cannot serve the status page on {s.address}:{s.port} ({exc.strerror or exc}); "
                "set [web] port to a free port (0 picks one), or enabled = false"
            )
            raise WebError(self.error) from None
        self._thread = threading.Thread(target=self._server.serve_forever, name="web", daemon=True)
        self._thread.start()
        missing = vendor_missing(self.vendor_dir)
        if missing:
            log.error("web: the status page cannot draw plots: %s missing; %s", ", ".join(missing), FETCH_HINT)
        log.info("web: status page on %s%s", self.url, " (password required)" if self.auth else "")

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5.0)
        self._server = None

    def status(self) -> dict[str, Any]:
        """The "web" section of status.json: where the page is (tests and the demo read the port)."""
        return {
            "url": self.url,
            "address": self.settings.address,
            "port": self.port,
            "password": self.auth,
            "vendor_missing": vendor_missing(self.vendor_dir),
            "error": self.error,
        }
