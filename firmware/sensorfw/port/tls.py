# MQTT over mutual TLS (config.json broker.tls), loaded only when a board uses it.
#
# The device key, its certificate and the site CA are DER files on the board (written by
# the flash tool). They are read once, at start-up, into one ssl.SSLContext that every
# connection reuses: mbedTLS parses them into its own structures, so the file contents
# are garbage as soon as the context holds them, and a reconnect parses nothing again.
# A handshake then allocates only the session (docs/firmware.md "TLS").
#
# MicroPython's ssl.SSLContext defaults to CERT_NONE (ssl.py in micropython-lib):
# CERT_REQUIRED is set here, and wrap_socket() refuses to verify without a server name.
#
# TLSSocket is port/mqtt.py's bounded socket with TLS: right after the TCP connect the
# TLS socket is made around the plain one (umqtt 1.3.4 knows only the old ussl API, so
# the wrap is ours). The handshake's reads and writes each wait at most the plain
# socket's timeout (every port reports it as ETIMEDOUT, which ends the handshake). Reads
# and writes then go through the TLS socket, timeouts are still set on the plain one (a
# TLS socket has no settimeout), and select.poll watches the TLS socket: its poll also
# reports bytes mbedTLS has already decrypted, which the plain socket no longer holds
# (extmod/modtls_mbedtls.c). Writes are gathered: umqtt writes a PUBLISH in up to five
# pieces, and each write would be its own TLS record (29 bytes of header, nonce and tag
# with AES-GCM).
#
# Where mbedTLS takes its record buffers from the MicroPython heap (rp2), a run of their
# size (the profile's TLS_HEAP_RESERVE) is kept from start-up and handed over just before
# each handshake, so a heap fragmented over weeks still has it.
#
# mbedTLS checks the broker certificate's dates against the board's clock, which starts at
# 2000-01-01 (esp32) or 2021-01-01 (rp2, ports/rp2/main.c) without NTP: a certificate
# issued since then is "not yet valid" and every handshake fails. not_before() gives the
# board a floor for its clock: the device certificate's own start, a time that has passed.

import gc
import ssl
import time

from micropython import const

from sensorfw.port.mqtt import _BoundedSocket

# the fixed header, topic and packet id of a PUBLISH, a SUBSCRIBE, or a CONNECT with its
# will fit; a frame larger than what is left goes out as a record of its own after them
_GATHER = const(128)


def _read(tls, key):
    path = tls[key]
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        raise OSError(
            "config.json: 'broker.tls.%s' names %r, which cannot be read: write the device's "
            "certificates to the board with the flash tool" % (key, path)
        )


def context(tls):
    """An ssl.SSLContext for the validated broker.tls section: the device's key and
    certificate, the site CA, the broker's certificate required. Raises OSError (a file
    is missing) or ValueError (a file is not what its key says), naming the key."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        ctx.load_cert_chain(_read(tls, "cert"), _read(tls, "key"))
    except ValueError as e:  # mbedTLS: "invalid key" or "invalid cert"
        which = "key" if "key" in str(e) else "cert"
        raise ValueError(
            "config.json: 'broker.tls.%s' (%s) is not a valid %s: %s (the flash tool writes DER files)"
            % (which, tls[which], "EC private key" if which == "key" else "X.509 certificate", e)
        )
    try:
        ctx.load_verify_locations(cadata=_read(tls, "ca"))
    except ValueError as e:
        raise ValueError(
            "config.json: 'broker.tls.ca' (%s) is not a valid X.509 certificate: %s (the flash tool "
            "writes the site CA as DER)" % (tls["ca"], e)
        )
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _tlv(der, i):
    """(start of the value, its length) of the DER element at i."""
    n = der[i + 1]
    i += 2
    if n & 0x80:
        k = n & 0x7F
        n = 0
        for _ in range(k):
            n = (n << 8) | der[i]
            i += 1
    return i, n


def clock_floor(rtc, path):
    """Move the RTC (machine.RTC()) forward to the notBefore of the device certificate at
    path if it is earlier (mbedTLS checks certificate dates against it). True if set."""
    t = not_before(path)
    if t is None:
        return False
    now = rtc.datetime()  # (year, month, day, weekday, hours, minutes, seconds, subseconds)
    if (now[0], now[1], now[2], now[4], now[5], now[6]) >= t:
        return False
    weekday = time.localtime(time.mktime((t[0], t[1], t[2], t[3], t[4], t[5], 0, 0)))[6]
    rtc.datetime((t[0], t[1], t[2], weekday, t[3], t[4], t[5], 0))
    return True


def not_before(path):
    """The notBefore of the DER certificate at path as (year, month, day, hour, minute,
    second) UTC, or None when it cannot be read."""
    try:
        with open(path, "rb") as f:
            der = f.read()
        i, _ = _tlv(der, 0)  # Certificate
        i, _ = _tlv(der, i)  # tbsCertificate
        if der[i] == 0xA0:  # [0] version
            j, n = _tlv(der, i)
            i = j + n
        for _ in range(3):  # serialNumber, signature, issuer
            j, n = _tlv(der, i)
            i = j + n
        i, _ = _tlv(der, i)  # validity
        tag = der[i]
        j, n = _tlv(der, i)
        t = der[j : j + n].decode()
        if tag == 0x17:  # UTCTime YYMMDDHHMMSSZ
            y = int(t[0:2])
            t = ("20" if y < 50 else "19") + t
        return (int(t[0:4]), int(t[4:6]), int(t[6:8]), int(t[8:10]), int(t[10:12]), int(t[12:14]))
    except (OSError, IndexError, ValueError, UnicodeError):
        return None


class TLS:
    """What the transport keeps for TLS: the context, the server name, the write buffer
    its sockets share, the heap reserve."""

    def __init__(self, tls, reserve=0):
        self.ctx = context(tls)
        self.name = tls["server_name"]
        self.out = bytearray(_GATHER)
        self._n = reserve
        self._reserve = None
        self.keep()

    def socket(self, timeout_s, feed):
        return TLSSocket(timeout_s, feed, self)

    def keep(self):
        """Take the reserve back (no session holds the heap it was)."""
        if self._n and self._reserve is None:
            try:
                self._reserve = bytearray(self._n)
            except MemoryError:
                pass  # the next connect finds what it can

    def release(self):
        if self._reserve is not None:
            self._reserve = None
            gc.collect()  # the run is free for mbedTLS now


class TLSSocket(_BoundedSocket):
    def __init__(self, timeout_s, feed, tls):
        _BoundedSocket.__init__(self, timeout_s, feed)
        self._plain = self._s  # the TLS socket replaces _s once the handshake is done
        self._tls = tls
        self._n = 0  # bytes gathered in tls.out

    def connect(self, addr):
        _BoundedSocket.connect(self, addr)
        tls = self._tls
        tls.release()
        self._feed()
        try:
            self._s = tls.ctx.wrap_socket(self._plain, server_hostname=tls.name)
        except Exception as e:  # ValueError: verification failed; OSError: alert, timeout
            from sensorfw.core.tls_reason import reason

            raise OSError("TLS handshake with %s failed: %s" % (tls.name, reason(e, "broker.tls.")))
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
        return _BoundedSocket.read(self, n)

    def readinto(self, buf, n=-1):
        if self._n:
            self.flush()
        return _BoundedSocket.readinto(self, buf, n)

    def write(self, buf, n=-1):
        if n < 0:
            n = len(buf)
        out = self._tls.out
        if self._n + n > len(out):
            self.flush()
        if n > len(out):
            self._feed()
            return self._s.write(memoryview(buf)[:n])
        out[self._n : self._n + n] = memoryview(buf)[:n]
        self._n += n
        return n

    def flush(self):
        """Send what write() gathered, as one TLS record."""
        n = self._n
        if n:
            self._n = 0
            self._feed()
            self._s.write(memoryview(self._tls.out)[:n])

    def close(self):
        if self._n:  # umqtt's disconnect(): DISCONNECT written, then close()
            try:
                self.flush()
            except OSError:
                pass
        self._s.close()  # a TLS socket closes the plain one too
