"""The running gateway's control socket: a Unix domain socket in gateway.data_dir
(``control.sock``, mode 0600, owner only) through which local commands such as
``edgeline-gateway device-config`` talk to the process that owns the device link.

One JSON object per line each way: a request, then its response, then the connection
closes. A small thread accepts connections and answers each on a thread of its own (at
most MAX_CLIENTS at once); a request that does not arrive within READ_TIMEOUT_S, or is
longer than MAX_REQUEST bytes, is answered with an error. Peers must run as the gateway's
user (or root): checked with SO_PEERCRED on top of the file mode.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.errors import GatewayError

log = logging.getLogger(__name__)

SOCKET_NAME = "control.sock"
MAX_PATH = 107  # sun_path holds 108 bytes with its terminating NUL
MAX_REQUEST = 65536
READ_TIMEOUT_S = 5.0
MAX_CLIENTS = 8

Handler = Callable[[dict[str, Any]], dict[str, Any]]


class ControlSocketError(GatewayError):
    """The control socket cannot be served, or reached (the message says what to do)."""


def socket_path(data_dir: Path) -> Path:
    return data_dir / SOCKET_NAME


def _check_length(path: Path) -> None:
    if len(os.fsencode(path)) > MAX_PATH:
        raise ControlSocketError(
            f"the control socket path {path} is longer than the {MAX_PATH} bytes a Unix socket allows: "
            "choose a shorter gateway.data_dir"
        )


def _read_line(conn: socket.socket) -> bytes:
    buf = b""
    while b"\n" not in buf:
        chunk = conn.recv(4096)
        if not chunk:
            break
        buf += chunk
        if len(buf) > MAX_REQUEST:
            raise ValueError(f"request longer than {MAX_REQUEST} bytes")
    return buf.split(b"\n", 1)[0]


class ControlSocket:
    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        self.handler = handler
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._slots = threading.BoundedSemaphore(MAX_CLIENTS)
        self.served = 0
        self.errors = 0

    def start(self) -> None:
        """Bind and listen (raises ControlSocketError), then serve on a thread."""
        _check_length(self.path)
        if self.path.exists() or self.path.is_symlink():
            try:
                request(self.path, {"op": "ping"}, timeout=2.0)
            except ControlSocketError:
                self.path.unlink()  # left by a gateway that did not stop cleanly
            else:
                raise ControlSocketError(
                    f"another gateway answers on {self.path}: two gateways must not share gateway.data_dir"
                )
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(self.path))
            os.chmod(self.path, 0o600)  # data_dir is 0700 as well (cli.private_data_dir)
            sock.listen(MAX_CLIENTS)
        except OSError as exc:
            sock.close()
            raise ControlSocketError(f"cannot serve the control socket {self.path}: {exc.strerror}") from exc
        sock.settimeout(0.5)  # the accept loop looks at the stop flag this often
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="control-socket", daemon=True)
        self._thread.start()
        log.info("control socket %s", self.path)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            self.path.unlink(missing_ok=True)

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                raise
            if not self._slots.acquire(blocking=False):
                self._reply(conn, {"ok": False, "reason": "busy", "message": "too many requests at once; try again"})
                conn.close()
                continue
            threading.Thread(target=self._client, args=(conn,), name="control-client", daemon=True).start()

    def _client(self, conn: socket.socket) -> None:
        try:
            with conn:
                self._reply(conn, self._answer(conn))
        finally:
            self._slots.release()

    def _answer(self, conn: socket.socket) -> dict[str, Any]:
        uid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[1]
        if uid not in (os.getuid(), 0):
            self.errors += 1
            log.warning("control socket: refused a client of uid %d", uid)
            return {"ok": False, "reason": "forbidden", "message": "only the gateway's user may use its control socket"}
        conn.settimeout(READ_TIMEOUT_S)
        try:
            body = json.loads(_read_line(conn))
            if not isinstance(body, dict):
                raise ValueError("a request is a JSON object")
        except (OSError, ValueError) as exc:
            self.errors += 1
            return {"ok": False, "reason": "bad_request", "message": f"bad request: {exc}"}
        self.served += 1
        if body.get("op") == "ping":
            return {"ok": True, "pid": os.getpid()}
        try:
            return self.handler(body)
        except Exception:  # one bad request must not end the socket thread
            self.errors += 1
            log.exception("control socket: request %r failed", body.get("op"))
            return {"ok": False, "reason": "error", "message": "the gateway failed on this request; see its log"}

    @staticmethod
    def _reply(conn: socket.socket, response: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):  # the client went away
            conn.sendall(json.dumps(response, separators=(",", ":")).encode() + b"\n")


def request(path: Path, body: dict[str, Any], *, timeout: float) -> dict[str, Any]:
    """Send one request to a running gateway's control socket and return its response;
    ControlSocketError when no gateway answers there."""
    _check_length(path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except FileNotFoundError:
            raise ControlSocketError(
                f"no control socket at {path}: is `edgeline-gateway run` running with this config?"
            ) from None
        except PermissionError:
            raise ControlSocketError(f"no access to {path}: run this as the gateway's user") from None
        except OSError as exc:
            raise ControlSocketError(
                f"the gateway does not answer on {path} ({exc.strerror}): is `edgeline-gateway run` running?"
            ) from None
        try:
            sock.sendall(json.dumps(body, separators=(",", ":")).encode() + b"\n")
            line = _read_line(sock)
        except TimeoutError:
            raise ControlSocketError(f"the gateway did not answer within {timeout:g} s") from None
        except (OSError, ValueError) as exc:
            raise ControlSocketError(f"the connection to the gateway broke: {exc}") from None
    if not line:
        raise ControlSocketError("the gateway closed the connection without an answer; see its log")
    try:
        response = json.loads(line)
    except ValueError:
        raise ControlSocketError("the gateway's answer is not JSON (a different program on its socket?)") from None
    if not isinstance(response, dict):
        raise ControlSocketError("the gateway's answer is not a JSON object")
    return response
