"""A TCP relay between the forwarder and the cloud Mosquitto that can hold back the broker's PUBACKs.

Everything the client sends reaches the broker unchanged, and everything the broker sends reaches
the client unchanged, except PUBACK packets while ``hold_pubacks`` is set: those are counted and
dropped.  The broker then has the records (and acknowledged them); the forwarder never hears so.

MQTT 3.1.1 framing, the only part of the protocol the relay reads (every control packet):

    byte 0      packet type in the high nibble, flags in the low nibble:
                0x10 CONNECT, 0x20 CONNACK, 0x3_ PUBLISH (flags: 0x08 DUP, 0x06 QoS, 0x01 RETAIN),
                0x40 PUBACK, 0x82 SUBSCRIBE, 0x90 SUBACK, 0xC0 PINGREQ, 0xD0 PINGRESP, 0xE0 DISCONNECT
    bytes 1..4  remaining length: 7 bits a byte, least significant group first, 0x80 = another byte follows
    then        the variable header and payload (remaining length bytes)

    PUBACK          0x40 0x02 <packet id MSB> <packet id LSB>
    PUBLISH, QoS 1  0x32 <remaining length> <topic length MSB LSB> <topic> <packet id MSB LSB> <payload>
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

PUBLISH = 0x3
PUBACK = 0x4


class PacketReader:
    """Splits a byte stream into whole MQTT packets (the bytes of each packet as received)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> Iterator[bytes]:
        self._buf += data
        while True:
            size = _packet_size(self._buf)
            if size is None:
                return
            packet = bytes(self._buf[:size])
            del self._buf[:size]
            yield packet


def _packet_size(buf: bytearray) -> int | None:
    """Total size of the packet at the start of ``buf``, or None while it is incomplete."""
    remaining, shift = 0, 0
    for i in range(1, 5):
        if i >= len(buf):
            return None
        remaining |= (buf[i] & 0x7F) << shift
        shift += 7
        if not buf[i] & 0x80:
            total = 1 + i + remaining
            return total if len(buf) >= total else None
    raise ValueError("MQTT remaining length longer than 4 bytes")


def publish_packet_id(packet: bytes) -> int | None:
    """Packet id of a QoS 1/2 PUBLISH (None for QoS 0)."""
    if not (packet[0] >> 1) & 0x03:
        return None
    _size, header = _remaining_length(packet)
    topic_len = int.from_bytes(packet[header : header + 2], "big")
    at = header + 2 + topic_len
    return int.from_bytes(packet[at : at + 2], "big")


def _remaining_length(packet: bytes) -> tuple[int, int]:
    value, shift, i = 0, 0, 1
    while True:
        value |= (packet[i] & 0x7F) << shift
        shift += 7
        i += 1
        if not packet[i - 1] & 0x80:
            return value, i


class MQTTRelay:
    """Listens on a free 127.0.0.1 port and relays each connection to ``(host, port)``."""

    def __init__(self, host: str, port: int, *, hold_pubacks: bool = True) -> None:
        self.upstream = (host, port)
        self.hold_pubacks = hold_pubacks
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.host, self.port = "127.0.0.1", int(self._listener.getsockname()[1])
        self._cond = threading.Condition()
        self.published: list[int] = []  # packet ids of QoS 1 PUBLISH packets, client -> broker
        self.withheld: list[int] = []  # packet ids of PUBACKs dropped, broker -> client
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._closed = False
        accept = threading.Thread(target=self._accept, name="relay-accept", daemon=True)
        accept.start()
        self._threads.append(accept)

    def _accept(self) -> None:
        while True:
            try:
                client, _addr = self._listener.accept()
            except OSError:
                return
            try:
                broker = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                client.close()
                continue
            broker.settimeout(None)
            with self._cond:
                self._sockets += [client, broker]
            for src, dst, name in ((client, broker, "up"), (broker, client, "down")):
                t = threading.Thread(
                    target=self._pump, args=(src, dst, name == "up"), name=f"relay-{name}", daemon=True
                )
                t.start()
                self._threads.append(t)

    def _pump(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        reader = PacketReader()
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                out = bytearray()
                for packet in reader.feed(data):
                    kind = packet[0] >> 4
                    if upstream and kind == PUBLISH:
                        pid = publish_packet_id(packet)
                        if pid is not None:
                            with self._cond:
                                self.published.append(pid)
                                self._cond.notify_all()
                    elif not upstream and kind == PUBACK and self.hold_pubacks:
                        with self._cond:
                            self.withheld.append(int.from_bytes(packet[2:4], "big"))
                            self._cond.notify_all()
                        continue
                    out += packet
                if out:
                    dst.sendall(out)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def wait(self, what: str, count: int, timeout: float = 30.0) -> list[int]:
        """Wait until ``count`` packets were seen in ``what`` ("published" or "withheld")."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(getattr(self, what)) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"relay: {len(getattr(self, what))} {what} packets, expected {count}")
                self._cond.wait(left)
            return list(getattr(self, what))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close() alone does not)
        self._listener.close()
        with self._cond:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for t in self._threads:
            t.join(5)
