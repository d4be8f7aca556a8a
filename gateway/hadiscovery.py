"""Home Assistant MQTT discovery (opt-in: ``[homeassistant] enabled = true``).

Each board becomes one Home Assistant device, linked through ``via_device`` to the gateway's
own device. Its entities read the local state topics (gateway/localstate.py):

    sensor         one per channel: value and unit from the state JSON, state_class measurement
    sensor         diagnostics: RSSI (signal_strength, dBm), free heap (data_size, B), queue depth
    binary_sensor  one per pipeline scoring the device: its alert state (device_class problem)
    switch         one per actuator output a ``[[rules]]`` entry names (device, output): ON/OFF
                   on its command topic becomes CMD_SET_OUTPUT (value on / 0, held)
    binary_sensor  the gateway's own connectivity, from its retained status (MQTT last will)

Every entity is available when both the gateway (``_gateway/status``) and the device
(``_state/<device>/availability``) are online. Configs are retained, published when a device
is first seen or born and again when what they say changes (schema, firmware, pipelines);
``remove`` clears them with empty retained payloads. The payloads follow the discovery schema
of Home Assistant's MQTT integration (https://www.home-assistant.io/integrations/mqtt/);
tests/gateway/test_hadiscovery.py validates each with Home Assistant's own DISCOVERY_SCHEMA.

Output commands arrive on paho's network thread (``on_message``), wait in a bounded inbox and
are served by the processing thread (``serve``, from ``Gateway.tick``). A command for an output
no rule names, or with another payload than ON / OFF, is refused, counted and logged.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from gateway.config import Config
from gateway.live import LiveView
from gateway.outbox import Outbox
from gateway.registry import Registry
from shared_protocol import CMD_SET_OUTPUT
from shared_protocol.errors import ProtocolError
from shared_protocol.gw_encode import cmd_arg
from shared_protocol.gw_topics import (
    alert_state_topic,
    gateway_topic,
    ha_discovery_topic,
    ha_object_id,
    output_command_filter,
    output_command_topic,
    parse_output_command,
    state_topic,
)

log = logging.getLogger(__name__)

MANUFACTURER = "edgeline"
PAYLOAD_ON = "ON"
PAYLOAD_OFF = "OFF"
INBOX_SIZE = 256  # output commands waiting for the processing thread
REFUSED_LOG_S = 10.0
# The gateway's retained status is JSON ({"online": true}); Home Assistant reads it with a template.
GATEWAY_AVAILABLE = "{{ 'online' if value_json.online else 'offline' }}"

Configs = dict[str, dict[str, Any]]  # discovery topic -> payload


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("edgeline")
    except PackageNotFoundError:
        return "unknown"


def _field(path: str, key: str) -> str:
    """A template reading ``value_json.<path>[key].value`` (key as a quoted string literal)."""
    return "{{ value_json." + path + "[" + json.dumps(key) + "].value }}"


class HADiscovery:
    def __init__(
        self,
        config: Config,
        *,
        registry: Registry,
        outbox: Outbox,
        pipelines: Callable[[str], list[str]],
        live: LiveView | None = None,
    ) -> None:
        """pipelines(device): the pipelines scoring it; live: for the board a device reports
        in its configuration (``board``), the model shown in Home Assistant."""
        ha = config.homeassistant
        g = config.gateway
        self.discovery_prefix = ha.discovery_prefix
        self.prefix, self.site, self.gateway_id = g.prefix, g.site, g.id
        self.registry = registry
        self.outbox = outbox
        self.pipelines = pipelines
        self.live = live
        self.version = _version()
        # (device, output) -> value for ON: the outputs [[rules]] drive (the first rule's value)
        self.outputs: dict[tuple[str, int], int] = {}
        for rule in config.rules:
            self.outputs.setdefault((rule.device, rule.output), rule.value or 1)
        self.command_filter = output_command_filter(self.prefix, self.site)
        self.gateway_status = gateway_topic(self.prefix, self.site, "status")
        self._published: dict[str, dict[str, bytes]] = {}  # device -> topic -> payload retained
        self._signature: dict[str, tuple[Any, ...]] = {}
        self._gateway_done = False
        self.inbox: deque[tuple[str, bytes]] = deque()
        self.commands = 0  # CMD_SET_OUTPUT sent for a switch
        self.refused: dict[str, int] = {}  # reason -> commands refused
        self._refused_logged = 0.0

    # ------------------------------------------------------------------ identities
    def model(self, device: str) -> str | None:
        d = self.live.devices.get(device) if self.live is not None else None
        board = d.config.get("board") if d is not None else None
        return str(board) if board else None

    def node_id(self, device: str) -> str:
        return f"edgeline_{self.site}_{device}"

    def gateway_node_id(self) -> str:
        return f"edgeline_{self.site}_gateway_{self.gateway_id}"

    def _origin(self) -> dict[str, Any]:
        return {"name": "edgeline", "sw_version": self.version}

    def _availability(self, device: str) -> dict[str, Any]:
        return {
            "availability": [
                {"topic": self.gateway_status, "value_template": GATEWAY_AVAILABLE},
                {"topic": state_topic(self.prefix, self.site, device, "availability")},
            ],
            "availability_mode": "all",
        }

    # ------------------------------------------------------------------ payloads
    def gateway_configs(self) -> Configs:
        """The gateway's own device: one connectivity sensor from its retained status."""
        node = self.gateway_node_id()
        return {
            ha_discovery_topic(self.discovery_prefix, "binary_sensor", node, "connectivity"): {
                "name": "Connectivity",
                "unique_id": f"{node}_connectivity",
                "device_class": "connectivity",
                "entity_category": "diagnostic",
                "state_topic": self.gateway_status,
                "value_template": "{{ 'ON' if value_json.online else 'OFF' }}",
                "device": {
                    "identifiers": [node],
                    "name": f"edgeline gateway {self.gateway_id}",
                    "manufacturer": MANUFACTURER,
                    "model": "edgeline gateway",
                    "sw_version": self.version,
                },
                "origin": self._origin(),
            }
        }

    def configs(self, device: str) -> Configs:
        """Every discovery config of one device (topic -> payload)."""
        info = self.registry.devices.get(device)
        node = self.node_id(device)
        dp = self.discovery_prefix
        state = state_topic(self.prefix, self.site, device, "state")
        dev: dict[str, Any] = {
            "identifiers": [node],
            "name": device,
            "manufacturer": MANUFACTURER,
            "model": self.model(device) or "edgeline sensor",
            "via_device": self.gateway_node_id(),
        }
        if info is not None and info.fw_version:
            dev["sw_version"] = info.fw_version
        common = {"device": dev, "origin": self._origin(), **self._availability(device)}
        out: Configs = {}

        def add(component: str, object_id: str, payload: dict[str, Any]) -> None:
            payload["unique_id"] = f"{node}_{object_id}"
            out[ha_discovery_topic(dp, component, node, object_id)] = {**payload, **common}

        for name, unit, *_ in (info.channels or ()) if info is not None else ():
            sensor: dict[str, Any] = {
                "name": name,
                "state_topic": state,
                "value_template": _field("channels", name),
                "state_class": "measurement",
            }
            if unit:
                sensor["unit_of_measurement"] = unit
            add("sensor", "ch_" + ha_object_id(name), sensor)
        diagnostics: tuple[tuple[str, str, dict[str, Any]], ...] = (
            ("rssi", "RSSI", {"device_class": "signal_strength", "unit_of_measurement": "dBm"}),
            ("free_heap", "Free heap", {"device_class": "data_size", "unit_of_measurement": "B"}),
            ("queue_depth", "Queue depth", {}),
        )
        for key, label, extra in diagnostics:
            add(
                "sensor",
                "diag_" + key,
                {
                    "name": label,
                    "state_topic": state,
                    "value_template": "{{ value_json.health." + key + " }}",
                    "state_class": "measurement",
                    "entity_category": "diagnostic",
                    **extra,
                },
            )
        for pipeline in self.pipelines(device):
            topic = alert_state_topic(self.prefix, self.site, device, pipeline)
            add(
                "binary_sensor",
                "alert_" + pipeline,
                {
                    "name": f"{pipeline} alert",
                    "device_class": "problem",
                    "state_topic": topic,
                    "value_template": "{{ 'ON' if value_json.state == 'raised' else 'OFF' }}",
                    "json_attributes_topic": topic,
                },
            )
        for (target, output), _value in sorted(self.outputs.items()):
            if target != device:
                continue
            add(
                "switch",
                f"output_{output}",
                {
                    "name": f"Output {output}",
                    "command_topic": output_command_topic(self.prefix, self.site, device, output),
                    "payload_on": PAYLOAD_ON,
                    "payload_off": PAYLOAD_OFF,
                    "optimistic": True,
                    "qos": 1,
                },
            )
        return out

    def _signature_of(self, device: str) -> tuple[Any, ...]:
        info = self.registry.devices.get(device)
        if info is None:
            return ()
        return (info.channels, info.fw_version, tuple(self.pipelines(device)), self.model(device))

    # ------------------------------------------------------------------ publishing
    def sync(self, devices: Iterable[str]) -> int:
        """Publish the configs of these devices where they changed; returns configs published."""
        n = 0
        if not self._gateway_done:
            self._gateway_done = all(
                self._publish(t, json.dumps(p).encode()) for t, p in self.gateway_configs().items()
            )
        for device in devices:
            if device not in self.registry.devices:
                continue
            sig = self._signature_of(device)
            if self._signature.get(device) == sig:
                continue
            n += self._apply(device, {t: json.dumps(p).encode() for t, p in self.configs(device).items()})
            self._signature[device] = sig
        return n

    def _publish(self, topic: str, payload: bytes) -> bool:
        return self.outbox.publish(topic, payload, retain=True)

    def _apply(self, device: str, new: dict[str, bytes]) -> int:
        old = self._published.get(device, {})
        n = 0
        for topic in old.keys() - new.keys():  # an entity gone (a channel or pipeline dropped)
            self._publish(topic, b"")
        for topic, payload in new.items():
            if old.get(topic) != payload:
                self._publish(topic, payload)
                n += 1
        self._published[device] = new
        return n

    def remove(self, device: str) -> None:
        """A device removed from the site: its entities go from Home Assistant."""
        topics = self._published.pop(device, None) or {t: b"" for t in self.configs(device)}
        for topic in topics:
            self._publish(topic, b"")
        self._signature.pop(device, None)

    # ------------------------------------------------------------------ switch commands
    def on_message(self, topic: str, payload: bytes) -> None:
        """paho's network thread: keep the command for ``serve``."""
        if len(self.inbox) >= INBOX_SIZE:
            self._refuse("inbox_full", topic, "the processing thread is behind")
            return
        self.inbox.append((topic, payload))

    def serve(self) -> int:
        """Processing thread: turn the waiting switch commands into CMD_SET_OUTPUT; returns how many."""
        sent = 0
        while self.inbox:
            topic, payload = self.inbox.popleft()
            try:
                device, output = parse_output_command(self.prefix, self.site, topic)
            except ProtocolError as exc:
                self._refuse("topic", topic, str(exc))
                continue
            on_value = self.outputs.get((device, output))
            if on_value is None:
                self._refuse("not_configured", topic, f"no [[rules]] entry drives output {output} of {device}")
                continue
            text = payload.decode("utf-8", "replace").strip()
            if text not in (PAYLOAD_ON, PAYLOAD_OFF):
                self._refuse("payload", topic, f"payload {text[:20]!r} is not {PAYLOAD_ON} or {PAYLOAD_OFF}")
                continue
            value = on_value if text == PAYLOAD_ON else 0
            cmd_id = self.outbox.cmd(device, CMD_SET_OUTPUT, cmd_arg(CMD_SET_OUTPUT, output, value, 0))
            self.commands += 1
            sent += 1
            log.info(
                "Home Assistant: %s output %d %s -> CMD_SET_OUTPUT value %d (cmd %d)",
                device,
                output,
                text,
                value,
                cmd_id,
            )
        return sent

    def _refuse(self, reason: str, topic: str, why: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1
        now = time.monotonic()
        if now - self._refused_logged >= REFUSED_LOG_S:
            self._refused_logged = now
            log.warning(
                "Home Assistant command on %s refused: %s (%d refused so far)", topic, why, sum(self.refused.values())
            )
