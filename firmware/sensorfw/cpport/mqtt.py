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

import adafruit_minimqtt.adafruit_minimqtt as _mqtt

_AGAIN = (11, 110, 116)  # EAGAIN, ETIMEDOUT (Linux, lwIP)


class _Socket:
    """The client's socket: the first read after arm() does not wait; all others wait
    up to timeout_s (the rest of a packet that has begun to arrive)."""

    def __init__(self, sock, timeout_s):
        self.sock = sock
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

    def send(self, data):
        return self.sock.send(data)

    def settimeout(self, t):
        self.sock.settimeout(t)

    def close(self):
        self.sock.close()


def _nothing():
    pass


class MQTTTransport:
    """connect / publish / poll / ping / close over MiniMQTT, all bounded."""

    def __init__(  # noqa: PLR0917
        self, pool, client_id, host, port, user=None, password=None, keepalive_s=30, timeout_ms=2000
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
                is_ssl=False,
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
            raise OSError("MQTT connect to %s:%d failed: %r" % (self.host, self.port, e))

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
