"""MQTT topic scheme `<prefix>/<site>/<device>/<kind>` (all runtimes).

Each of prefix, site and device is 1..32 characters of [A-Za-z0-9_-] (no
'/', no MQTT wildcards '+' '#', no '$' so nothing collides with broker
topics). See docs/protocol.md "MQTT topics" for QoS and retain per kind.
"""

from shared_protocol import ACK, BIRTH, CMD, DATA, DEATH, EVENT, HEALTH, LOSS
from shared_protocol.errors import BadTopic

DEFAULT_PREFIX = "el"
MAX_ID = 32
DEVICE_KINDS = ("birth", "data", "event", "health", "death", "loss")  # device -> gateway
GATEWAY_KINDS = ("ack", "cmd")  # gateway -> device
KINDS = DEVICE_KINDS + GATEWAY_KINDS

KIND_OF_TYPE = {
    BIRTH: "birth",
    DATA: "data",
    EVENT: "event",
    HEALTH: "health",
    DEATH: "death",
    ACK: "ack",
    CMD: "cmd",
    LOSS: "loss",
}
TYPE_OF_KIND = {
    "birth": BIRTH,
    "data": DATA,
    "event": EVENT,
    "health": HEALTH,
    "death": DEATH,
    "ack": ACK,
    "cmd": CMD,
    "loss": LOSS,
}

# (qos, retain) per kind; the reasons are in docs/protocol.md.
PUBLISH_OPTIONS = {
    "birth": (1, True),
    "data": (1, False),
    "event": (1, False),
    "health": (1, True),
    "death": (1, True),
    "ack": (1, False),
    "cmd": (1, False),
    "loss": (1, False),
}

_ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"


def valid_id(text):
    """True if text is 1..32 characters of [A-Za-z0-9_-]."""
    if not isinstance(text, str) or not 1 <= len(text) <= MAX_ID:
        return False
    return all(ch in _ID_CHARS for ch in text)


def _check_id(text, what):
    if not valid_id(text):
        raise BadTopic("%s %r must be 1..%d characters of A-Z a-z 0-9 _ -" % (what, text, MAX_ID))


def topic(prefix, site, device, kind):
    """Build `<prefix>/<site>/<device>/<kind>`; raises BadTopic."""
    _check_id(prefix, "prefix")
    _check_id(site, "site")
    _check_id(device, "device")
    if kind not in TYPE_OF_KIND:
        raise BadTopic("kind %r is not one of %s" % (kind, ", ".join(KINDS)))
    return prefix + "/" + site + "/" + device + "/" + kind


def levels(text):
    """Split any topic of the scheme into (prefix, site, device, kind), checking the ids
    but not the kind: also the gateway's own topics (`<device>/alert`, `_gateway/status`,
    `_gateway/summary`). Raises BadTopic."""
    if isinstance(text, (bytes, bytearray, memoryview)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeError:
            raise BadTopic("topic is not UTF-8") from None
    if not isinstance(text, str):
        raise BadTopic("topic must be str or bytes, got %r" % (text,))
    parts = text.split("/")
    if len(parts) != 4:
        raise BadTopic("topic %r must have 4 levels <prefix>/<site>/<device>/<kind>" % text)
    prefix, site, device, kind = parts
    _check_id(prefix, "prefix")
    _check_id(site, "site")
    _check_id(device, "device")
    _check_id(kind, "kind")
    return prefix, site, device, kind


def parse_topic(text):
    """Split a device topic into (prefix, site, device, kind), kind one of KINDS;
    raises BadTopic."""
    prefix, site, device, kind = levels(text)
    if kind not in TYPE_OF_KIND:
        raise BadTopic(
            "topic %r: kind %r is not one of %s" % ("/".join((prefix, site, device, kind)), kind, ", ".join(KINDS))
        )
    return prefix, site, device, kind


def subscription(prefix=DEFAULT_PREFIX, site="+", device="+", kind="+"):
    """Subscription filter, e.g. subscription("el", "+", "+", "data") -> "el/+/+/data"."""
    for value, what in ((prefix, "prefix"), (site, "site"), (device, "device")):
        if value != "+":
            _check_id(value, what)
    if kind not in ("+", "#") and kind not in TYPE_OF_KIND:
        raise BadTopic("kind %r is not one of %s" % (kind, ", ".join(KINDS)))
    return prefix + "/" + site + "/" + device + "/" + kind
