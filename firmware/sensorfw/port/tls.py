# The device's TLS identity (config.json broker.tls), for MQTT over mutual TLS.
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
# mbedTLS checks the broker certificate's dates against the board's clock, which starts at
# 2000-01-01 (esp32) or 2021-01-01 (rp2, ports/rp2/main.c) without NTP: a certificate
# issued since then is "not yet valid" and every handshake fails. not_before() gives the
# board a floor for its clock: the device certificate's own start, a time that has passed.

import ssl


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
