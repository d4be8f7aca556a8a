"""A TCP relay in front of Mosquitto that holds back everything the broker sends by a fixed
delay: a broker on a slow, congested link (each CONNACK, SUBACK and PUBACK arrives late but
within the device's socket timeout)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class SlowBroker:
    def __init__(self, host: str, port: int, delay_s: float) -> None:
        self.upstream = (host, port)
        self.delay_s = delay_s
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.host, self.port = self.listener.getsockname()[:2]
        self.sockets: list[socket.socket] = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            broker = socket.create_connection(self.upstream)
            self.sockets += [client, broker]
            threading.Thread(target=self._pump, args=(client, broker, 0.0), daemon=True).start()
            threading.Thread(target=self._pump, args=(broker, client, self.delay_s), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, delay_s: float) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if delay_s:
                    time.sleep(delay_s)  # the link's latency (this is the fault, not a wait in a test)
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.closed = True
        self.listener.close()
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.close()
