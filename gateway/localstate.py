"""The local state topics: what a device looks like right now, as plain JSON on the local
broker, for Home Assistant, Node-RED, Grafana or a shell with ``mosquitto_sub``, with or
without a cloud link. Run from ``Gateway.tick`` (processing thread). Per device:

    _state/<device>/availability       "online" / "offline", retained, at once on each change
    _state/<device>/state              JSON state, retained, on change at most every interval_s
    _state/<device>/alert/<pipeline>   {"state": "raised" | "cleared", ...}, retained, per transition

(topics: shared_protocol.gw_topics; payloads: docs/gateway.md "Local state topics").

The device registry stays the one source of availability, firmware, schema, health and last
seen; the live view (gateway/live.py) of readings, rates, alert records and config. Both say
which devices changed (``LiveView.take_changed``), so a tick costs O(changed devices), and the
JSON of a busy device is built at most once per interval: 1,000 devices at 100 Hz make 200
state publishes a second at the default 5 s, not 100,000.
"""

from __future__ import annotations

import fnmatch
import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

from gateway.config import Config
from gateway.live import LiveDevice, LiveView
from gateway.outbox import Outbox
from gateway.registry import DeviceInfo, Registry
from gateway.scoring import ScoringStage
from shared_protocol.gw_topics import alert_state_topic, state_topic

ONLINE = b"online"
OFFLINE = b"offline"
# Health fields always present in the state (null until a HEALTH arrives), so a template
# such as Home Assistant's ``value_json.health.rssi`` never meets a missing key.
HEALTH_KEYS = ("rssi", "free_heap", "queue_depth", "battery_mv", "uptime_s", "dropped_frames")
ACTIVE = ("raised", "updated")


def _number(v: Any) -> Any:
    """JSON has no NaN or infinity: such a reading is published as null."""
    return v if not isinstance(v, float) or math.isfinite(v) else None


def pipelines_for(config: Config, stages: Sequence[ScoringStage], device: str) -> list[str]:
    """The pipelines that score this device: its id matches the pipeline's ``devices`` and the
    model is loaded and fits the device's channels (as far as the gateway knows yet)."""
    loaded = {s.name: s for s in stages}
    out = []
    for p in config.pipelines:
        stage = loaded.get(p.name)
        if stage is None or device in stage.stats.unmatched_devices:
            continue
        if any(fnmatch.fnmatchcase(device, g) for g in p.devices):
            out.append(p.name)
    return out


def alert_state(record: dict[str, Any] | None) -> str:
    """ "raised" while an episode is active (records raised, updated), else "cleared"."""
    return "raised" if record is not None and record.get("state") in ACTIVE else "cleared"


def state_document(info: DeviceInfo, live: LiveDevice | None, pipelines: Iterable[str], now: float) -> dict[str, Any]:
    """The JSON state of one device (docs/gateway.md "Local state topics")."""
    values = live.values if live is not None else ()
    channels = {}
    for i, c in enumerate(info.channels or ()):
        channels[c[0]] = {"value": _number(values[i]) if i < len(values) else None, "unit": c[1], "rate_hz": c[5]}
    health = dict.fromkeys(HEALTH_KEYS)
    health.update(info.last_health)
    alerts = {}
    records = live.alerts if live is not None else {}
    for p in sorted(set(pipelines) | set(records)):
        r = records.get(p)
        alerts[p] = {
            "state": alert_state(r),
            "alert_id": r.get("alert_id") if r else None,
            "since": r.get("since") if r else None,
            "score": r.get("score") if r else None,
            "threshold": r.get("threshold") if r else None,
            "windows_over": r.get("windows_over") if r else None,
            "cleared_at": r.get("cleared_at") if r else None,
        }
    return {
        **info.facts(),
        "channels": channels,
        "values_at": (live.values_at or None) if live is not None else None,
        "health": health,
        "rate_hz": round(live.rate_hz, 2) if live is not None else 0.0,
        "samples": live.samples if live is not None else 0,
        "gaps": live.gaps if live is not None else 0,
        "config": dict(live.config) if live is not None else {},
        "config_at": (live.config_at or None) if live is not None else None,
        "alerts": alerts,
        "published_at": now,
    }


def _json(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), default=str).encode()


class LocalState:
    def __init__(
        self,
        config: Config,
        *,
        registry: Registry,
        live: LiveView,
        outbox: Outbox,
        stages: Sequence[ScoringStage],
    ) -> None:
        self.config = config
        self.registry = registry
        self.live = live
        self.outbox = outbox
        self.stages = stages
        self.interval_s = config.state.interval_s
        g = config.gateway
        self.prefix, self.site = g.prefix, g.site
        self._online: dict[str, bool] = {}  # availability as last published
        self._alerts: dict[tuple[str, str], tuple[str | None, str]] = {}  # (alert_id, state) last published
        self._pipelines: dict[str, tuple[float | None, list[str]]] = {}  # device -> (its BIRTH, pipelines)
        self._next_state: dict[str, float] = {}  # no state publish of the device before this
        self._dirty: set[str] = set()  # state changed since its last publish
        # Devices to look at next tick whatever changed: everything known after a start, and
        # those whose publish the MQTT client refused (not connected yet, or its queue full).
        self._again = set(registry.devices)
        self.published = {"availability": 0, "state": 0, "alert": 0, "removed": 0}
        # A budget of publishes (state.max_rate a second): 10,000 devices born at once must
        # not fill the MQTT client's queue, which the ACKs and commands share.
        self.max_rate = config.state.max_rate
        self._budget = self.max_rate
        self._last_tick: float | None = None
        self.deferred = 0  # publishes put off to a later tick by the budget

    def _topic(self, device: str, what: str) -> str:
        return state_topic(self.prefix, self.site, device, what)

    def tick(self, now: float) -> set[str]:
        """Publish what changed, within the budget; returns the devices with more than new
        readings (for Home Assistant discovery)."""
        if self._last_tick is not None:
            self._budget = min(self.max_rate, self._budget + (now - self._last_tick) * self.max_rate)
        self._last_tick = now
        changed, events = self.live.take_changed()
        self._dirty |= changed
        if self._again:
            events |= self._again
            self._again = set()
        devices = self.registry.devices
        for device in events:
            info = devices.get(device)
            if info is None:
                continue
            if self._budget < 1:
                self._again.add(device)  # availability and alert states first, next tick
                self.deferred += 1
                continue
            self._availability(info)
            self._alert_states(device, now)
            self._dirty.add(device)
        if self._dirty and self._budget >= 1:
            due = [d for d in self._dirty if self._next_state.get(d, 0.0) <= now]
            for device in due[: int(self._budget)]:
                self._dirty.discard(device)
                info = devices.get(device)
                if info is not None:
                    self._state(info, now)
            self.deferred += max(0, len(due) - int(self._budget))
        return events

    def pipelines(self, device: str) -> list[str]:
        """The device's pipelines (cached until its next BIRTH: a new schema may fit others)."""
        birth = getattr(self.registry.devices.get(device), "birth_at", None)
        cached = self._pipelines.get(device)
        if cached is None or cached[0] != birth:
            cached = self._pipelines[device] = (birth, pipelines_for(self.config, self.stages, device))
        return cached[1]

    def _availability(self, info: DeviceInfo) -> None:
        if self._online.get(info.device) == info.online:
            return
        if self.outbox.publish(
            self._topic(info.device, "availability"), ONLINE if info.online else OFFLINE, retain=True
        ):
            self._online[info.device] = info.online
            self.published["availability"] += 1
            self._budget -= 1
        else:
            self._again.add(info.device)

    def _alert_states(self, device: str, now: float) -> None:
        live = self.live.devices.get(device)
        records = live.alerts if live is not None else {}
        for pipeline in set(self.pipelines(device)) | set(records):
            record = records.get(pipeline)
            state = alert_state(record)
            key = (record.get("alert_id") if record else None, state)
            if self._alerts.get((device, pipeline)) == key:
                continue
            doc: dict[str, Any] = {"device": device, "pipeline": pipeline, "alert_id": None, "since": None}
            if record is not None:
                doc.update(record)
            doc["state"] = state
            doc["published_at"] = now
            if self.outbox.publish(
                alert_state_topic(self.prefix, self.site, device, pipeline), _json(doc), retain=True
            ):
                self._alerts[(device, pipeline)] = key
                self.published["alert"] += 1
                self._budget -= 1
            else:
                self._again.add(device)

    def _state(self, info: DeviceInfo, now: float) -> None:
        doc = state_document(info, self.live.devices.get(info.device), self.pipelines(info.device), now)
        # QoS 0: the next change sends a newer one; no PUBACK, no room taken in the client's
        # queue of QoS 1 messages (ACKs, commands, availability, alert states).
        if self.outbox.publish(self._topic(info.device, "state"), _json(doc), qos=0, retain=True):
            self.published["state"] += 1
            self._budget -= 1
            self._next_state[info.device] = now + self.interval_s
        else:
            self._dirty.add(info.device)  # tried again next tick

    def retained_topics(self, device: str) -> list[str]:
        """Every retained local state topic this gateway publishes for the device."""
        pipelines = {p for d, p in self._alerts if d == device} | set(self.pipelines(device))
        return [
            self._topic(device, "availability"),
            self._topic(device, "state"),
            *(alert_state_topic(self.prefix, self.site, device, p) for p in sorted(pipelines)),
        ]

    def remove(self, device: str) -> None:
        """A device removed from the site: clear its retained topics (empty retained payloads)."""
        for topic in self.retained_topics(device):
            self.outbox.publish(topic, b"", retain=True)
            self.published["removed"] += 1
        self._online.pop(device, None)
        self._pipelines.pop(device, None)
        self._next_state.pop(device, None)
        self._dirty.discard(device)
        for key in [k for k in self._alerts if k[0] == device]:
            del self._alerts[key]
