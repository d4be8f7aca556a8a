"""The channel schema each device's DATA is decoded with (from its BIRTH), shared by
devices with the same channel table, and bound to the scoring stages."""

from __future__ import annotations

import logging
from typing import Any

from gateway.scoring import ScoringStage
from shared_protocol.decode import Schema
from shared_protocol.errors import ProtocolError

log = logging.getLogger(__name__)


class SchemaBook:
    def __init__(self, stages: list[ScoringStage]) -> None:
        self._stages = stages
        self._by_device: dict[str, Schema] = {}
        self._cache: dict[tuple[Any, ...], Schema] = {}

    def get(self, device: str) -> Schema | None:
        return self._by_device.get(device)

    def by_device(self) -> dict[str, Schema]:
        return self._by_device

    def changes(self, device: str, channels: Any) -> bool:
        """True when channels differ from the schema the device has now (or it has none)."""
        schema = self._by_device.get(device)
        return schema is None or schema.channels != [tuple(ch) for ch in channels]

    def learn(self, device: str, channels: Any) -> None:
        key = tuple(tuple(c) for c in channels)
        try:
            schema = self._cache.get(key) or Schema(channels)
        except ProtocolError as exc:
            log.warning("device %s: stored schema unusable (%s)", device, exc)
            return
        self._by_device[device] = schema
        self._cache[key] = schema  # devices with the same channel table share one Schema
        rates = {float(c[5]) for c in schema.channels}
        rate = rates.pop() if len(rates) == 1 else None
        for stage in self._stages:
            stage.bind(device, schema.channels, rate)
