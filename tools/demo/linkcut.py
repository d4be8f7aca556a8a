"""A TCP relay that stands for the gateway's uplink, so the demo can cut it like a WAN outage.

The gateway's forwarder connects to the relay; the relay connects on to the cloud broker. ``cut()``
drops every open connection and refuses new ones; ``restore()`` accepts them again on the same
port. The cloud broker itself keeps running (as a real cloud would), so whoever watches it from
the other side misses nothing.
"""

from __future__ import annotations

import contextlib
import socket
import threading

from tools.mosquitto import free_port


class LinkCut:
    def __init__(self, target: tuple[str, int], host: str = "127.0.0.1") -> None:
        self.target = target
        self.host = host
        self.port = free_port(host)
        self.up = False
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def restore(self) -> None:
        """Accept connections again (the link is up)."""
        with self._lock:
            if self.up:
                return
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.host, self.port))
            listener.listen(16)
            self._listener = listener
            self.up = True
        self._thread = threading.Thread(target=self._accept, args=(listener,), name="linkcut-accept", daemon=True)
        self._thread.start()

    start = restore

    def cut(self) -> None:
        """Drop every connection and refuse new ones (the link is down)."""
        with self._lock:
            self.up = False
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, []
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        if self._thread is not None:
            self._thread.join(5)

    stop = cut

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _addr = listener.accept()
            except OSError:
                return  # cut
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if not self.up:
                    client.close()
                    upstream.close()
                    return
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), name="linkcut-pump", daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
