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
