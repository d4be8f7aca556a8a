# Runs on the MicroPython unix port (bench/bench_tls.py starts it): the firmware's own MQTT
# transport (port/mqtt.py, port/tls.py) over plain TCP and over mutual TLS, interleaved
# round by round, each connection through the bench's counting relay (one relay port per
# mode). Prints one line per connection ("CONN <label>", so the relay's byte counts can be
# matched to it) and a RESULT dict:
#   times (us): "<mode>_connect" (TCP + TLS handshake + CONNECT/CONNACK + two SUBACKs),
#     "tls_handshake" (TCP connect + handshake alone), "<mode>_publish" (one QoS 1 DATA
#     frame to its PUBACK, the mean of a session's frames): a list per round;
#   heap (bytes, gc.mem_alloc after gc.collect): "<mode>_transport" made, "<mode>_session"
#     while connected, "<mode>_connect_garbage" allocated by a connect without collecting,
#     "<mode>_reconnect_growth" over "reconnects" more sessions (a leak would show).
# argv: plain_port tls_port cert_dir rounds frames
import gc
import sys
import time

sys.path.append(".frozen")  # the unix port's ssl.py (MICROPYPATH leaves it out)

import socket as _real


class _Socket:
    """The unix port's socket module lacks the TCP_NODELAY names the esp32 port has (from
    1.23): without them port/mqtt.py leaves Nagle on, and every QoS 1 exchange would wait
    for the peer's delayed ACK (40 ms), hiding what is measured."""

    socket = _real.socket
    getaddrinfo = _real.getaddrinfo
    IPPROTO_TCP = 6
    TCP_NODELAY = 1


sys.modules["socket"] = _Socket()

from sensorfw.port.mqtt import MQTTTransport  # noqa: E402
from sensorfw.port.tls import context  # noqa: E402

PLAIN_PORT = int(sys.argv[1])
TLS_PORT = int(sys.argv[2])
CERTS = sys.argv[3]
ROUNDS = int(sys.argv[4])
FRAMES = int(sys.argv[5])
NAME = "gateway.plant1"
TLS = {"ca": CERTS + "/ca.der", "cert": CERTS + "/device.der", "key": CERTS + "/device.key", "server_name": NAME}
FRAME = bytearray(27 + 2 * 6 * 32)  # a DATA frame: 6 channels x 32 int16 samples
for i in range(len(FRAME)):
    FRAME[i] = (i * 37) & 0xFF
T_DATA = b"el/s1/dev1/data"
T_DEATH = b"el/s1/dev1/death"
SUBS = (b"el/s1/dev1/ack", b"el/s1/dev1/cmd")
WILL = bytes(17)

out = {}


def put(key, value):
    out.setdefault(key, []).append(value)


def heap():
    gc.collect()
    return gc.mem_alloc()


def transport(mode, gather=True):
    if mode == "plain":
        return MQTTTransport("dev1", "127.0.0.1", PLAIN_PORT, None, None, 30, 2000)
    t = MQTTTransport("dev1", "127.0.0.1", TLS_PORT, None, None, 30, 2000, TLS)
    if not gather:
        t._tls.out = bytearray(0)  # measure what write gathering saves (bench only)
    return t


def session(label, t, frames, record):
    """One connection: connect, publish frames (QoS 1), close."""
    print("CONN " + label)
    h0 = heap()
    t0 = time.ticks_us()
    t.connect(T_DEATH, WILL, SUBS)
    dt = time.ticks_diff(time.ticks_us(), t0)
    garbage = gc.mem_alloc() - h0
    t.publish(T_DEATH, b"", True)  # as App._open_session: clear the retained DEATH
    if record:
        put(label + "_connect", dt)
        put(label + "_connect_garbage", garbage)
        put(label + "_session", heap() - h0)
    t0 = time.ticks_us()
    for _ in range(frames):
        t.publish(T_DATA, FRAME)
    if record and frames:
        put(label + "_publish", time.ticks_diff(time.ticks_us(), t0) // frames)
    t.close()


def handshake_only(ctx):
    print("CONN handshake")
    s = _real.socket()
    s.settimeout(2)
    s.setsockopt(6, 1, 1)  # TCP_NODELAY, as port/mqtt.py sets it
    t0 = time.ticks_us()
    s.connect(_real.getaddrinfo("127.0.0.1", TLS_PORT)[0][-1])
    t = ctx.wrap_socket(s, server_hostname=NAME)
    put("tls_handshake", time.ticks_diff(time.ticks_us(), t0))
    t.close()


h0 = heap()
plain = transport("plain")
out["plain_transport"] = heap() - h0
h0 = heap()
tls = transport("tls")  # imports port/tls.py and ssl, reads the DER files, makes the context
out["tls_transport"] = heap() - h0
nogather = transport("tls", gather=False)
ctx = context(TLS)
for r in range(ROUNDS):
    order = ("plain", "tls") if r % 2 == 0 else ("tls", "plain")
    for mode in order:
        t = plain if mode == "plain" else tls
        session(mode, t, 0, False)  # a session that only opens: the relay counts its bytes
        session(mode, t, FRAMES, True)
    handshake_only(ctx)
session("nogather", nogather, 0, False)
session("nogather", nogather, FRAMES, False)
# leaks: the heap before and after more reconnects of each mode, nothing recorded meanwhile
for mode in ("plain", "tls"):
    t = plain if mode == "plain" else tls
    session("leak-" + mode, t, FRAMES, False)
    h0 = heap()
    for _ in range(3 * ROUNDS + 5):
        session("leak-" + mode, t, FRAMES, False)
    out[mode + "_reconnect_growth"] = heap() - h0
out["reconnects"] = 3 * ROUNDS + 5
print("RESULT", out)
