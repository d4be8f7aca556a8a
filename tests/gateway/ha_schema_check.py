"""Run by .venv-ha's Python (tools/setup_ha_env.sh), not by pytest: checks Home Assistant MQTT
discovery messages with Home Assistant's own code, as its MQTT integration does on receipt
(homeassistant/components/mqtt/discovery.py, 2024.1): the discovery topic pattern and the
supported components, JSON, the abbreviations expanded, then the platform's DISCOVERY_SCHEMA.
That schema drops unknown keys silently (vol.REMOVE_EXTRA), so a key that does not survive
validation is reported too. Each value template is rendered with Home Assistant's template
engine against the state payload its topic would carry.

stdin:  {"discovery_prefix": str, "configs": {topic: payload text}, "payloads": {topic: text}}
stdout: {topic: {"error": str | null, "dropped": [key], "rendered": {key: text}}}
"""

import asyncio
import importlib
import json
import sys

import homeassistant.components.persistent_notification  # noqa: F401  (breaks an import cycle first)
from homeassistant.components.mqtt import discovery
from homeassistant.components.mqtt.abbreviations import ABBREVIATIONS, DEVICE_ABBREVIATIONS
from homeassistant.core import HomeAssistant
from homeassistant.helpers.template import Template

HASS = None


def render(template, value):
    global HASS
    if HASS is None:
        import tempfile

        HASS = HomeAssistant(tempfile.mkdtemp())
    return Template(template, HASS).async_render_with_possible_json_value(value, "<error>")


def check(prefix, topic, text, payloads):
    out = {"error": None, "dropped": [], "rendered": {}}
    trimmed = topic.replace(prefix + "/", "", 1)
    match = discovery.TOPIC_MATCHER.match(trimmed)
    if not match or match.group(0) != trimmed:
        out["error"] = "illegal discovery topic"
        return out
    component = match.group("component")
    if component not in discovery.SUPPORTED_COMPONENTS:
        out["error"] = f"component {component} not supported"
        return out
    payload = json.loads(text)
    payload = {ABBREVIATIONS.get(k, k): v for k, v in payload.items()}
    if "device" in payload:
        payload["device"] = {DEVICE_ABBREVIATIONS.get(k, k): v for k, v in payload["device"].items()}
    payload["platform"] = "mqtt"
    schema = importlib.import_module("homeassistant.components.mqtt." + component).DISCOVERY_SCHEMA
    try:
        config = schema(dict(payload))
    except Exception as exc:  # vol.Invalid and friends: the message is what HA would log
        out["error"] = f"{type(exc).__name__}: {exc}"
        return out
    out["dropped"] = sorted(set(payload) - set(config))
    if "device" in payload:
        out["dropped"] += ["device." + k for k in sorted(set(payload["device"]) - set(config["device"]))]
    for key in ("value_template",):
        if key in payload and payload.get("state_topic") in payloads:
            value = payloads[payload["state_topic"]]
            out["rendered"][key] = render(payload[key], value)
    for n, avail in enumerate(payload.get("availability", [])):
        if "value_template" in avail and avail["topic"] in payloads:
            value = payloads[avail["topic"]]
            out["rendered"][f"availability.{n}"] = render(avail["value_template"], value)
    return out


async def main():
    req = json.load(sys.stdin)
    result = {t: check(req["discovery_prefix"], t, p, req["payloads"]) for t, p in req["configs"].items()}
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    asyncio.run(main())  # Home Assistant's core (the template environment) needs a running loop
