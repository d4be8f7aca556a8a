"""The one object a batch of raw frames carries through the stages.

Each stage reads what the stages before it added and adds its own part; nothing
travels in output parameters or waits in a stage's side list:

    route      -> data, inbox (control frames), touched
    control    -> controls (to sequence), losses, replayed (DATA held before a BIRTH)
    accept     -> runs (for windows), stored (for the raw log), acks, seq_dirty
    alerting   -> summary_blocks (alerts and CMDs are already published)
    persist    -> Commit (to the writer thread)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from gateway.ingest import RawFrame
from gateway.rawlog import LogRow, SeqStates
from shared_protocol import DATA
from shared_protocol.np_decode import DataBatch

Seqs = list[tuple[int, int]]  # (boot, seq) pairs


@dataclass
class DataRun:
    """Accepted DATA frames of one device: one decoded batch, in order (for windows)."""

    device: str
    batch: DataBatch
    rows: list[int]  # rows of the batch, in sequence order
    verdict: str  # "new" (in order) or "fill" (late, into a gap)
    missing: int  # samples known missing just before the first frame
    received: list[float]  # per frame
    dev_s: float  # device time of the first sample
    wall: float  # rebuilt wall-clock time of the first sample

    def follows(self, prev: DataRun) -> bool:
        """True when this run continues prev without a gap (same device, batch, next seq)."""
        return (
            self.device == prev.device
            and self.batch is prev.batch
            and self.verdict == "new"
            and prev.verdict == "new"
            and not self.missing
            and int(self.batch.seq[self.rows[0]]) == int(prev.batch.seq[prev.rows[-1]]) + 1
        )


class StoredRun(NamedTuple):
    """Consecutive DATA frames of one device to store: expanded into LogRows off the alert path."""

    device: str
    boot: int
    flags: int
    seqs: list[int]
    wall: NDArray[np.float64]
    received: list[float]
    payloads: list[bytes]

    def log_rows(self) -> list[LogRow]:
        return [
            LogRow(self.device, self.boot, q, DATA, self.flags, t, r, pl)
            for q, t, r, pl in zip(self.seqs, self.wall.tolist(), self.received, self.payloads, strict=True)
        ]


@dataclass
class Control:
    """A control frame (BIRTH, EVENT, HEALTH) whose effects are applied, waiting to be sequenced."""

    frame: Any  # shared_protocol.decode.Frame
    fr: RawFrame
    birth: dict[str, Any] | None = None  # BIRTH: the registry record to forward when it is new


@dataclass
class RawData:
    """A DATA frame stored without decoding (no usable schema yet), waiting to be sequenced."""

    boot: int
    seq: int
    flags: int
    fr: RawFrame


@dataclass
class Batch:
    now: float
    frames: list[RawFrame]
    data: dict[str, list[RawFrame]] = field(default_factory=dict)  # DATA per device, arrival order
    inbox: list[tuple[str, str, RawFrame]] = field(default_factory=list)  # (device, kind, frame): the rest
    controls: dict[str, list[Control]] = field(default_factory=dict)
    losses: dict[str, list[Any]] = field(default_factory=dict)  # decoded LOSS frames per device
    touched: dict[str, float] = field(default_factory=dict)  # latest receive time per device
    replayed: list[DataRun] = field(default_factory=list)  # DATA held before a BIRTH, decoded now
    runs: list[DataRun] = field(default_factory=list)
    stored: list[LogRow | StoredRun] = field(default_factory=list)
    acks: dict[str, Seqs] = field(default_factory=dict)
    seq_dirty: set[str] = field(default_factory=set)  # sequence state changed without an ACK (LOSS)
    summary_blocks: list[tuple[str, tuple[str, ...], NDArray[np.float32]]] = field(default_factory=list)

    def ack_list(self, device: str) -> Seqs:
        ack = self.acks.get(device)
        if ack is None:
            ack = self.acks[device] = []
        return ack

    def log_rows(self) -> list[LogRow]:
        rows: list[LogRow] = []
        for item in self.stored:
            if isinstance(item, LogRow):
                rows.append(item)
            else:
                rows.extend(item.log_rows())
        return rows


@dataclass
class Commit:
    """What must be durable before ACKs go out (plain data, handed to the writer thread)."""

    rows: list[LogRow]
    seq_states: SeqStates
    registry_ops: list[tuple[str, tuple[Any, ...]]]
    acks: dict[str, Seqs]
    now: float

    def merge(self, later: Commit) -> None:
        """Take a later commit into this one (its sequence state wins)."""
        self.rows.extend(later.rows)
        self.seq_states.update(later.seq_states)
        self.registry_ops.extend(later.registry_ops)
        for device, seqs in later.acks.items():
            self.acks.setdefault(device, []).extend(seqs)
        self.now = max(self.now, later.now)


def ranges_of(seqs: Seqs) -> list[tuple[int, int, int]]:
    """Collapse (boot, seq) pairs into inclusive (boot, first, last) ranges."""
    out: list[tuple[int, int, int]] = []
    for boot, seq in sorted(set(seqs)):
        if out and out[-1][0] == boot and out[-1][2] + 1 == seq:
            out[-1] = (boot, out[-1][1], seq)
        else:
            out.append((boot, seq, seq))
    return out
