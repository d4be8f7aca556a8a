"""The CircuitPython transport (cpport/mqtt.py) keeps the pinned MiniMQTT's calls bounded:
poll() does not wait when nothing is there, yet reads a packet that arrives in pieces;
publish takes the queue's memoryview; close() frees the connection manager's socket so the
next connect works. Through a relay that passes the broker's bytes one at a time."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path

from tests.circuitpython.test_minimqtt_unix import CP_PATH, Peer
from tests.support.upy import ROOT, spawn_micropython
from tests.support.waiting import wait_until
from tools.mosquitto import Mosquitto

HERE = Path(__file__).resolve().parent


class DribbleRelay:
    """Client <-> broker; what the broker sends goes on one byte per write, 2 ms apart."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            broker = socket.create_connection(self.upstream)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.socks += [client, broker]
            threading.Thread(target=self._pipe, args=(client, broker, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(broker, client, True), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket, dribble: bool) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(4096):
                if not dribble:
                    dst.sendall(data)
                    continue
                for b in data:
                    dst.sendall(bytes([b]))
                    time.sleep(0.002)  # the relay's pacing, not a test synchronisation
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.listener.close()
        for s in self.socks:
            with contextlib.suppress(OSError):
                s.close()


def test_transport_polls_without_waiting_and_reads_split_packets(mosquitto: Mosquitto, tmp_path: Path) -> None:
    prefix = "edgeline/s1/cp-tr"
    peer = Peer(mosquitto, prefix)
    relay = DribbleRelay((mosquitto.host, mosquitto.port))
    log_path = tmp_path / "transport.log"
    with log_path.open("wb") as log:
        proc = spawn_micropython(
            [str(HERE / "upy_cp_transport.py"), str(relay.port), prefix],
            micropypath=(*CP_PATH, ROOT / "firmware"),
            cwd=tmp_path,
            stdout=log,
        )
        try:
            assert wait_until(lambda: peer.of(prefix + "/birth"), what="BIRTH") == [bytes(range(256))]
            wait_until(lambda: "IDLE_POLLS_MS" in log_path.read_text(), what="the idle polls")
            cmd = bytes(range(200))
            peer.client.publish(prefix + "/cmd", cmd, qos=1)
            assert proc.wait(60) == 0, log_path.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            relay.close()
    lines = dict(ln.split(" ", 1) for ln in log_path.read_text().splitlines() if " " in ln)
    # 50 polls with nothing there: a poll that waited for the socket (1 s) would take 50 s
    assert int(lines["IDLE_POLLS_MS"]) < 2000, lines
    n, topic, payload = lines["GOT"].split(" ")
    assert (int(n), topic, bytes.fromhex(payload)) == (1, prefix + "/cmd", cmd)
    assert "DONE" in log_path.read_text()
    assert wait_until(lambda: len(peer.of(prefix + "/birth")) == 2, what="the second session") is True
    assert peer.of(prefix + "/birth")[1] == b"again"
    # close() drops the session (its will goes out); disconnect() ends the second cleanly
    assert peer.of(prefix + "/death") == [b"\x05gone"]
    peer.stop()
