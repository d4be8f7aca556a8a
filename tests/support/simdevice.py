"""Simulated devices for gateway tests: real shared_protocol frames, no firmware process.

A SimDevice numbers its frames like firmware does (boot counter, one sequence per
boot shared by every frame type, millisecond ticks) so the gateway sees exactly
what a board would publish.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shared_protocol import FLAG_HISTORICAL, ST_INT16
from shared_protocol.encode import DataEncoder, encode_birth, encode_death, encode_health

# name, unit, scale, offset, sample_type, rate_hz
VIB_CHANNELS: list[tuple[str, str, float, float, int, float]] = [
    ("ax", "g", 0.001, 0.0, ST_INT16, 100.0),
    ("ay", "g", 0.001, 0.0, ST_INT16, 100.0),
    ("temp", "C", 0.01, 0.0, ST_INT16, 100.0),
]


@dataclass
class SimDevice:
    device: str
    site: str = "s1"
    prefix: str = "el"
    channels: list[tuple[str, str, float, float, int, float]] = field(default_factory=lambda: list(VIB_CHANNELS))
    nsamples: int = 32
    boot: int = 1
    seq: int = 0
    ticks: int = 1000
    tick_bits: int = 30

    def __post_init__(self) -> None:
        self.period_us = round(1e6 / self.channels[0][5])
        self.enc = DataEncoder(len(self.channels), self.nsamples, schema_id=0)
        self.buf = bytearray(1024)
        self.sample_index = 0

    def topic(self, kind: str) -> str:
        return f"{self.prefix}/{self.site}/{self.device}/{kind}"

    def _next(self) -> int:
        self.seq += 1
        return self.seq

    def birth(self) -> bytes:
        n = encode_birth(self.buf, self.boot, self._next(), self.ticks, "1.2.3", self.channels, self.tick_bits)
        return bytes(self.buf[:n])

    def health(self, **kw: Any) -> bytes:
        args = dict(
            uptime_s=10,
            free_heap=50000,
            rssi=-60,
            battery_mv=3300,
            queue_depth=0,
            dropped_frames=0,
            irq_overruns=0,
            worst_latency_us=100,
            jitter_us=10,
        )
        args.update(kw)
        n = encode_health(self.buf, self.boot, self._next(), self.ticks, 0, **args)
        return bytes(self.buf[:n])

    def loss(self, ranges: list[tuple[int, int, int, int]]) -> bytes:
        """A LOSS frame (boot, first, last, reason): not sequenced, seq is the next one."""
        from shared_protocol.repair import encode_loss

        n = encode_loss(self.buf, self.boot, self.seq + 1, self.ticks, ranges)
        return bytes(self.buf[:n])

    def death(self) -> bytes:
        n = encode_death(self.buf, self.boot, self._next(), self.ticks)
        return bytes(self.buf[:n])

    def raw_block(self, fn: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
        """(nsamples, nchannels) int16 raw samples; default: a 10 Hz sine of 1 g on ax."""
        i = self.sample_index + np.arange(self.nsamples)
        t = i * self.period_us * 1e-6
        if fn is None:
            raw = np.zeros((self.nsamples, len(self.channels)))
            raw[:, 0] = 1000 * np.sin(2 * np.pi * 10 * t)
            raw[:, 1] = 500.0
            raw[:, 2] = 2500.0
        else:
            raw = fn(t)
        return np.asarray(np.round(raw), dtype=np.int16)

    def data(self, raw: np.ndarray | None = None, *, flags: int = 0) -> bytes:
        """The next DATA frame (advances seq, ticks and the sample clock)."""
        block = self.raw_block() if raw is None else raw
        samples = array("h", block.astype(np.int16).reshape(-1).tolist())
        n = self.enc.encode(self.boot, self._next(), self.ticks, self.period_us, samples, self.nsamples, flags)
        frame = bytes(self.enc.buf[:n])
        self.ticks = (self.ticks + self.nsamples * self.period_us // 1000) % (1 << self.tick_bits)
        self.sample_index += self.nsamples
        return frame

    def skip(self, frames: int) -> None:
        """Lose `frames` DATA frames (sequence and clock advance, nothing is sent)."""
        for _ in range(frames):
            self.seq += 1
            self.ticks = (self.ticks + self.nsamples * self.period_us // 1000) % (1 << self.tick_bits)
            self.sample_index += self.nsamples

    def reboot(self) -> None:
        """A new boot numbers its frames from 0, as firmware does (its BIRTH is seq 0)."""
        self.boot += 1
        self.seq = -1
        self.ticks = 5


def historical(frame: bytes) -> bytes:
    """The same frame flagged as replayed (header byte 2) with its CRC redone."""
    import struct
    from binascii import crc32

    b = bytearray(frame)
    b[2] |= FLAG_HISTORICAL
    struct.pack_into("<I", b, len(b) - 4, crc32(bytes(b[:-4])))
    return bytes(b)


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
        return [p for p in self if p[0].endswith("/" + kind)]
