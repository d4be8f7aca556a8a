"""What the processing thread sends: CMDs, alerts, summaries (JSON) and the local state
topics to the local broker, records to the forwarder.

Publishing and forwarding are injected (``Publisher``, ``Submit``) so the stages run
in tests with plain lists.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from gateway.acker import Header, Publisher
from gateway.counters import Counters
from shared_protocol import topics
from shared_protocol.gw_encode import encode_cmd
from shared_protocol.gw_topics import alert_topic, gateway_topic

log = logging.getLogger(__name__)

Submit = Callable[[str, dict[str, Any]], int | None]
"""Hands a record to the forwarder; returns a ticket for ``committed`` (or None)."""

MAX_TOPIC_CACHE = 100_000


class Outbox:
    def __init__(
        self,
        publisher: Publisher,
        header: Header,
        counters: Counters,
        *,
        prefix: str,
        site: str,
        submit: Submit | None = None,
    ) -> None:
        self.publisher = publisher
        self.header = header
        self.counters = counters
        self.prefix = prefix
        self.site = site
        self.submit = submit
        self._buf = bytearray(4096)  # CMD frames
        # cmd_ids of each gateway boot start in their own block of 65,536: a device that stayed up
        # while the gateway restarted must not take the new boot's first commands for repeats
        # of the last ones it executed (it skips a cmd_id among the last 8 it saw).
        self._cmd_id = (header.boot & 0xFFFF) << 16
        self._topics: dict[tuple[str, str], str] = {}
        self._failing = False

    def topic(self, device: str, kind: str) -> str:
        """A device's topic of this site (built once, then cached)."""
        key = (device, kind)
        t = self._topics.get(key)
        if t is None:
            t = topics.topic(self.prefix, self.site, device, kind)
            if len(self._topics) < MAX_TOPIC_CACHE:
                self._topics[key] = t
        return t

    def alert_topic(self, device: str) -> str:
        return alert_topic(self.prefix, self.site, device)

    def gateway_topic(self, what: str) -> str:
        return gateway_topic(self.prefix, self.site, what)

    def publish(self, topic: str, payload: bytes, qos: int = 1, *, retain: bool = False) -> bool:
        ok = self.publisher.publish(topic, payload, qos=qos, retain=retain)
        if not ok:
            self.counters.publish_failures += 1
            if not self._failing:
                log.warning("publish to %s refused by the MQTT client (not connected or its queue full)", topic)
        elif self._failing:
            log.info("publishing again (%d refused so far)", self.counters.publish_failures)
        self._failing = not ok
        return ok

    def cmd(self, device: str, op: int, arg: bytes = b"") -> int:
        """Send a CMD; returns its cmd_id."""
        self._cmd_id = (self._cmd_id + 1) & 0xFFFFFFFF
        n = encode_cmd(self._buf, *self.header.next(), self._cmd_id, op, arg)
        self.publish(self.topic(device, "cmd"), bytes(self._buf[:n]))
        return self._cmd_id

    def forward(self, lane: str, record: dict[str, Any]) -> int | None:
        """A record for the cloud lane; returns the forwarder's ticket (None without one)."""
        if self.submit is not None:
            return self.submit(lane, record)
        return None

    def local_summary(self, record: dict[str, Any]) -> bool:
        """A summary record as JSON on the local broker (``_gateway/summary``), with or without
        a forwarder: local tools read it there."""
        return self.publish(self.gateway_topic("summary"), json.dumps(record, separators=(",", ":")).encode())
