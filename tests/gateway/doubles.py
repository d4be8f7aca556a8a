"""Test doubles for the gateway's pipeline: a scoring model and a publisher that records."""

from __future__ import annotations

import numpy as np

from shared_protocol.topics import levels


class RMSModel:
    """A stand-in model for stage tests: score = RMS of the first channel of each window."""

    def __init__(self, *, window: int = 64, hop: int = 32, channels: tuple[str, ...] = ("ax",), threshold: float = 1.5):
        self.manifest = {
            "window_len": window,
            "hop": hop,
            "channels": list(channels),
            "threshold": threshold,
            "rate_hz": 100.0,
        }
        self.version = "rms-test-1"
        self.calls: list[int] = []

    def score(self, windows: np.ndarray) -> np.ndarray:
        self.calls.append(int(windows.shape[0]))
        return np.sqrt(np.mean(np.square(windows[:, :, 0]), axis=1))


class Published(list[tuple[str, bytes, int]]):
    """Collects what the pipeline publishes (the pipeline's Publisher interface)."""

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> bool:
        self.append((topic, payload, qos))
        return True

    def kind(self, kind: str) -> list[tuple[str, bytes, int]]:
        """Publishes on device topics <prefix>/<site>/<device>/<kind> of this kind (not the
        gateway's own state and discovery topics, which have other shapes)."""
        return [p for p in self if p[0].count("/") == 3 and levels(p[0])[3] == kind]
