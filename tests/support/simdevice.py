"""The frame-level device simulator of every test folder: real shared_protocol frames,
no firmware process (tests/firmware/simdevice.py runs the real firmware instead).

A SimDevice numbers its frames like firmware does (boot counter, one sequence per
boot shared by every frame type, millisecond ticks) so the gateway sees exactly
what a board would publish, on the topics shared_protocol.topics builds. What the
gateway sends back (ACK, CMD) is read with ack_seqs() and shared_protocol.decode.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shared_protocol import ACK, FLAG_HISTORICAL, ST_INT16
from shared_protocol.decode import decode
from shared_protocol.encode import DataEncoder, encode_birth, encode_death, encode_health
from shared_protocol.header import seal
from shared_protocol.topics import parse_topic, topic

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
        return topic(self.prefix, self.site, self.device, kind)

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
    b = bytearray(frame)
    b[2] |= FLAG_HISTORICAL
    seal(b, len(b) - 4)
    return bytes(b)


def device_of(text: str) -> str:
    """The device level of a device topic (raises BadTopic for any other topic)."""
    return parse_topic(text)[2]


def kind_of(text: str) -> str:
    """The kind level of a device topic ("data", "ack", ...; raises BadTopic otherwise)."""
    return parse_topic(text)[3]


def ack_seqs(payloads: list[bytes]) -> set[int]:
    """Every sequence number the ACK frames in payloads acknowledge (any boot)."""
    seqs: set[int] = set()
    for p in payloads:
        frame = decode(p)
        if frame.type != ACK:
            raise ValueError(f"not an ACK frame: {frame!r}")
        for _boot, first, last in frame.fields["ranges"]:
            seqs.update(range(first, last + 1))
    return seqs
