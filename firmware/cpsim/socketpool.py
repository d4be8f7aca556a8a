# CircuitPython's `socketpool` for the MicroPython unix port: the API the CircuitPython
# firmware and adafruit_connection_manager use (SocketPool(radio).socket/getaddrinfo,
# Socket.connect/send/recv_into/settimeout/close), over the port's own `socket` module.
#
# Semantics kept from CircuitPython (shared-bindings/socketpool): getaddrinfo returns
# (family, type, proto, canonname, (ip, port)) with the address as a dotted string;
# recv_into(buffer, bufsize=0) reads at most bufsize bytes (0: the whole buffer) and
# returns the count, 0 when the peer closed; a read that times out raises
# OSError(ETIMEDOUT), one that would block on a non-blocking socket OSError(EAGAIN).
# While the simulated network is down (EDGELINE_SIM_LINK_DOWN) every call fails, and a
# connection open at that time stays broken.
import errno
import socket as _socket

from _cpsim import link_down


class Socket:
    def __init__(self, family, type, proto):
        self._sock = _socket.socket(family, type, proto)
        self._dead = False
        self.family = family
        self.type = type
        self.proto = proto

    def settimeout(self, value):
        self._sock.settimeout(value)

    def setblocking(self, flag):
        self.settimeout(None if flag else 0)

    def setsockopt(self, level, optname, value):
        self._sock.setsockopt(level, optname, value)

    def _check(self):
        # the simulated network went away (EDGELINE_SIM_LINK_DOWN): this connection is
        # gone for good, as a TCP connection whose peer vanished
        if self._dead or link_down():
            self._dead = True
            raise OSError(errno.ECONNABORTED)

    def connect(self, address):
        self._check()
        host, port = address
        self._sock.connect(_socket.getaddrinfo(host, port)[0][-1])

    def send(self, data):
        self._check()
        return self._sock.send(data)

    def sendall(self, data):
        view = memoryview(data)
        while len(view) > 0:
            view = view[self.send(view) :]

    def recv_into(self, buffer, bufsize=0):
        self._check()
        n = bufsize or len(buffer)
        # the port raises OSError(ETIMEDOUT) on a timeout, as CircuitPython does
        got = self._sock.readinto(memoryview(buffer)[:n])
        if got is None:  # non-blocking and nothing there
            raise OSError(errno.EAGAIN)
        return got

    def close(self):
        self._sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class SocketPool:
    AF_INET = _socket.AF_INET
    SOCK_STREAM = _socket.SOCK_STREAM
    SOCK_DGRAM = _socket.SOCK_DGRAM
    IPPROTO_IP = 0
    IPPROTO_TCP = 6
    TCP_NODELAY = 1
    SOL_SOCKET = _socket.SOL_SOCKET
    SO_REUSEADDR = _socket.SO_REUSEADDR
    EAI_NONAME = -2

    def __init__(self, radio):
        self.radio = radio

    def socket(self, family=AF_INET, type=SOCK_STREAM, proto=IPPROTO_IP):
        return Socket(family, type, proto)

    def getaddrinfo(self, host, port, family=0, type=0, proto=0, flags=0):  # noqa: PLR0917 - CircuitPython's signature
        try:
            sa = _socket.getaddrinfo(host, port)[0][-1]
        except OSError:
            raise OSError(SocketPool.EAI_NONAME)  # CircuitPython: gaierror, an OSError
        ip = "%d.%d.%d.%d" % (sa[4], sa[5], sa[6], sa[7])  # struct sockaddr_in
        return [(SocketPool.AF_INET, SocketPool.SOCK_STREAM, 0, "", (ip, port))]
