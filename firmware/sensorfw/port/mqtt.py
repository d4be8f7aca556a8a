# MQTT transport: micropython-lib umqtt.simple, wrapped so that no call can block
# for longer than `timeout_ms`.
#
# umqtt.simple creates its socket inside connect() and switches it between
# non-blocking (check_msg) and blocking (setblocking(True) = wait forever). We hand
# it a socket factory whose sockets carry a timeout from creation (so connect() is
# bounded too) and map setblocking(True) to settimeout(timeout). Every failure comes
# out as OSError (umqtt's asserts and MQTTException included) and leaves the
# client closed; reconnect policy lives in core/link.py.
#
# With broker.tls the same socket does mutual TLS (port/tls.py): right after the TCP
# connect, the TLS socket is made around the plain one (umqtt 1.3.4 knows only the old
# ussl API, so the wrap is ours). The handshake's reads and writes each wait at most
# the plain socket's timeout (every port reports it as ETIMEDOUT, which ends the
# handshake). Reads and writes then go through the TLS socket, timeouts are still set on
# the plain one (a TLS socket has no settimeout), and select.poll watches the TLS socket:
# its poll also reports bytes mbedTLS has already decrypted, which the plain socket no
# longer holds (extmod/modtls_mbedtls.c). Writes are gathered while TLS is on: umqtt
# writes a PUBLISH in up to five pieces, and each write would be its own TLS record
# (29 bytes of header, nonce and tag with AES-GCM).

import gc
import select
import socket as _socket

from micropython import const
from umqtt import simple as _simple


def _nodelay(sock):
    # umqtt writes a PUBLISH in several small pieces: without TCP_NODELAY, Nagle plus
    # the peer's delayed ACK stall every QoS 1 publish by ~40 ms. The option's numbers
    # differ between stacks (lwIP on rp2 takes TCP_NODELAY = 0x40 and warns on anything
    # it does not know), so only the port's own names are used, where it has them.
    level = getattr(_socket, "IPPROTO_TCP", None)
    opt = getattr(_socket, "TCP_NODELAY", None)
    if level is None or opt is None:
        return
    try:
        sock.setsockopt(level, opt, 1)
    except (OSError, AttributeError):
        pass


class _BoundedSocket:
    def __init__(self, timeout_s, feed, tls=None, out=None):
        self._plain = _socket.socket()
        self._s = self._plain  # what reads and writes go through: the TLS socket once wrapped
        self.raw = self._s  # for select.poll
        self._t = timeout_s
        self._feed = feed  # called before each blocking call: the watchdog
        self._tls = tls  # (ssl.SSLContext, server name, release the heap reserve) or None
        self._out = out  # TLS: preallocated buffer gathering writes until a read or flush()
        self._n = 0
        self._plain.settimeout(timeout_s)
        _nodelay(self._plain)

    def connect(self, addr):
        self._feed()
        self._plain.connect(addr)
        tls = self._tls
        if tls is None:
            return
        tls[2]()  # the heap kept for mbedTLS's buffers (rp2) is theirs now
        self._feed()
        try:
            self._s = tls[0].wrap_socket(self._plain, server_hostname=tls[1])
        except Exception as e:  # ValueError: verification failed; OSError: alert, timeout
            from sensorfw.core.tls_reason import reason

            raise OSError("TLS handshake with %s failed: %s" % (tls[1], reason(e, "broker.tls.")))
        self.raw = self._s

    def setblocking(self, flag):
        if flag:
            self._plain.settimeout(self._t)
        else:
            self._plain.setblocking(False)

    def settimeout(self, t):
        self._plain.settimeout(self._t if t is None else t)

    def read(self, n):
        if self._n:
            self.flush()
        self._feed()
        return self._s.read(n)

    def readinto(self, buf, n=-1):
        if self._n:
            self.flush()
        self._feed()
        if n < 0:
            return self._s.readinto(buf)
        return self._s.readinto(buf, n)

    def write(self, buf, n=-1):
        if n < 0:
            n = len(buf)
        out = self._out
        if out is not None and self._s is not self._plain:
            if self._n + n > len(out):
                self.flush()
            if n <= len(out):
                out[self._n : self._n + n] = memoryview(buf)[:n]
                self._n += n
                return n
        self._feed()
        return self._s.write(memoryview(buf)[:n])

    def flush(self):
        """Send what write() gathered, as one TLS record."""
        n = self._n
        if n:
            self._n = 0
            self._feed()
            self._s.write(memoryview(self._out)[:n])

    def close(self):
        if self._n:  # umqtt's disconnect(): DISCONNECT written, then close()
            try:
                self.flush()
            except OSError:
                pass
        self._s.close()  # a TLS socket closes the plain one too


class _SocketModule:
    """Stands in for the `socket` module inside umqtt.simple."""

    def __init__(self, timeout_s, feed, tls=None, out=None):
        self.timeout_s = timeout_s
        self.feed = feed
        self.tls = tls
        self.out = out

    def socket(self, *args):
        return _BoundedSocket(self.timeout_s, self.feed, self.tls, self.out)

    def getaddrinfo(self, host, port, *args):
        self.feed()
        return _socket.getaddrinfo(host, port, *args)


def _nothing():
    pass


def _why(e):
    # our own messages (the TLS handshake's) as they are, anything else with its type
    a = e.args
    if isinstance(e, OSError) and len(a) == 1 and isinstance(a[0], str):
        return a[0]
    return repr(e)


# TLS write gathering (see the header): the fixed header, topic and packet id of a
# PUBLISH, a SUBSCRIBE, or a CONNECT with its will fit; a frame larger than what is
# left goes out as a record of its own after the gathered bytes.
_GATHER = const(128)


class MQTTTransport:
    """connect / publish / poll / ping / close over umqtt.simple, all bounded."""

    def __init__(  # noqa: PLR0917
        self, client_id, host, port, user=None, password=None, keepalive_s=30, timeout_ms=2000, tls=None, reserve=0
    ):
        self.client_id = client_id
        self.host = host
        self.port = port
        self.user = user
        self._password = password
        self.keepalive_s = keepalive_s
        self.timeout_s = timeout_ms / 1000
        # Fed before every blocking socket call (the app sets it to the watchdog's feed):
        # a connect is up to ~9 bounded calls in a row, longer than any watchdog.
        self.feed = _nothing
        self.client = None
        self.on_message = None
        self._poller = None
        # broker.tls: the context is made now, at start-up, before the large buffers
        self._tls = None  # (ssl.SSLContext, server name, release the reserve) or None
        self._out = None
        if tls is not None:
            from sensorfw.port.tls import context

            self._tls = (context(tls), tls["server_name"], self._release_reserve)
            self._out = bytearray(_GATHER)
        # reserve: where mbedTLS takes its record buffers from the MicroPython heap (rp2),
        # a run of that size is kept for them from start-up and handed over at each connect,
        # so a heap fragmented over weeks still has it (docs/firmware.md "TLS")
        self._reserve_n = reserve if tls is not None else 0
        self._reserve = None
        self._keep_reserve()

    def _release_reserve(self):
        if self._reserve is not None:
            self._reserve = None
            gc.collect()

    def _keep_reserve(self):
        if self._reserve_n and self._reserve is None and self.client is None:
            try:
                self._reserve = bytearray(self._reserve_n)
            except MemoryError:
                pass  # the connect then finds what it can

    def connect(self, will_topic, will_msg, subscriptions):
        """Open a session with last will; subscribe. Raises OSError on any failure."""
        self.close()
        # umqtt resolves `socket` through its module globals: give it bounded sockets
        setattr(_simple, "socket", _SocketModule(self.timeout_s, self.feed, self._tls, self._out))
        c = _simple.MQTTClient(
            self.client_id, self.host, self.port, user=self.user, password=self._password, keepalive=self.keepalive_s
        )
        c.set_callback(self._deliver)
        c.set_last_will(will_topic, will_msg, retain=True, qos=1)  # DEATH: docs/protocol.md
        self.client = c
        try:
            c.connect(clean_session=True)
            sock = c.sock
            if sock is None:
                raise OSError("umqtt connect left no socket")
            poller = select.poll()
            poller.register(sock.raw, select.POLLIN)
            self._poller = poller
            for t in subscriptions:
                c.subscribe(t, qos=1)
        except Exception as e:  # OSError, MQTTException, AssertionError, IndexError on short reads
            self.close()
            raise OSError("MQTT connect to %s:%d failed: %s" % (self.host, self.port, _why(e)))

    def _deliver(self, topic, msg):
        if self.on_message is not None:
            self.on_message(topic, msg)

    def connected(self):
        return self.client is not None

    def publish(self, topic, frame, retain=False, qos=1):
        """QoS 1 waits (bounded by the socket timeout) for the broker's PUBACK;
        messages arriving meanwhile go to on_message as usual."""
        c = self.client
        if c is None:
            raise OSError("MQTT not connected")
        try:
            c.publish(topic, frame, retain, qos)
            c.sock.flush()  # TLS, QoS 0: nothing read the gathered writes out
        except Exception as e:
            self.close()
            raise OSError("MQTT publish failed: %r" % (e,))

    def poll(self):
        """Handle every pending incoming packet without waiting."""
        c = self.client
        poller = self._poller
        if c is None or poller is None:
            return
        try:
            # wait_msg() returns None both for "nothing there" and after a PUBLISH,
            # so ask the socket whether more is waiting (up to 16 packets per call)
            n = 0
            while n < 16 and poller.poll(0):
                c.sock.setblocking(False)
                c.wait_msg()
                n += 1
            c.sock.setblocking(True)
            c.sock.flush()  # TLS: the PUBACKs of what arrived
        except Exception as e:
            self.close()
            raise OSError("MQTT receive failed: %r" % (e,))

    def ping(self):
        c = self.client
        if c is None:
            return
        try:
            c.ping()
            c.sock.flush()
        except Exception as e:
            self.close()
            raise OSError("MQTT ping failed: %r" % (e,))

    def close(self):
        c = self.client
        self.client = None
        self._poller = None
        if c is not None and c.sock is not None:
            try:
                c.sock.close()
            except Exception:
                pass
        self._keep_reserve()

    def disconnect(self):
        """Clean disconnect (no last will)."""
        c = self.client
        if c is None:
            return
        try:
            c.disconnect()
        except Exception:
            pass
        self.client = None
        self._keep_reserve()
