"""Topics the gateway publishes besides ACK and CMD (gateway only, so a board never loads it):

    <prefix>/<site>/<device>/alert        an alert of one device (JSON)
    <prefix>/<site>/_gateway/<what>       the gateway's own: status, summary (JSON)

Parsed with topics.levels(). See docs/gateway.md "Topics the gateway publishes".
"""

from shared_protocol.errors import BadTopic
from shared_protocol.topics import _check_id

GATEWAY_ID = "_gateway"  # the device level of the gateway's own topics
GATEWAY_WHAT = ("status", "summary")


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
