"""Durable store-and-forward from the gateway to a cloud MQTT broker (see docs/forwarding.md)."""

from __future__ import annotations

from gateway.forward.config import PAYLOAD_FORMATS, ForwardConfig, TLSConfig
from gateway.forward.errors import ForwardConfigError, ForwardError, QueueError, RecordError
from gateway.forward.forwarder import CommandCallback, Forwarder
from gateway.forward.queue import LANES, DiskFullError, ForwardQueue, QueuedRecord, RecoveryReport

__all__ = [
    "LANES",
    "PAYLOAD_FORMATS",
    "CommandCallback",
    "DiskFullError",
    "ForwardConfig",
    "ForwardConfigError",
    "ForwardError",
    "ForwardQueue",
    "Forwarder",
    "QueueError",
    "QueuedRecord",
    "RecordError",
    "RecoveryReport",
    "TLSConfig",
]
