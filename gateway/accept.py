"""Accept: decode DATA, take every frame's sequence number in order, rebuild its time.

Per device, its frames of the batch are sequenced in (boot, seq) order, control
frames and DATA interleaved (taking a HEALTH before the DATA that precede it would
make those DATA "late" and report a false gap). What comes out, on the batch:

* ``runs``: DATA accepted for the windows (new, or late into a gap);
* ``stored``: everything to store in the raw log (not duplicates);
* ``acks``: everything to ACK once stored (duplicates too: the device holds them);
* frames with an absurd sequence jump are counted, neither stored nor ACKed.

The common case, consecutive DATA of one device decoded together, stays vectorised.
DATA of a device whose schema is unknown (or stale) is stored raw and ACKed, and
the device is asked to send its BIRTH again.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from gateway.batch import Batch, Control, DataRun, RawData, Seqs, StoredRun
from gateway.control import HeldData
from gateway.counters import BadFrames, Counters
from gateway.decisions import Summaries
from gateway.eventlog import Throttled
from gateway.ingest import RawFrame
from gateway.outbox import Outbox
from gateway.rawlog import LogRow
from gateway.schemas import SchemaBook
from gateway.sequence import DUP, LOST_REASONS, SUSPECT, SequenceTracker
from gateway.timebase import DeviceClocks
from shared_protocol import CMD_REBIRTH, DATA, FLAG_HISTORICAL
from shared_protocol.decode import Schema
from shared_protocol.errors import ProtocolError
from shared_protocol.header import unpack_header
from shared_protocol.np_decode import DataBatch, decode_data_many

log = logging.getLogger(__name__)

Decoded = list[tuple[int, DataBatch, int]]  # (frame index, batch, row), arrival order
Errors = list[tuple[int, ProtocolError]]


class AcceptStage:
    def __init__(
        self,
        *,
        sequence: SequenceTracker,
        clocks: DeviceClocks,
        schemas: SchemaBook,
        held: HeldData,
        summaries: Summaries,
        outbox: Outbox,
        bad: BadFrames,
        counters: Counters,
        rebirth_interval_s: float,
    ) -> None:
        self.sequence = sequence
        self.clocks = clocks
        self.schemas = schemas
        self.held = held
        self.summaries = summaries
        self.outbox = outbox
        self.bad = bad
        self.counters = counters
        self.rebirth_interval_s = rebirth_interval_s
        self._last_rebirth: dict[str, float] = {}
        self.gap_log = Throttled(log, "device %s: %d sequence gap(s), %d frame(s) missing, in %.0f s")

    def accept(self, batch: Batch) -> None:
        raws: dict[str, list[RawData]] = {}
        decoded = self._decode(batch, raws)
        for device in decoded.keys() | batch.controls.keys() | raws.keys():
            self._device(batch, device, decoded.get(device, ([], [], [])), raws.setdefault(device, []))
        for device, losses in batch.losses.items():
            self._losses(batch, device, losses)

    # ------------------------------------------------------------------ decode
    def _decode(
        self, batch: Batch, raws: dict[str, list[RawData]]
    ) -> dict[str, tuple[list[RawFrame], Decoded, Errors]]:
        """Every device's DATA, one vectorised call per schema (devices sharing a schema share it).
        DATA of a device without a known schema goes to ``raws`` (stored undecoded)."""
        groups: dict[int, tuple[Schema, list[str]]] = {}
        for device, frames in batch.data.items():
            schema = self.schemas.get(device)
            if schema is None:
                self._request_rebirth(device, batch.now)
                raws.setdefault(device, []).extend(self._raw_items(device, frames, batch.now))
                continue
            g = groups.get(id(schema))
            if g is None:
                groups[id(schema)] = (schema, [device])
            else:
                g[1].append(device)
        out: dict[str, tuple[list[RawFrame], Decoded, Errors]] = {}
        for schema, devices in groups.values():
            payloads: list[bytes] = []
            owner: list[int] = []
            local: list[int] = []
            for k, device in enumerate(devices):
                frames = batch.data[device]
                payloads.extend(f.payload for f in frames)
                owner.extend([k] * len(frames))
                local.extend(range(len(frames)))
            errors: Errors = []
            batches = decode_data_many(payloads, schema, errors)
            decoded: list[Decoded] = [[] for _ in devices]
            for b in batches:
                for j, idx in enumerate(b.index.tolist()):
                    decoded[owner[idx]].append((local[idx], b, j))
            errs: list[Errors] = [[] for _ in devices]
            for idx, exc in errors:
                errs[owner[idx]].append((local[idx], exc))
            for k, device in enumerate(devices):
                if len(batches) > 1:
                    decoded[k].sort(key=lambda t: t[0])
                out[device] = (batch.data[device], decoded[k], errs[k])
        return out

    def _raw_items(self, device: str, frames: list[RawFrame], now: float) -> list[RawData]:
        """DATA frames to store undecoded: header and CRC checked, the rest counted bad."""
        out: list[RawData] = []
        for fr in frames:
            try:
                _v, ftype, flags, boot, seq, _ticks = unpack_header(fr.payload)
                if ftype != DATA:
                    raise ProtocolError(f"frame type {ftype} published on a 'data' topic", "kind")
            except ProtocolError as exc:
                self.bad.add(device, exc.reason, message=str(exc), topic=fr.topic, payload=fr.payload, at=now)
                continue
            out.append(RawData(boot, seq, flags, fr))
        return out

    def _request_rebirth(self, device: str, now: float) -> None:
        last = self._last_rebirth.get(device)
        if last is not None and now - last < self.rebirth_interval_s:
            return
        self._last_rebirth[device] = now
        self.counters.rebirth_requests += 1
        self.outbox.cmd(device, CMD_REBIRTH)
        log.info("device %s: DATA without a known BIRTH, asked it to rebirth", device)

    # ------------------------------------------------------------------ sequence, per device
    def _device(
        self, batch: Batch, device: str, got: tuple[list[RawFrame], Decoded, Errors], raws: list[RawData]
    ) -> None:
        frames, decoded, errors = got
        stale = False
        for i, exc in errors:
            fr = frames[i]
            self.bad.add(device, exc.reason, message=str(exc), topic=fr.topic, payload=fr.payload, at=batch.now)
            if exc.reason == "schema":
                # Another schema than the gateway holds (a BIRTH it missed, or frames of a
                # rate change replayed late): store it undecoded and ACK it like DATA
                # without a schema, so the device does not re-send it forever.
                stale = True
                raws.extend(self._raw_items(device, [fr], batch.now))
        if stale:
            self._request_rebirth(device, batch.now)
        ack = batch.ack_list(device)
        if decoded:
            self.counters.kind("data", len(decoded))
        controls = batch.controls.get(device, [])
        if not controls and not raws:
            self._data(batch, device, frames, decoded, ack)
            return
        ref = self.sequence.current_boot(device)
        items: list[tuple[int, int, int, Any]] = []
        for d in decoded:
            b, j = d[1], d[2]
            items.append((int(b.boot[j]), int(b.seq[j]), 0, d))
        items.extend((r.boot, r.seq, 1, r) for r in raws)
        items.extend((c.frame.boot, c.frame.seq, 2, c) for c in controls)
        if ref is None:
            ref = items[0][0]
        # Older boots first (serial-number order around the device's current boot), then seq.
        items.sort(key=lambda t: (((t[0] - ref + 0x8000) & 0xFFFF), t[1]))
        run: Decoded = []
        for _boot, _seq, kind, obj in items:
            if kind == 0:
                run.append(obj)
                continue
            if run:
                self._data(batch, device, frames, run, ack)
                run = []
            if kind == 1:
                self._raw(batch, device, obj, ack)
            else:
                self._control(batch, device, obj, ack)
        if run:
            self._data(batch, device, frames, run, ack)

    def _suspect(self, device: str, fr: RawFrame) -> None:
        """A frame with an absurd sequence jump: counted, neither stored nor ACKed."""
        self.bad.add(
            device,
            "seq_jump",
            message="sequence number jumps too far ahead; held back until frames that follow confirm it",
            topic=fr.topic,
            payload=fr.payload,
            at=fr.received,
        )

    def _control(self, batch: Batch, device: str, item: Control, ack: Seqs) -> None:
        frame, fr = item.frame, item.fr
        verdict, _ = self.sequence.observe(device, frame.boot, frame.seq)
        if verdict == SUSPECT:
            self._suspect(device, fr)
            return
        ack.append((frame.boot, frame.seq))
        if item.birth is not None:
            rec = dict(item.birth)
            if rec.pop("changed") or verdict != DUP:
                self.outbox.forward("registry", rec)
        if verdict == DUP:
            return
        _dev_s, t = self.clocks.frame_times(
            device, frame.boot, frame.ticks, fr.received, live=not frame.flags & FLAG_HISTORICAL
        )
        batch.stored.append(LogRow(device, frame.boot, frame.seq, frame.type, frame.flags, t, fr.received, fr.payload))

    def _raw(self, batch: Batch, device: str, item: RawData, ack: Seqs) -> None:
        """No usable schema: store (and ACK) the frame raw, hold a few to decode after the BIRTH."""
        fr = item.fr
        verdict, _ = self.sequence.observe(device, item.boot, item.seq)
        if verdict == SUSPECT:
            self._suspect(device, fr)
            return
        self.counters.no_schema += 1
        ack.append((item.boot, item.seq))
        if verdict == DUP:
            return
        batch.stored.append(LogRow(device, item.boot, item.seq, DATA, item.flags, fr.received, fr.received, fr.payload))
        self.held.hold(device, fr)

    def _data(self, batch: Batch, device: str, frames: list[RawFrame], order: Decoded, ack: Seqs) -> None:
        """Sequence, ACK and store decoded DATA frames of one device (in sequence order)."""
        if not order:
            return
        if len(order) > 1 and self._run(batch, device, frames, order, ack):
            return
        c = self.counters
        for idx, b, j in order:
            boot = int(b.boot[j])
            seq = int(b.seq[j])
            fr = frames[idx]
            verdict, skipped = self.sequence.observe(device, boot, seq)
            if skipped:
                self.gap_log.note(device, skipped)
            if verdict == SUSPECT:
                self._suspect(device, fr)
                continue
            ack.append((boot, seq))
            if verdict == DUP:
                self.summaries.add_duplicate(device)
                continue
            flags = int(b.flags[j])
            ns = b.values.shape[1]
            dev_s, t = self.clocks.frame_times(
                device,
                boot,
                int(b.ticks[j]),
                fr.received,
                age_ms=(ns - 1) * int(b.period_us[j]) / 1000.0,
                live=not flags & FLAG_HISTORICAL,
            )
            batch.stored.append(LogRow(device, boot, seq, DATA, flags, t, fr.received, fr.payload))
            c.data_frames += 1
            c.readings += ns * b.values.shape[2]
            batch.runs.append(DataRun(device, b, [j], verdict, skipped * ns if skipped else 0, [fr.received], dev_s, t))

    def _run(self, batch: Batch, device: str, frames: list[RawFrame], order: Decoded, ack: Seqs) -> bool:
        """The common case, vectorised: frames of one decoded batch, one boot, consecutive
        sequence numbers after everything seen, same flags and period. False: not that case."""
        b = order[0][1]
        if any(o[1] is not b for o in order):
            return False
        js = [o[2] for o in order]
        # Small per-device runs: plain lists beat numpy reductions here.
        boots = b.boot[js].tolist()
        flags = b.flags[js].tolist()
        periods = b.period_us[js].tolist()
        seq_list = b.seq[js].tolist()
        n = len(js)
        if (
            boots.count(boots[0]) != n
            or flags.count(flags[0]) != n
            or periods.count(periods[0]) != n
            or seq_list[-1] - seq_list[0] != n - 1
            or any(seq_list[k + 1] - seq_list[k] != 1 for k in range(n - 1))
        ):
            return False
        boot = boots[0]
        skipped = self.sequence.observe_run(device, boot, seq_list[0], seq_list[-1])
        if skipped is None:
            return False  # overlaps what was seen: per frame (duplicates, gap fills)
        if skipped:
            self.gap_log.note(device, skipped)
        ns = b.values.shape[1]
        received = [frames[o[0]].received for o in order]
        dev_s, wall = self.clocks.run_times(
            device,
            boot,
            b.ticks[js],
            np.asarray(received, dtype=np.float64),
            age_ms=(ns - 1) * periods[0] / 1000.0,
            live=not flags[0] & FLAG_HISTORICAL,
        )
        ack.extend((boot, q) for q in seq_list)
        payloads = [frames[o[0]].payload for o in order]
        batch.stored.append(StoredRun(device, boot, flags[0], seq_list, wall, received, payloads))
        c = self.counters
        c.data_frames += n
        c.readings += n * ns * b.values.shape[2]
        batch.runs.append(DataRun(device, b, js, "new", skipped * ns, received, float(dev_s[0]), float(wall[0])))
        return True

    # ------------------------------------------------------------------ LOSS
    def _losses(self, batch: Batch, device: str, frames: list[Any]) -> None:
        """LOSS frames: the device cannot send these ranges again; count them, report upward."""
        for frame in frames:
            self.counters.loss_frames += 1
            counted: dict[str, int] = {}
            for boot, first, last, reason in frame.fields["ranges"]:
                n = self.sequence.mark_lost(device, boot, first, last, reason)
                if n:
                    key = LOST_REASONS.get(reason, str(reason))
                    counted[key] = counted.get(key, 0) + n
            batch.seq_dirty.add(device)
            if counted:
                log.warning("device %s reports frames it cannot send again: %s", device, counted)
                self.outbox.forward(
                    "registry",
                    {
                        "event": "loss",
                        "device": device,
                        "at": batch.now,
                        "lost": counted,
                        "ranges": [list(r) for r in frame.fields["ranges"]],
                    },
                )
