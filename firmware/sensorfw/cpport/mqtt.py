# MQTT transport on CircuitPython: adafruit_minimqtt (pinned, tools/fetch_upy_deps.py)
# over socketpool, with the interface of port/mqtt.MQTTTransport: every call bounded by
# broker.timeout_ms, every failure an OSError that leaves the client closed.
#
# What MiniMQTT 8.1.0 does by itself, and how it is bounded here (docs/circuitpython.md):
# - socket_timeout bounds the TCP connect and each socket wait; recv_timeout (> it) bounds
#   a CONNACK / SUBACK / PUBACK wait. Reads wait timeout/2, a wait for a reply ends after
#   timeout: a QoS 1 publish (send, then PUBACK) stays within the 2 x timeout the watchdog
#   rule of core/config.py allows for one call.
# - loop() waits at least socket_timeout and pings on its own; CircuitPython has no
#   select. poll() instead reads the first byte of each packet without waiting (_Socket).
# - ping() waits up to keep_alive for the PINGRESP: keep_alive is lowered around it.
# - topics are str and payloads bytes (not memoryview); closing goes through
#   _close_socket(), or adafruit_connection_manager refuses the next connect.
# - broker.tls (docs/circuitpython.md "TLS"): is_ssl with an ssl.SSLContext made once at
#   start-up. CircuitPython's ssl differs from MicroPython's: load_cert_chain() takes file
#   PATHS (read at once, parsed by mbedTLS at every connect with a length one byte past the
#   data, which a DER key fails), load_verify_locations() takes the CA as a PEM str (read
#   up to its first NUL byte): every file is PEM. The connection manager wraps the socket
#   with server_hostname = the broker's host; _NamedContext makes it broker.tls.server_name.

import gc

import adafruit_minimqtt.adafruit_minimqtt as _mqtt

_AGAIN = (11, 110, 116)  # EAGAIN, ETIMEDOUT (Linux, lwIP)


class _Proxy:
    """A socket passed through: what MiniMQTT calls, handed to ``sock``."""

    def __init__(self, sock):
        self.sock = sock

    def recv_into(self, buf, nbytes=0):
        return self.sock.recv_into(buf, nbytes)

    def send(self, data):
        return self.sock.send(data)

    def settimeout(self, t):
        self.sock.settimeout(t)

    def close(self):
        self.sock.close()


class _Socket(_Proxy):
    """The client's socket: the first read after arm() does not wait; all others wait
    up to timeout_s (the rest of a packet that has begun to arrive)."""

    def __init__(self, sock, timeout_s):
        _Proxy.__init__(self, sock)
        self.timeout_s = timeout_s
        self.first = False

    def arm(self):
        self.first = True

    def recv_into(self, buf, nbytes=0):
        if not self.first:
            return self.sock.recv_into(buf, nbytes)
        self.first = False
        self.sock.settimeout(0)
        try:
            return self.sock.recv_into(buf, nbytes)
        finally:
            self.sock.settimeout(self.timeout_s)


def _nothing():
    pass


def _pem(tls, key, label):
    """Check that a broker.tls file is there and PEM; an error naming its settings key."""
    path = tls[key]
    name = "EDGELINE_BROKER_TLS_" + key.upper()
    try:
        with open(path, "rb") as f:
            head = f.read(40)
    except OSError:
        raise OSError(
            "settings.toml: %s names %r, which cannot be read: copy the device's certificates to the "
            "drive with the flash tool's circuitpy command" % (name, path)
        )
    if not head.startswith(b"-----BEGIN ") or label not in head:
        raise ValueError(
            "settings.toml: %s (%s) must be a PEM %s: CircuitPython's ssl reads PEM files only "
            "(the flash tool's circuitpy command writes them)" % (name, path, label.decode())
        )


def tls_context(tls):
    """(ssl.SSLContext with the device's key and certificate and the site CA, the CA's
    PEM text). CircuitPython's context keeps a pointer to that text, not the object: the
    caller keeps it too."""
    import ssl

    _pem(tls, "cert", b"CERTIFICATE")
    _pem(tls, "key", b"PRIVATE KEY")
    _pem(tls, "ca", b"CERTIFICATE")
    ctx = ssl.create_default_context()
    ctx.load_cert_chain(tls["cert"], tls["key"])
    with open(tls["ca"]) as f:
        ca = f.read()
    ctx.load_verify_locations(cadata=ca)
    return ctx, ca


class _NamedContext:
    """The SSL context the connection manager is given: the broker's certificate must
    carry broker.tls.server_name, whatever host the socket connects to."""

    def __init__(self, tls, reserve):
        self._ctx, self._ca = tls_context(tls)
        self.server_name = tls["server_name"]
        self.error = None  # why the last connect failed (MiniMQTT says only "Connect failure")
        # reserve: a run of heap kept from start-up for what mbedTLS allocates at each
        # connect where it uses the CircuitPython heap (raspberrypi port): the parsed key and
        # certificates and the record buffers (docs/circuitpython.md "TLS")
        self._n = reserve
        self._reserve = None
        self.keep()

    def keep(self):
        if self._n and self._reserve is None:
            try:
                self._reserve = bytearray(self._n)
            except MemoryError:
                pass  # the connect then finds what it can

    def wrap_socket(self, sock, server_hostname=None):
        self.error = None
        if self._reserve is not None:
            self._reserve = None
            gc.collect()  # the reserved run is mbedTLS's now
        return _TLSSocket(self._ctx.wrap_socket(sock, server_hostname=self.server_name), self)


class _TLSSocket(_Proxy):
    """The TLS socket handed to MiniMQTT: notes why connect() (TCP and handshake) failed."""

    def __init__(self, sock, ctx):
        _Proxy.__init__(self, sock)
        self._ctx = ctx

    def connect(self, address):
        try:
            self.sock.connect(address)
        except Exception as e:
            self._ctx.error = e
            raise


class MQTTTransport:
    """connect / publish / poll / ping / close over MiniMQTT, all bounded."""

    def __init__(  # noqa: PLR0917
        self,
        pool,
        client_id,
        host,
        port,
        user=None,
        password=None,
        keepalive_s=30,
        timeout_ms=2000,
        tls=None,
        reserve=0,
    ):
        self.pool = pool  # socketpool.SocketPool(wifi.radio)
        self.client_id = client_id
        self.host = host
        self.port = port
        self.user = user
        self._password = password
        self.keepalive_s = keepalive_s
        self.timeout_s = timeout_ms / 1000
        self.feed = _nothing  # the watchdog's feed, before every call that may wait
        self.client = None  # type: _mqtt.MQTT | None
        self.on_message = None
        self._sock = None  # type: _Socket | None
        self._topics = {}
        # broker.tls: checked and loaded now, at start-up, before the large buffers
        self._ssl = None if tls is None else _NamedContext(tls, reserve)

    def _topic(self, t):
        s = self._topics.get(t)
        if s is None:
            s = self._topics[t] = t.decode() if isinstance(t, bytes) else t
        return s

    def connect(self, will_topic, will_msg, subscriptions):
        """Open a session with last will; subscribe. Raises OSError on any failure."""
        self.close()
        self.feed()
        t = self.timeout_s
        try:
            c = _mqtt.MQTT(
                broker=self.host,
                port=self.port,
                username=self.user,
                password=self._password,
                client_id=self.client_id,
                is_ssl=self._ssl is not None,
                ssl_context=self._ssl,
                keep_alive=self.keepalive_s,
                socket_pool=self.pool,
                socket_timeout=t / 2,
                recv_timeout=t,
                connect_retries=1,  # retries and backoff: core/link.py
                use_binary_mode=True,
            )
            c.will_set(self._topic(will_topic), bytes(will_msg), True, 1)  # DEATH, docs/protocol.md
            c.on_message = self._deliver
            self.client = c
            c.connect(clean_session=True)
            self._sock = _Socket(c._sock, t / 2)
            c._sock = self._sock  # type: ignore[assignment]  # MiniMQTT's private socket, wrapped on purpose
            for s in subscriptions:
                self.feed()
                c.subscribe(self._topic(s), 1)
        except Exception as e:  # MMQTTException, OSError, RuntimeError from the connection manager
            self.close()
            why = repr(e)
            if self._ssl is not None and self._ssl.error is not None:
                from sensorfw.core.tls_reason import reason

                why = "TLS handshake with %s failed: %s" % (
                    self._ssl.server_name,
                    reason(self._ssl.error, "EDGELINE_BROKER_TLS_"),
                )
            raise OSError("MQTT connect to %s:%d failed: %s" % (self.host, self.port, why))

    def _deliver(self, _client, topic, msg):
        if self.on_message is not None:
            self.on_message(topic, msg)

    def connected(self):
        return self.client is not None

    def publish(self, topic, frame, retain=False, qos=1):
        """QoS 1 waits (bounded) for the broker's PUBACK; messages arriving meanwhile go
        to on_message as usual."""
        c = self.client
        if c is None:
            raise OSError("MQTT not connected")
        self.feed()
        try:
            c.publish(self._topic(topic), bytes(frame), retain, qos)
        except Exception as e:
            self.close()
            raise OSError("MQTT publish failed: %r" % (e,))

    def poll(self):
        """Handle the incoming packets already there (up to 16) without waiting."""
        c = self.client
        s = self._sock
        if c is None or s is None:
            return
        try:
            n = 0
            while n < 16:
                s.arm()
                if c._wait_for_msg() is None:
                    break
                n += 1
        except Exception as e:
            self.close()
            raise OSError("MQTT receive failed: %r" % (e,))
        finally:
            s.first = False

    def ping(self):
        c = self.client
        if c is None:
            return
        self.feed()
        c.keep_alive = max(1, int(self.timeout_s + 0.999))  # the PINGRESP wait, not the session's
        try:
            c.ping()
        except Exception as e:
            self.close()
            raise OSError("MQTT ping failed: %r" % (e,))
        finally:
            c.keep_alive = self.keepalive_s

    def _release(self, c):
        # The connection manager knows the socket it made, not the wrapper.
        if self._sock is not None:
            c._sock = self._sock.sock
        self._sock = None
        try:
            c._close_socket()
        except Exception:
            pass

    def close(self):
        c = self.client
        self.client = None
        if c is not None:
            self._release(c)
        if self._ssl is not None:
            self._ssl.keep()

    def disconnect(self):
        """Clean disconnect (no last will)."""
        c = self.client
        if c is None:
            return
        self.client = None
        if self._sock is not None:
            c._sock = self._sock.sock
            self._sock = None
        try:
            c.disconnect()
        except Exception:
            try:
                c._close_socket()
            except Exception:
                pass
        if self._ssl is not None:
            self._ssl.keep()
