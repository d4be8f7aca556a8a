"""Control frames (BIRTH, HEALTH, EVENT, DEATH, LOSS): decode and apply what must happen
at once, in arrival order, before the batch's DATA is decoded (a BIRTH brings the
schema the DATA after it needs). Sequencing them, in order with the DATA, is the
accept stage's job; this one only hands them on (``batch.controls``).

DATA that arrived before its device's BIRTH is stored raw and ACKed (accept stage)
and a few frames per device are kept here; the BIRTH decodes them for the windows
(``batch.replayed``).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from gateway.batch import Batch, Control, DataRun
from gateway.counters import BadFrames, Counters
from gateway.ingest import RawFrame
from gateway.outbox import Outbox
from gateway.registry import Registry
from gateway.schemas import SchemaBook
from gateway.timebase import DeviceClocks
from shared_protocol import BIRTH, DEATH, EVENT, FLAG_HISTORICAL, HEALTH, LOSS
from shared_protocol.decode import decode
from shared_protocol.errors import ProtocolError
from shared_protocol.np_decode import decode_data_many
from shared_protocol.topics import TYPE_OF_KIND

log = logging.getLogger(__name__)


def _older_boot(boot: int, than: int) -> bool:
    """True if u16 boot counter ``boot`` comes before ``than`` (serial-number order)."""
    return 0 < (than - boot) & 0xFFFF < 0x8000


class HeldData:
    """DATA frames that came before their device's BIRTH (already stored and ACKed)."""

    def __init__(self, per_device: int, counters: Counters) -> None:
        self.per_device = per_device
        self.counters = counters
        self._held: dict[str, deque[RawFrame]] = {}

    def hold(self, device: str, fr: RawFrame) -> None:
        if not self.per_device:
            return
        held = self._held.get(device)
        if held is None:
            held = self._held[device] = deque()
        if len(held) >= self.per_device:
            held.popleft()
            self.counters.pending_dropped += 1
        held.append(fr)

    def take(self, device: str) -> list[RawFrame]:
        return list(self._held.pop(device, ()))


class ControlStage:
    def __init__(
        self,
        *,
        registry: Registry,
        schemas: SchemaBook,
        clocks: DeviceClocks,
        held: HeldData,
        outbox: Outbox,
        bad: BadFrames,
        counters: Counters,
    ) -> None:
        self.registry = registry
        self.schemas = schemas
        self.clocks = clocks
        self.held = held
        self.outbox = outbox
        self.bad = bad
        self.counters = counters
        # EVENT frames go to each listener, (device, frame, received): configuration
        # acknowledgements (gateway/devconfig.py), OTA answers (gateway/updates/rollout.py)
        self.event_listeners: list[Callable[[str, Any, float], None]] = []

    def apply(self, batch: Batch) -> None:
        for device, kind, fr in batch.inbox:
            self._one(batch, device, kind, fr)

    def _one(self, batch: Batch, device: str, kind: str, fr: RawFrame) -> None:
        try:
            frame = decode(fr.payload)
            if frame.type != TYPE_OF_KIND[kind]:
                raise ProtocolError(f"frame type {frame.type} published on a {kind!r} topic", "kind")
        except ProtocolError as exc:
            self.bad.add(device, exc.reason, message=str(exc), topic=fr.topic, payload=fr.payload, at=batch.now)
            return
        self.counters.kind(kind)
        if frame.type == DEATH:
            # The broker's copy of the device's last will: not sequenced, not ACKed. A live
            # device clears its retained DEATH when it connects (docs/protocol.md, "MQTT
            # topics"), so a DEATH means "down", unless it is of a boot older than the BIRTH
            # already seen (a board whose firmware does not clear it, after a reboot).
            info = self.registry.devices.get(device)
            if info is not None and info.boot is not None and _older_boot(frame.boot, info.boot):
                return
            if self.registry.on_death(device, at=fr.received):
                log.info("device %s: offline (DEATH)", device)
                self.outbox.forward(
                    "registry", {"event": "offline", "reason": "death", "device": device, "at": fr.received}
                )
            return
        if frame.type == LOSS:
            batch.losses.setdefault(device, []).append(frame)  # applied after this batch's frames
            return
        item = Control(frame, fr)
        if frame.type == BIRTH:
            item.birth = self._birth(batch, device, frame, fr)
        elif frame.type == HEALTH:
            self.registry.on_health(device, boot=frame.boot, fields=frame.fields, at=fr.received)
        elif frame.type == EVENT:
            for listener in self.event_listeners:
                listener(device, frame, fr.received)
        batch.controls.setdefault(device, []).append(item)

    def _birth(self, batch: Batch, device: str, frame: Any, fr: RawFrame) -> dict[str, Any]:
        f = frame.fields
        self.clocks.set_tick_bits(device, int(f.get("tick_bits", 30)))
        changed = self.schemas.changes(device, f["channels"])
        info = self.registry.on_birth(
            device, boot=frame.boot, fw_version=f["fw_version"], channels=f["channels"], at=fr.received
        )
        log.info("device %s: BIRTH boot %d firmware %s", device, frame.boot, f["fw_version"])
        self.schemas.learn(device, info.channels)
        held = self.held.take(device)
        if held:
            batch.replayed.extend(self._decode_held(batch, device, held))
        return {"event": "birth", "at": fr.received, "changed": changed, **info.as_dict()}

    def _decode_held(self, batch: Batch, device: str, frames: list[RawFrame]) -> list[DataRun]:
        """DATA held before the BIRTH, for the windows only: stored and ACKed already."""
        schema = self.schemas.get(device)
        if schema is None:
            return []
        runs: list[DataRun] = []
        errors: list[tuple[int, ProtocolError]] = []
        for b in decode_data_many([f.payload for f in frames], schema, errors):
            for j in range(len(b)):
                fr = frames[int(b.index[j])]
                dev_s, wall = self.clocks.frame_times(
                    device,
                    int(b.boot[j]),
                    int(b.ticks[j]),
                    fr.received,
                    age_ms=(b.values.shape[1] - 1) * int(b.period_us[j]) / 1000.0,
                    live=not int(b.flags[j]) & FLAG_HISTORICAL,
                )
                runs.append(DataRun(device, b, [j], "new", 0, [fr.received], dev_s, wall))
        for i, exc in errors:
            fr = frames[i]
            self.bad.add(device, exc.reason, message=str(exc), topic=fr.topic, payload=fr.payload, at=batch.now)
        return runs
