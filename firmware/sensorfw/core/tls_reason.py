# Why a TLS handshake with the broker failed, in words a user can act on: one rule for
# MicroPython (port/mqtt.py) and CircuitPython (cpport/mqtt.py), whose ssl modules report
# the same mbedTLS failures differently. Loaded only when a handshake fails.
#
# MicroPython: a refused broker certificate is ValueError(the reasons, one per line); the
# broker's refusal arrives as an alert or a closed connection (OSError EPIPE, ECONNRESET
# or an mbedTLS code with its name). CircuitPython: OSError(code, "X509 - Certificate
# verification failed...; reason; reason"); a key or certificate its mbedTLS cannot parse
# is ValueError("invalid key") / ("invalid cert") at each connect.

_CLOSED = (32, 103, 104)  # EPIPE, ECONNABORTED, ECONNRESET


def reason(e, keys):
    """keys: how the user names the TLS settings, "broker.tls." (config.json) or
    "EDGELINE_BROKER_TLS_" (settings.toml)."""
    upper = keys[-1] == "_"
    ca = keys + ("CA" if upper else "ca")
    name = keys + ("SERVER_NAME" if upper else "server_name")
    a = e.args
    text = str(a[1]) if isinstance(e, OSError) and len(a) > 1 else str(e)
    if isinstance(e, ValueError) and text in ("invalid key", "invalid cert"):
        which = keys + (text[8:].upper() if upper else text[8:])
        return "%s: the device's %s cannot be parsed: write it again with the flash tool" % (text, which)
    if isinstance(e, ValueError) or "verification failed" in text:
        why = "; ".join([w for w in text.replace("; ", "\n").split("\n") if w and not w.startswith("X509 - ")])
        return "the broker's certificate was refused (%s): check %s and %s" % (why, ca, name)
    code = a[0] if isinstance(e, OSError) and a else None
    if code == 110:  # ETIMEDOUT
        return "no answer within the broker timeout"
    if code in _CLOSED or "ALERT" in text or "EOF" in text:
        return (
            "%s: the broker ended the handshake: it refuses this device's certificate (expired, revoked or "
            "not from the site CA?), or the port is not its TLS listener" % (text if len(a) > 1 else "errno %d" % code)
        )
    return repr(e)
