"""Topics the gateway publishes besides ACK and CMD (gateway only, so a board never loads it):

    <prefix>/<site>/<device>/alert                     an alert record of one device (JSON)
    <prefix>/<site>/_gateway/<what>                    the gateway's own: status, summary (JSON)
    <prefix>/<site>/_state/<device>/availability       "online" / "offline" (retained)
    <prefix>/<site>/_state/<device>/state              the device's JSON state (retained)
    <prefix>/<site>/_state/<device>/alert/<pipeline>   alert state of one pipeline (JSON, retained)
    <prefix>/<site>/_state/<device>/output/<n>/set     "ON" / "OFF" from Home Assistant (to the gateway)
    <discovery_prefix>/<component>/<node_id>/<object_id>/config   Home Assistant discovery

The local state topics have five or more levels under ``_state``: the gateway's ingest
subscription (``<prefix>/<site>/+/<kind>``, four levels) never matches them, and the broker's
ACL lets no device write there. The first two are parsed with topics.levels(). See
docs/gateway.md "Topics the gateway publishes" and "Local state topics".
"""

from shared_protocol.errors import BadTopic
from shared_protocol.topics import _check_id

GATEWAY_ID = "_gateway"  # the device level of the gateway's own topics
GATEWAY_WHAT = ("status", "summary", "updates")
STATE_ID = "_state"  # the level under which the local state topics live
STATE_WHAT = ("availability", "state")
HA_COMPONENTS = ("sensor", "binary_sensor", "switch")
MAX_OUTPUT = 255
_HA_ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"


def alert_topic(prefix, site, device):
    """`<prefix>/<site>/<device>/alert`; raises BadTopic."""
    _check_id(prefix, "prefix")
    _check_id(site, "site")
    _check_id(device, "device")
    return prefix + "/" + site + "/" + device + "/alert"


def gateway_topic(prefix, site, what):
    """`<prefix>/<site>/_gateway/<what>`, what one of GATEWAY_WHAT; raises BadTopic."""
    _check_id(prefix, "prefix")
    _check_id(site, "site")
    if what not in GATEWAY_WHAT:
        raise BadTopic("gateway topic %r is not one of %s" % (what, ", ".join(GATEWAY_WHAT)))
    return prefix + "/" + site + "/" + GATEWAY_ID + "/" + what


def state_root(prefix, site):
    """`<prefix>/<site>/_state`: every local state topic is below it (the ACL grants `<root>/#`)."""
    _check_id(prefix, "prefix")
    _check_id(site, "site")
    return prefix + "/" + site + "/" + STATE_ID


def state_topic(prefix, site, device, what):
    """`<prefix>/<site>/_state/<device>/<what>`, what one of STATE_WHAT; raises BadTopic."""
    _check_id(device, "device")
    if what not in STATE_WHAT:
        raise BadTopic("state topic %r is not one of %s" % (what, ", ".join(STATE_WHAT)))
    return state_root(prefix, site) + "/" + device + "/" + what


def alert_state_topic(prefix, site, device, pipeline):
    """`<prefix>/<site>/_state/<device>/alert/<pipeline>`; raises BadTopic."""
    _check_id(device, "device")
    _check_id(pipeline, "pipeline")
    return state_root(prefix, site) + "/" + device + "/alert/" + pipeline


def output_command_topic(prefix, site, device, output):
    """`<prefix>/<site>/_state/<device>/output/<n>/set` (a switch's command topic); raises BadTopic."""
    _check_id(device, "device")
    if not isinstance(output, int) or isinstance(output, bool) or not 0 <= output <= MAX_OUTPUT:
        raise BadTopic("output %r must be an integer 0..%d" % (output, MAX_OUTPUT))
    return state_root(prefix, site) + "/" + device + "/output/" + str(output) + "/set"


def output_command_filter(prefix, site):
    """The subscription that matches every output command topic of the site."""
    return state_root(prefix, site) + "/+/output/+/set"


def parse_output_command(prefix, site, text):
    """(device, output) of an output command topic of this site; raises BadTopic."""
    root = state_root(prefix, site) + "/"
    if not isinstance(text, str) or not text.startswith(root):
        raise BadTopic("topic %r is not under %s" % (text, root))
    parts = text[len(root) :].split("/")
    if len(parts) != 4 or parts[1] != "output" or parts[3] != "set":
        raise BadTopic("topic %r is not %s<device>/output/<n>/set" % (text, root))
    device, number = parts[0], parts[2]
    _check_id(device, "device")
    if not number.isdigit() or len(number) > 3 or int(number) > MAX_OUTPUT:
        raise BadTopic("topic %r: output %r is not an integer 0..%d" % (text, number, MAX_OUTPUT))
    return device, int(number)


def valid_discovery_prefix(text):
    """True for one or more `/`-separated levels of [A-Za-z0-9_-] (e.g. "homeassistant")."""
    if not isinstance(text, str) or not 1 <= len(text) <= 64:
        return False
    return all(level and all(ch in _HA_ID_CHARS for ch in level) for level in text.split("/"))


def ha_object_id(text):
    """A name made fit for a discovery topic level: [A-Za-z0-9_-], anything else becomes '_'."""
    out = "".join(ch if ch in _HA_ID_CHARS else "_" for ch in text)
    return out or "_"


def ha_discovery_topic(discovery_prefix, component, node_id, object_id):
    """`<discovery_prefix>/<component>/<node_id>/<object_id>/config` (Home Assistant MQTT
    discovery; node_id and object_id of [A-Za-z0-9_-]); raises BadTopic."""
    if not valid_discovery_prefix(discovery_prefix):
        raise BadTopic("discovery prefix %r must be levels of A-Z a-z 0-9 _ -" % (discovery_prefix,))
    if component not in HA_COMPONENTS:
        raise BadTopic("component %r is not one of %s" % (component, ", ".join(HA_COMPONENTS)))
    for value, what in ((node_id, "node_id"), (object_id, "object_id")):
        if not value or ha_object_id(value) != value:
            raise BadTopic("%s %r must be A-Z a-z 0-9 _ -" % (what, value))
    return discovery_prefix + "/" + component + "/" + node_id + "/" + object_id + "/config"


def ha_status_topic(discovery_prefix):
    """`<discovery_prefix>/status`: Home Assistant publishes "online" there when it starts."""
    if not valid_discovery_prefix(discovery_prefix):
        raise BadTopic("discovery prefix %r must be levels of A-Z a-z 0-9 _ -" % (discovery_prefix,))
    return discovery_prefix + "/status"
