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
# With broker.tls the factory makes port/tls.py's TLSSocket instead (mutual TLS around
# the same bounded socket); that code is loaded only then.

import select
import socket as _socket

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
    def __init__(self, timeout_s, feed):
        self._s = _socket.socket()
        self.raw = self._s  # for select.poll
        self._t = timeout_s
        self._feed = feed  # called before each blocking call: the watchdog
        self._s.settimeout(timeout_s)
        _nodelay(self._s)

    def connect(self, addr):
        self._feed()
        self._s.connect(addr)

    def setblocking(self, flag):
        if flag:
            self._s.settimeout(self._t)
        else:
            self._s.setblocking(False)

    def settimeout(self, t):
        self._s.settimeout(self._t if t is None else t)

    def read(self, n):
        self._feed()
        return self._s.read(n)

    def readinto(self, buf, n=-1):
        self._feed()
        if n < 0:
            return self._s.readinto(buf)
        return self._s.readinto(buf, n)

    def write(self, buf, n=-1):
        self._feed()
        if n < 0:
            return self._s.write(buf)
        return self._s.write(memoryview(buf)[:n])

    def flush(self):
        pass  # TLSSocket sends its gathered writes here

    def close(self):
        self._s.close()


class _SocketModule:
    """Stands in for the `socket` module inside umqtt.simple."""

    def __init__(self, timeout_s, feed, tls=None):
        self.timeout_s = timeout_s
        self.feed = feed
        self.tls = tls  # port/tls.py's TLS (the context, its socket class) or None

    def socket(self, *args):
        if self.tls is not None:
            return self.tls.socket(self.timeout_s, self.feed)
        return _BoundedSocket(self.timeout_s, self.feed)

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
        # broker.tls: the context is made now, at start-up, before the large buffers;
        # reserve: see port/tls.py
        self._tls = None
        if tls is not None:
            from sensorfw.port.tls import TLS

            self._tls = TLS(tls, reserve)

    def connect(self, will_topic, will_msg, subscriptions):
        """Open a session with last will; subscribe. Raises OSError on any failure."""
        self.close()
        # umqtt resolves `socket` through its module globals: give it bounded sockets
        setattr(_simple, "socket", _SocketModule(self.timeout_s, self.feed, self._tls))
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
        if self._tls is not None:
            self._tls.keep()

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
        if self._tls is not None:
            self._tls.keep()
