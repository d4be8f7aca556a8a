"""The gateway pipeline: one batch of raw frames at a time, through every stage.

    raw frames -> topic + decode -> registry -> sequence (dup/gap) + time
               -> windows -> scoring -> decisions (alerts, actuator CMDs, summaries)
               -> raw log commit -> ACK per device

The alert path runs before the commit so an alert never waits for the disk;
the ACK runs after it, so a device only trims frames that are durable here.
Publishing and forwarding are injected (``Publisher``, ``submit``) so the
whole pipeline runs in tests with plain lists.
"""

from __future__ import annotations

import itertools
import json
import logging
import queue
import re
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from gateway.admission import Admission
from gateway.config import Config, ConfigError
from gateway.decisions import Alert, Command, Decider, Summaries
from gateway.ingest import RawFrame
from gateway.protocol import (
    MAX_RANGES,
    DataBatch,
    ProtocolError,
    Schema,
    decode_data_many,
    decode_frame,
    encode_ack,
    encode_cmd,
    make_schema,
    parse_topic,
    protocol_error,
    unpack_header,
)
from gateway.rawlog import LogRow, RawLog, SeqStates
from gateway.rawrequests import RawRequests
from gateway.registry import Registry
from gateway.repair import GapRepair
from gateway.scoring import ModelLike, ModelSpec, Scored, ScoringStage
from gateway.sequence import DUP, FILL, LOST_REASONS, SUSPECT, SequenceTracker
from gateway.summary_recovery import WATERMARK, rebuild
from gateway.timebase import DeviceClocks
from shared_protocol import (
    BIRTH,
    CMD_REBIRTH,
    CMD_RESEND,
    CMD_SET_OUTPUT,
    DATA,
    DEATH,
    EVENT,
    FLAG_HISTORICAL,
    HEALTH,
    LOSS,
)
from shared_protocol.repair import resend_arg

log = logging.getLogger(__name__)

_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_TYPE_OF_KIND = {"birth": BIRTH, "data": DATA, "event": EVENT, "health": HEALTH, "death": DEATH, "loss": LOSS}
MAX_BAD_DEVICES = 4096  # devices counted apart in BadFrames; the rest count under "?"
RESYNC_WINDOW = 4096  # sequence numbers below the highest that a first ACK after a start repeats
RESYNC_RUNS = 32  # at most this many runs of them (the newest)


class Publisher(Protocol):
    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> bool: ...


Submit = Callable[[str, dict[str, Any]], int | None]
"""Hands a record to the forwarder; returns a ticket for ``committed`` (or None)."""


@dataclass
class BadFrames:
    """Rejected frames counted per device and reason, with a bounded sample."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    sample: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=50))
    total: int = 0

    def add(self, device: str, reason: str, *, message: str, topic: str, payload: bytes, at: float) -> None:
        per = self.counts.get(device)
        if per is None:
            if len(self.counts) >= MAX_BAD_DEVICES:
                device = "?"  # a flood of invented ids must not grow this table
            per = self.counts.setdefault(device, {})
        per[reason] = per.get(reason, 0) + 1
        self.total += 1
        self.sample.append(
            {
                "at": at,
                "device": device,
                "topic": topic[:128],
                "reason": reason,
                "error": message[:200],
                "length": len(payload),
                "head_hex": payload[:48].hex(),
            }
        )


@dataclass
class Counters:
    batches: int = 0
    frames: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    readings: int = 0
    data_frames: int = 0
    no_schema: int = 0
    rebirth_requests: int = 0
    acks_sent: int = 0
    ack_ranges: int = 0
    acks_resynced: int = 0  # first ACKs after a start that repeat recent stored frames
    alerts: int = 0
    commands: int = 0
    publish_failures: int = 0
    summaries: int = 0
    pending_dropped: int = 0
    empty: int = 0  # zero-length messages (retained-message clears), ignored
    loss_frames: int = 0  # LOSS frames received (answers to CMD_RESEND)
    summaries_rebuilt: int = 0  # summary records rebuilt from the raw log at start-up
    alert_latency_ms_max: float = 0.0


@dataclass
class _Run:
    """Accepted DATA frames of one device: one batch, in order (plain data for windows)."""

    device: str
    batch: DataBatch
    rows: list[int]  # rows of the batch, in sequence order
    verdict: str  # "new" (in order) or "fill" (late, into a gap)
    missing: int  # samples known missing just before the first frame
    received: list[float]  # per frame
    dev_s: float  # device time of the first sample
    wall: float  # rebuilt wall-clock time of the first sample

    def follows(self, prev: _Run) -> bool:
        """True when this run continues prev without a gap (same device, batch, next seq)."""
        return (
            self.device == prev.device
            and self.batch is prev.batch
            and self.verdict == "new"
            and prev.verdict == "new"
            and not self.missing
            and int(self.batch.seq[self.rows[0]]) == int(prev.batch.seq[prev.rows[-1]]) + 1
        )


@dataclass
class _Ctl:
    """A control frame (BIRTH, EVENT, HEALTH) whose effects are applied, waiting to be sequenced."""

    frame: Any  # shared_protocol.decode.Frame
    fr: RawFrame
    birth: dict[str, Any] | None = None  # BIRTH: the registry record to forward when it is new


@dataclass
class _RawData:
    """A DATA frame stored without decoding (no usable schema yet), waiting to be sequenced."""

    boot: int
    seq: int
    flags: int
    fr: RawFrame


@dataclass
class Commit:
    """What one batch must make durable before its ACKs go out (plain data)."""

    rows: list[LogRow]
    seq_states: SeqStates
    registry_ops: list[tuple[str, tuple[Any, ...]]]
    acks: dict[str, list[tuple[int, int]]]
    now: float


def merge_commits(items: list[Commit]) -> Commit:
    """Several batches as one commit, in order (later sequence state wins)."""
    rows: list[LogRow] = []
    seq_states: SeqStates = {}
    ops: list[tuple[str, tuple[Any, ...]]] = []
    acks: dict[str, list[tuple[int, int]]] = {}
    for c in items:
        rows.extend(c.rows)
        seq_states.update(c.seq_states)
        ops.extend(c.registry_ops)
        for device, seqs in c.acks.items():
            acks.setdefault(device, []).extend(seqs)
    return Commit(rows=rows, seq_states=seq_states, registry_ops=ops, acks=acks, now=max(c.now for c in items))


class Writer:
    """Commits batches (and then ACKs them) on its own thread, in order.

    SQLite releases the GIL while it writes, so the next batch is decoded and
    scored meanwhile. Bounded: when it falls behind, submit() waits (and the
    wait is counted). A failed commit is fatal: the gateway must stop rather
    than ACK, or forget, frames it could not store.
    """

    def __init__(self, commit: Callable[[Commit], None], *, depth: int = 4) -> None:
        self._commit = commit
        self._queue: queue.Queue[Commit | None] = queue.Queue(maxsize=depth)
        self.waits = 0
        self.wait_s = 0.0
        self.commits = 0
        self.grouped = 0  # batches that shared another batch's commit
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="edgeline-commit", daemon=True)
        self._thread.start()

    def submit(self, commit: Commit) -> None:
        if self.error is not None:
            raise RuntimeError(f"raw log commit failed: {self.error}") from self.error
        try:
            self._queue.put_nowait(commit)
        except queue.Full:
            t0 = time.perf_counter()
            self.waits += 1
            self._queue.put(commit)
            self.wait_s += time.perf_counter() - t0

    def _run(self) -> None:
        stop = False
        while not stop:
            item = self._queue.get()
            if item is None:
                return
            # Group commit: everything that queued up meanwhile goes into the same transaction.
            items = [item]
            while True:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                items.append(more)
            try:
                self._commit(merge_commits(items) if len(items) > 1 else item)
                self.commits += 1
                self.grouped += len(items) - 1
            except BaseException as exc:
                log.critical("raw log commit failed, nothing more will be ACKed: %s", exc)
                self.error = exc
                return

    def close(self, timeout: float = 30.0) -> None:
        """Commit everything submitted, then stop."""
        self._queue.put(None)
        self._thread.join(timeout)


class Gateway:
    """All stages for one site; call ``process`` with each batch of raw frames."""

    def __init__(
        self,
        config: Config,
        publisher: Publisher,
        *,
        submit: Submit | None = None,
        models: dict[str, ModelLike] | None = None,
        clock: Callable[[], float] = time.time,
        rawlog: RawLog | None = None,
        committed: Callable[[int], bool] | None = None,
    ) -> None:
        """submit / committed: the forwarder's ``submit`` and ``committed`` (a ticket is durable).
        rawlog: the raw frame log to use (default: data_dir/rawlog.sqlite); fault tests pass
        one whose writes fail or stall."""
        self.config = config
        self.publisher = publisher
        self.submit = submit
        self.committed = committed
        self.clock = clock
        g = config.gateway
        self.site = g.site
        self.prefix = g.prefix
        data_dir = Path(g.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        self.registry = Registry(data_dir / "registry.sqlite")
        self.rawlog = rawlog or RawLog(
            data_dir / "rawlog.sqlite", max_bytes=config.rawlog.max_bytes, max_age_s=config.rawlog.max_age_s
        )
        sq = config.sequence
        self.sequence = SequenceTracker(max_jump=sq.max_jump, jump_confirm=sq.jump_confirm)
        for device, (current, streams) in self.rawlog.load_seq_states().items():
            self.sequence.restore(device, streams, current)
        rg = config.registry
        self.admission = Admission(
            set(self.registry.devices) | set(self.sequence.devices()),
            max_devices=rg.max_devices,
            devices_file=rg.devices_file,
            quarantine_size=rg.quarantine_size,
        )
        self.repair = GapRepair(
            self.sequence,
            self._send_resend,
            self._online,
            after_s=sq.resend_after_s,
            interval_s=sq.resend_interval_s,
            attempts=sq.resend_attempts,
        )
        self._seq_dirty: set[str] = set()  # sequence state changed outside a batch's ACKs
        # Devices stored before this start: their first ACK also repeats what is stored of their
        # recent frames, since the ACKs of the last commit before a crash may never have left.
        self._resync: set[str] = set(self.sequence.devices())
        self.clocks = DeviceClocks()
        self.bad = BadFrames()
        self.counters = Counters()
        self.decider = Decider(config.rules)
        now = clock()
        self.summaries = Summaries(config.summary.interval_s, start=now)
        self.started = now
        self._boot = self.registry.next_gateway_boot()
        self._seq = itertools.count(1)
        self._cmd_id = 0
        self._buf = bytearray(4096)  # CMD frames (processing thread)
        self._ack_buf = bytearray(4096)  # ACK frames (commit: processing or writer thread)
        self.writer: Writer | None = None
        self.raw_requests: RawRequests | None = None
        if submit is not None:
            r = config.raw
            self.raw_requests = RawRequests(
                data_dir,
                submit,
                before_s=r.alert_before_s,
                after_s=r.alert_after_s,
                holdoff_s=r.alert_holdoff_s,
                max_samples=r.max_samples,
            )
        self._schemas: dict[str, Schema] = {}
        self._schema_cache: dict[tuple[Any, ...], Schema] = {}
        self._summary_blocks: list[tuple[str, tuple[str, ...], Any]] = []
        self._later: list[tuple[list[LogRow], str, int, int, list[int], Any, list[float], list[bytes]]] = []
        self._topic_cache: dict[str, tuple[str, str] | None] = {}
        self._last_rebirth: dict[str, float] = {}
        self._pending: dict[str, deque[RawFrame]] = {}
        self.stages: list[ScoringStage] = []
        models = models or {}
        for p in config.pipelines:
            model = models.get(p.name)
            if model is None:
                continue
            spec = ModelSpec.of(model, threshold=p.threshold)
            try:
                self.stages.append(ScoringStage(p.name, model, spec, p.devices, p.channels))
            except ValueError as exc:
                raise ConfigError(f"pipelines: {exc}") from exc
        for device, info in self.registry.devices.items():
            if info.channels:
                self._learn_schema(device, info.channels)
        # (end of interval, ticket of its last record): the watermark moves once it is durable
        self._summary_marks: deque[tuple[float, int | None]] = deque()
        # Latest receive time of a frame already processed: a flush covers everything received
        # up to it, so it is the watermark (frames are processed in receive order).
        self._last_received = now
        self._recover_summaries(now)

    # ------------------------------------------------------------------ helpers
    def topic(self, device: str, kind: str) -> str:
        return f"{self.prefix}/{self.site}/{device}/{kind}"

    def _header(self) -> tuple[int, int, int]:
        # next() on itertools.count is atomic: ACKs (writer thread) and CMDs share the sequence.
        return self._boot, next(self._seq) & 0xFFFFFFFF, int(time.monotonic() * 1000) & ((1 << 30) - 1)

    def _publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        if not self.publisher.publish(topic, payload, qos=qos):
            self.counters.publish_failures += 1

    def _send_cmd(self, device: str, op: int, arg: bytes = b"") -> int:
        self._cmd_id = (self._cmd_id + 1) & 0xFFFFFFFF
        n = encode_cmd(self._buf, *self._header(), cmd_id=self._cmd_id, op=op, arg=arg)
        self._publish(self.topic(device, "cmd"), bytes(self._buf[:n]))
        return self._cmd_id

    def _forward(self, lane: str, record: dict[str, Any]) -> int | None:
        if self.submit is not None:
            return self.submit(lane, record)
        if lane == "summary":
            self._publish(
                f"{self.prefix}/{self.site}/_gateway/summary", json.dumps(record, separators=(",", ":")).encode()
            )
        return None

    # ------------------------------------------------------------------ summaries
    def flush_summaries(self, now: float) -> None:
        """Send the summaries of the interval in progress (each interval, and at a clean stop)."""
        ticket = None
        for rec in self.summaries.flush(now):
            rec["site"] = self.site
            self.counters.summaries += 1
            ticket = self._forward("summary", rec)
        self._summary_marks.append((self._last_received, ticket))
        self._settle_summaries()

    def _settle_summaries(self) -> None:
        """Move the summary watermark over every interval whose records are durable."""
        end = None
        marks = self._summary_marks
        while marks:
            t, ticket = marks[0]
            if ticket is not None and self.committed is not None and not self.committed(ticket):
                break
            end = t
            marks.popleft()
        if end is not None:
            self.registry.set_meta(WATERMARK, repr(end))

    def _recover_summaries(self, now: float) -> None:
        """Summaries of what the raw log received after the watermark (docs: summary_recovery)."""
        since = self.registry.get_meta(WATERMARK)
        if since is not None and self.submit is not None and float(since) < now:
            records = rebuild(
                self.rawlog, self._schemas, interval_s=self.config.summary.interval_s, since=float(since), until=now
            )
            ticket = None
            for rec in records:
                rec["site"] = self.site
                if rec.get("event") == "summary_missing":
                    log.warning("summaries %.0f..%.0f cannot be rebuilt: %s", rec["start"], rec["end"], rec["reason"])
                    ticket = self._forward("registry", rec)
                else:
                    self.counters.summaries_rebuilt += 1
                    ticket = self._forward("summary", rec)
            if records:
                log.info("rebuilt %d summary record(s) after the last run's watermark", len(records))
            self._summary_marks.append((now, ticket))
            self._settle_summaries()
        else:
            self.registry.set_meta(WATERMARK, repr(now))

    def _learn_schema(self, device: str, channels: Any) -> None:
        key = tuple(tuple(c) for c in channels)
        try:
            schema = self._schema_cache.get(key) or make_schema(channels)
        except ProtocolError as exc:
            log.warning("device %s: stored schema unusable (%s)", device, exc)
            return
        self._schemas[device] = schema
        self._schema_cache[key] = schema  # devices with the same channel table share one Schema
        rates = {float(c[5]) for c in schema.channels}
        rate = rates.pop() if len(rates) == 1 else None
        for stage in self.stages:
            stage.bind(device, schema.channels, rate)

    def _send_resend(self, device: str, ranges: list[tuple[int, int, int]]) -> None:
        self._send_cmd(device, CMD_RESEND, resend_arg(ranges))
        log.info("device %s: asked to resend %s", device, ranges)

    def _online(self, device: str) -> bool:
        info = self.registry.devices.get(device)
        return info is not None and info.online

    def _request_rebirth(self, device: str, now: float) -> None:
        last = self._last_rebirth.get(device)
        if last is not None and now - last < self.config.registry.rebirth_interval_s:
            return
        self._last_rebirth[device] = now
        self.counters.rebirth_requests += 1
        self._send_cmd(device, CMD_REBIRTH)
        log.info("device %s: DATA without a known BIRTH, asked it to rebirth", device)

    # ------------------------------------------------------------------ the batch
    def process(self, frames: list[RawFrame]) -> None:
        """Run one batch through every stage."""
        c = self.counters
        c.batches += 1
        c.frames += len(frames)
        now = self.clock()
        if frames:
            self._last_received = max(self._last_received, frames[-1].received)
        rows: list[LogRow] = []
        acks: dict[str, list[tuple[int, int]]] = {}
        data_by_device: dict[str, list[RawFrame]] = {}
        ctls: dict[str, list[_Ctl]] = {}
        losses: dict[str, list[Any]] = {}
        touched: dict[str, float] = {}
        cache = self._topic_cache
        admit = self.admission.admit
        for fr in frames:
            if not fr.payload:
                # A zero-length retained message clears a retained BIRTH/DEATH: not a frame.
                c.empty += 1
                continue
            parsed = cache.get(fr.topic) if fr.topic in cache else self._parse_topic(fr, now)
            if parsed is None:
                continue
            device, kind = parsed
            if not admit(device, now):
                continue  # counted in quarantine: nothing stored, ACKed or asked
            if fr.topic not in cache and len(cache) < 100_000:
                cache[fr.topic] = parsed
            if kind == "data":
                lst = data_by_device.get(device)
                if lst is None:
                    data_by_device[device] = [fr]
                else:
                    lst.append(fr)
            else:
                # Effects now (a BIRTH's schema is needed to decode the DATA after it); the
                # sequence number is taken in order with the DATA frames below.
                item = self._control_frame(device, kind=kind, fr=fr, now=now)
                if item is not None:
                    (losses if kind == "loss" else ctls).setdefault(device, []).append(item)
            if kind != "death" and touched.get(device, 0.0) < fr.received:
                touched[device] = fr.received
        accepted: list[_Run] = []
        raws: dict[str, list[_RawData]] = {}
        decoded_by_device = {
            device: (dframes, decoded, errors)
            for device, dframes, decoded, errors in self._decode_data(data_by_device, raws, now)
        }
        for device in decoded_by_device.keys() | ctls.keys() | raws.keys():
            dframes, decoded, errors = decoded_by_device.get(device, ([], [], []))
            self._sequence_device(
                device,
                dframes,
                decoded=decoded,
                errors=errors,
                ctls=ctls.get(device, []),
                raws=raws.setdefault(device, []),
                rows=rows,
                acks=acks,
                accepted=accepted,
                now=now,
            )
        for device, items in losses.items():
            self._apply_losses(device, items, now)

        # Alert path first: windows -> scores -> decisions, before any disk I/O and before
        # the bookkeeping below (raw-log rows, registry, reading statistics).
        if accepted:
            self._windows(accepted)
        for stage in self.stages:
            scored = stage.score_pending()
            if scored is not None:
                self._decide(scored)
        # Off the alert path.
        self._build_rows()
        for device, seen in touched.items():
            self.registry.touch(device, seen)
        self._flush_summary_blocks()

        # Durability, then ACK: here, or on the writer thread while the next batch is decoded.
        commit = Commit(
            rows=rows,
            seq_states=self._take_seq_states(acks.keys()),
            registry_ops=self.registry.take_pending(),
            acks=acks,
            now=now,
        )
        if self.writer is None:
            self.commit(commit)
        else:
            self.writer.submit(commit)

    def commit(self, commit: Commit) -> None:
        """Make a batch durable (registry, raw log + sequence state), then ACK it per device."""
        self.registry.write(commit.registry_ops)
        self.rawlog.commit_batch(commit.rows, commit.seq_states, now=commit.now)
        for device, seqs in commit.acks.items():
            extra: list[tuple[int, int]] = []
            if device in self._resync:
                self._resync.discard(device)
                extra = self._recent_stored(device, commit.seq_states.get(device))
                self.counters.acks_resynced += 1
            self._ack(device, seqs + extra)

    def _recent_stored(self, device: str, state: Any) -> list[tuple[int, int]]:
        """(boot, seq) of the frames of the device's current boot stored in the raw log, up to
        RESYNC_WINDOW numbers below the highest seen: what a device may still hold, unACKed."""
        if state is None or state[0] is None:
            return []
        boot = state[0]
        highest = next((st[2] for st in state[1] if st[0] == boot), -1)
        if highest < 0:
            return []
        seqs = self.rawlog.stored_seqs(device, boot, since=max(0, highest - RESYNC_WINDOW))
        runs = ranges_of([(boot, s) for s in seqs])[-RESYNC_RUNS:]  # a small ACK for a small board
        return [(boot, s) for _b, first, last in runs for s in range(first, last + 1)]

    def _parse_topic(self, fr: RawFrame, now: float) -> tuple[str, str] | None:
        try:
            prefix, site, device, kind = parse_topic(fr.topic)
        except ProtocolError as exc:
            # Count it against the device when the topic names one, else against "?".
            parts = fr.topic.split("/")
            who = parts[2] if len(parts) == 4 and _ID_RE.match(parts[2]) else "?"
            self.bad.add(who, exc.reason, message=str(exc), topic=fr.topic, payload=fr.payload, at=now)
            return None
        if prefix != self.prefix or site != self.site or kind not in _TYPE_OF_KIND:
            self.bad.add(
                device,
                "topic",
                message=f"topic {fr.topic!r} is not a device topic of this site",
                topic=fr.topic,
                payload=fr.payload,
                at=now,
            )
            return None
        return device, kind

    def _control_frame(self, device: str, *, kind: str, fr: RawFrame, now: float) -> Any:
        """Decode a non-DATA frame and apply what must happen at once (schema, registry).

        Returns the item to sequence (_Ctl), the decoded LOSS frame, or None (DEATH, rejected).
        """
        c = self.counters
        try:
            frame = decode_frame(fr.payload)
            if frame.type != _TYPE_OF_KIND[kind]:
                raise protocol_error(f"frame type {frame.type} published on a {kind!r} topic", "kind")
        except ProtocolError as exc:
            self.bad.add(device, exc.reason, message=str(exc), topic=fr.topic, payload=fr.payload, at=now)
            return None
        c.by_kind[kind] = c.by_kind.get(kind, 0) + 1
        if frame.type == DEATH:
            # The broker's copy of the device's last will: not sequenced, not ACKed.
            if self.registry.on_death(device, at=fr.received):
                self._forward("registry", {"event": "offline", "reason": "death", "device": device, "at": fr.received})
            return None
        if frame.type == LOSS:
            return frame  # not sequenced, not ACKed: applied after this batch's frames
        item = _Ctl(frame, fr)
        if frame.type == BIRTH:
            f = frame.fields
            self.clocks.set_tick_bits(device, int(f.get("tick_bits", 30)))
            changed = self._schemas.get(device) is None or self._schemas[device].channels != [
                tuple(ch) for ch in f["channels"]
            ]
            info = self.registry.on_birth(
                device, boot=frame.boot, fw_version=f["fw_version"], channels=f["channels"], at=fr.received
            )
            self._learn_schema(device, info.channels)
            item.birth = {"event": "birth", "at": fr.received, "changed": changed, **info.as_dict()}
            pending = self._pending.pop(device, None)
            if pending:
                # DATA that arrived before this BIRTH: decode it now.
                self._replay_pending(device, list(pending), now)
        elif frame.type == HEALTH:
            self.registry.on_health(device, boot=frame.boot, fields=frame.fields, at=fr.received)
        return item

    def _control_seq(self, device: str, item: _Ctl, *, rows: list[LogRow], ack: list[tuple[int, int]]) -> None:
        """Sequence a control frame (in order with the DATA of its batch), ACK and store it."""
        frame, fr = item.frame, item.fr
        verdict, _ = self.sequence.observe(device, frame.boot, frame.seq)
        if verdict == SUSPECT:
            self._suspect(device, fr)
            return
        ack.append((frame.boot, frame.seq))
        if item.birth is not None:
            rec = dict(item.birth)
            if rec.pop("changed") or verdict != DUP:
                self._forward("registry", rec)
        if verdict == DUP:
            return
        _dev_s, t = self.clocks.frame_times(
            device, frame.boot, frame.ticks, fr.received, live=not frame.flags & FLAG_HISTORICAL
        )
        rows.append(LogRow(device, frame.boot, frame.seq, frame.type, frame.flags, t, fr.received, fr.payload))

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

    def _apply_losses(self, device: str, frames: list[Any], now: float) -> None:
        """LOSS frames: the device cannot send these ranges again; count them, report upward."""
        seq = self.sequence
        for frame in frames:
            self.counters.loss_frames += 1
            counted: dict[str, int] = {}
            for boot, first, last, reason in frame.fields["ranges"]:
                n = seq.mark_lost(device, boot, first, last, reason)
                if n:
                    key = LOST_REASONS.get(reason, str(reason))
                    counted[key] = counted.get(key, 0) + n
            self._seq_dirty.add(device)
            if counted:
                log.warning("device %s reports frames it cannot send again: %s", device, counted)
                self._forward(
                    "registry",
                    {
                        "event": "loss",
                        "device": device,
                        "at": now,
                        "lost": counted,
                        "ranges": [list(r) for r in frame.fields["ranges"]],
                    },
                )

    def _take_seq_states(self, devices: Any) -> SeqStates:
        wanted = set(devices) | self._seq_dirty
        self._seq_dirty = set()
        return {d: (self.sequence.current_boot(d), self.sequence.export(d)) for d in wanted}

    def _replay_pending(self, device: str, frames: list[RawFrame], now: float) -> None:
        # The frames are already in the raw log and ACKed; only decode/window them.
        accepted: list[_Run] = []
        schema = self._schemas.get(device)
        if schema is None:
            return
        errors: list[tuple[int, ProtocolError]] = []
        for batch in decode_data_many([f.payload for f in frames], schema, errors):
            for j in range(len(batch)):
                fr = frames[int(batch.index[j])]
                flags = int(batch.flags[j])
                age_ms = (batch.values.shape[1] - 1) * int(batch.period_us[j]) / 1000.0
                dev_s, wall = self.clocks.frame_times(
                    device,
                    int(batch.boot[j]),
                    int(batch.ticks[j]),
                    fr.received,
                    age_ms=age_ms,
                    live=not flags & FLAG_HISTORICAL,
                )
                accepted.append(_Run(device, batch, [j], "new", 0, [fr.received], dev_s, wall))
        for i, exc in errors:
            self.bad.add(device, exc.reason, message=str(exc), topic=frames[i].topic, payload=frames[i].payload, at=now)
        if accepted:
            self._windows(accepted)

    def _build_rows(self) -> None:
        """The raw-log rows of the DATA runs accepted in this batch (deferred by _data_run)."""
        for rows, device, boot, flag, seq_list, wall, received, payloads in self._later:
            rows.extend(
                [
                    LogRow(device, boot, q, DATA, flag, t, r, pl)
                    for q, t, r, pl in zip(seq_list, wall.tolist(), received, payloads, strict=True)
                ]
            )
        self._later.clear()

    def _flush_summary_blocks(self) -> None:
        for device, names, block in self._summary_blocks:
            self.summaries.add_values(device, names, block)
        self._summary_blocks.clear()

    def _decode_data(
        self,
        data_by_device: dict[str, list[RawFrame]],
        raws: dict[str, list[_RawData]],
        now: float,
    ) -> list[tuple[str, list[RawFrame], list[tuple[int, DataBatch, int]], list[tuple[int, ProtocolError]]]]:
        """Decode every device's DATA, one vectorised call per schema (devices sharing a schema share it).

        Returns per device: its frames, [(frame index, batch, row)] in arrival order, and rejections.
        DATA of a device without a known schema goes to ``raws`` (stored undecoded).
        """
        groups: dict[int, tuple[Schema, list[str]]] = {}
        for device, dframes in data_by_device.items():
            schema = self._schemas.get(device)
            if schema is None:
                self._request_rebirth(device, now)
                raws.setdefault(device, []).extend(self._raw_items(device, dframes, now))
                continue
            g = groups.get(id(schema))
            if g is None:
                groups[id(schema)] = (schema, [device])
            else:
                g[1].append(device)
        out = []
        for schema, devices in groups.values():
            payloads: list[bytes] = []
            owner: list[int] = []
            local: list[int] = []
            for k, device in enumerate(devices):
                dframes = data_by_device[device]
                payloads.extend(f.payload for f in dframes)
                owner.extend([k] * len(dframes))
                local.extend(range(len(dframes)))
            errors: list[tuple[int, ProtocolError]] = []
            batches = decode_data_many(payloads, schema, errors)
            decoded: list[list[tuple[int, DataBatch, int]]] = [[] for _ in devices]
            for b in batches:
                for j, idx in enumerate(b.index.tolist()):
                    decoded[owner[idx]].append((local[idx], b, j))
            errs: list[list[tuple[int, ProtocolError]]] = [[] for _ in devices]
            for idx, exc in errors:
                errs[owner[idx]].append((local[idx], exc))
            for k, device in enumerate(devices):
                if len(batches) > 1:
                    decoded[k].sort(key=lambda t: t[0])
                out.append((device, data_by_device[device], decoded[k], errs[k]))
        return out

    def _sequence_device(
        self,
        device: str,
        frames: list[RawFrame],
        *,
        decoded: list[tuple[int, DataBatch, int]],
        errors: list[tuple[int, ProtocolError]],
        ctls: list[_Ctl],
        raws: list[_RawData],
        rows: list[LogRow],
        acks: dict[str, list[tuple[int, int]]],
        accepted: list[_Run],
        now: float,
    ) -> None:
        """Take the sequence numbers of one device's frames of this batch in (boot, seq) order.

        Control frames and DATA interleave in sequence; taking a HEALTH before the DATA
        that precede it would make those DATA "late" (stored, never scored) and report a
        false gap. The common case, DATA only, keeps the vectorised path.
        """
        stale = False
        for i, exc in errors:
            fr = frames[i]
            self.bad.add(device, exc.reason, message=str(exc), topic=fr.topic, payload=fr.payload, at=now)
            if exc.reason == "schema":
                # Another schema than the gateway holds (a BIRTH it missed, or frames of a
                # rate change replayed late): store it undecoded and ACK it like DATA
                # without a schema, so the device does not re-send it forever.
                stale = True
                raws.extend(self._raw_items(device, [fr], now))
        if stale:
            self._request_rebirth(device, now)
        ack = acks.get(device)
        if ack is None:
            ack = acks[device] = []
        if decoded:
            self.counters.by_kind["data"] = self.counters.by_kind.get("data", 0) + len(decoded)
        if not ctls and not raws:
            self._data_group(device, frames, decoded, rows=rows, ack=ack, accepted=accepted)
            return
        ref = self.sequence.current_boot(device)
        items: list[tuple[int, int, int, Any]] = []
        for d in decoded:
            b, j = d[1], d[2]
            items.append((int(b.boot[j]), int(b.seq[j]), 0, d))
        items.extend((r.boot, r.seq, 1, r) for r in raws)
        items.extend((c.frame.boot, c.frame.seq, 2, c) for c in ctls)
        if ref is None:
            ref = items[0][0]
        # Older boots first (serial-number order around the device's current boot), then seq.
        items.sort(key=lambda t: (((t[0] - ref + 0x8000) & 0xFFFF), t[1]))
        run: list[tuple[int, DataBatch, int]] = []
        for _boot, _seq, kind, obj in items:
            if kind == 0:
                run.append(obj)
                continue
            if run:
                self._data_group(device, frames, run, rows=rows, ack=ack, accepted=accepted)
                run = []
            if kind == 1:
                self._raw_seq(device, obj, rows=rows, ack=ack)
            else:
                self._control_seq(device, obj, rows=rows, ack=ack)
        if run:
            self._data_group(device, frames, run, rows=rows, ack=ack, accepted=accepted)

    def _data_group(
        self,
        device: str,
        frames: list[RawFrame],
        order: list[tuple[int, DataBatch, int]],
        *,
        rows: list[LogRow],
        ack: list[tuple[int, int]],
        accepted: list[_Run],
    ) -> None:
        """Sequence, ACK and store decoded DATA frames of one device (in sequence order)."""
        if not order:
            return
        if len(order) > 1 and self._data_run(device, frames, order, rows=rows, ack=ack, accepted=accepted):
            return
        c = self.counters
        seq_obs = self.sequence.observe
        clocks = self.clocks
        for idx, b, j in order:
            boot = int(b.boot[j])
            seq = int(b.seq[j])
            fr = frames[idx]
            verdict, skipped = seq_obs(device, boot, seq)
            if verdict == SUSPECT:
                self._suspect(device, fr)
                continue
            ack.append((boot, seq))
            if verdict == DUP:
                self.summaries.add_duplicate(device)
                continue
            flags = int(b.flags[j])
            ns = b.values.shape[1]
            dev_s, t = clocks.frame_times(
                device,
                boot,
                int(b.ticks[j]),
                fr.received,
                age_ms=(ns - 1) * int(b.period_us[j]) / 1000.0,
                live=not flags & FLAG_HISTORICAL,
            )
            rows.append(LogRow(device, boot, seq, DATA, flags, t, fr.received, fr.payload))
            c.data_frames += 1
            c.readings += ns * b.values.shape[2]
            accepted.append(_Run(device, b, [j], verdict, skipped * ns if skipped else 0, [fr.received], dev_s, t))

    def _data_run(
        self,
        device: str,
        frames: list[RawFrame],
        order: list[tuple[int, DataBatch, int]],
        *,
        rows: list[LogRow],
        ack: list[tuple[int, int]],
        accepted: list[_Run],
    ) -> bool:
        """The common case, vectorised: frames of one batch, one boot, consecutive sequence
        numbers after everything seen, same flags and period. False: not that case."""
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
        run = self.sequence.observe_run(device, boot, seq_list[0], seq_list[-1])
        if run is None:
            return False  # overlaps what was seen: per frame (duplicates, gap fills)
        skipped = run
        flag = flags[0]
        ns = b.values.shape[1]
        received = [frames[o[0]].received for o in order]
        dev_s, wall = self.clocks.run_times(
            device,
            boot,
            b.ticks[js],
            np.asarray(received, dtype=np.float64),
            age_ms=(ns - 1) * periods[0] / 1000.0,
            live=not flag & FLAG_HISTORICAL,
        )
        ack.extend((boot, q) for q in seq_list)
        # The raw-log rows are built after the alerts are out (process() runs _later).
        self._later.append((rows, device, boot, flag, seq_list, wall, received, [frames[o[0]].payload for o in order]))
        c = self.counters
        c.data_frames += n
        c.readings += n * ns * b.values.shape[2]
        accepted.append(_Run(device, b, js, "new", skipped * ns, received, float(dev_s[0]), float(wall[0])))
        return True

    def _raw_items(self, device: str, frames: list[RawFrame], now: float) -> list[_RawData]:
        """DATA frames to store undecoded: header and CRC checked, the rest counted bad."""
        out: list[_RawData] = []
        for fr in frames:
            try:
                _v, ftype, flags, boot, seq, _ticks = unpack_header(fr.payload)
                if ftype != DATA:
                    raise protocol_error(f"frame type {ftype} published on a 'data' topic", "kind")
            except ProtocolError as exc:
                self.bad.add(device, exc.reason, message=str(exc), topic=fr.topic, payload=fr.payload, at=now)
                continue
            out.append(_RawData(boot, seq, flags, fr))
        return out

    def _raw_seq(self, device: str, item: _RawData, *, rows: list[LogRow], ack: list[tuple[int, int]]) -> None:
        """No usable schema: store (and ACK) the frame raw, keep a few to decode after the BIRTH."""
        fr = item.fr
        verdict, _ = self.sequence.observe(device, item.boot, item.seq)
        if verdict == SUSPECT:
            self._suspect(device, fr)
            return
        self.counters.no_schema += 1
        ack.append((item.boot, item.seq))
        if verdict == DUP:
            return
        rows.append(LogRow(device, item.boot, item.seq, DATA, item.flags, fr.received, fr.received, fr.payload))
        cap = self.config.registry.pending_per_device
        if cap:
            pending = self._pending.get(device)
            if pending is None:
                pending = self._pending[device] = deque()
            if len(pending) >= cap:
                pending.popleft()
                self.counters.pending_dropped += 1
            pending.append(fr)

    # ------------------------------------------------------------------ windows, scores
    def _windows(self, accepted: list[_Run]) -> None:
        """Feed accepted DATA to summaries and the scoring stages, in runs of consecutive frames."""
        n = len(accepted)
        i = 0
        while i < n:
            a = accepted[i]
            k = i + 1
            while k < n and accepted[k].follows(accepted[k - 1]):
                k += 1
            if k - i == 1:
                sel = a.rows
                received = a.received
            else:
                sel = [r for run in accepted[i:k] for r in run.rows]
                received = [t for run in accepted[i:k] for t in run.received]
            b = a.batch
            contiguous = sel[-1] - sel[0] == len(sel) - 1
            values = b.values[sel[0] : sel[-1] + 1] if contiguous else b.values[sel]
            block = values.reshape(-1, values.shape[2])
            device = a.device
            self._summary_blocks.append((device, tuple(self._schemas[device].names), block))
            if a.verdict == FILL:
                for stage in self.stages:
                    for _ in sel:
                        stage.late_frame(device)
                i = k
                continue
            if a.missing:
                self.summaries.add_gap(device)
            if self.stages:
                boot = int(b.boot[sel[0]])
                period_s = int(b.period_us[sel[0]]) * 1e-6
                historical = bool(int(b.flags[sel[-1]]) & FLAG_HISTORICAL)
                received_arr = np.asarray(received, dtype=np.float64)
                seqs = b.seq[sel].astype(np.int64)
                for stage in self.stages:
                    stage.push(
                        device,
                        block,
                        boot=boot,
                        period_s=period_s,
                        dev_time=a.dev_s,
                        wall_time=a.wall,
                        received=received_arr,
                        seqs=seqs,
                        historical=historical,
                        missing_samples=a.missing,
                    )
            i = k

    def _decide(self, scored: Scored) -> None:
        now = self.clock()
        alerts, commands = self.decider.decide(
            pipeline=scored.pipeline,
            devices=scored.devices,
            window_end=scored.window_end,
            received=scored.received,
            historical=scored.historical,
            scores=scored.scores,
            boot=scored.boot,
            seq=scored.seq,
            threshold=scored.threshold,
            model_version=scored.model_version,
            now=now,
        )
        for alert in alerts:
            self._alert(alert)
        for cmd in commands:
            self._command(cmd)
        # Score statistics per device for the summaries (windows of a device are adjacent).
        devices = scored.devices
        start = 0
        for k in range(1, len(devices) + 1):
            if k == len(devices) or devices[k] != devices[start]:
                self.summaries.add_scores(devices[start], scored.pipeline, scored.scores[start:k], scored.threshold)
                start = k

    def _alert(self, alert: Alert) -> None:
        c = self.counters
        c.alerts += 1
        self._publish(self.topic(alert.device, "alert"), alert.to_json())
        lat = (alert.decided - alert.received) * 1000.0
        c.alert_latency_ms_max = max(c.alert_latency_ms_max, lat)
        rec = alert.to_record()
        rec["site"] = self.site
        self._forward("alert", rec)
        if self.raw_requests is not None and self.config.raw.alerts:
            self.raw_requests.on_alert(alert, alert.decided)

    def _command(self, cmd: Command) -> None:
        self.counters.commands += 1
        arg = struct.pack("<BBI", cmd.output, cmd.value, cmd.duration_ms)
        cmd_id = self._send_cmd(cmd.device, CMD_SET_OUTPUT, arg)
        log.info(
            "rule %s: alert from %s -> CMD_SET_OUTPUT %s output %d = %d for %d ms (cmd %d)",
            cmd.rule,
            cmd.cause.device,
            cmd.device,
            cmd.output,
            cmd.value,
            cmd.duration_ms,
            cmd_id,
        )

    # ------------------------------------------------------------------ ACK
    def _ack(self, device: str, seqs: list[tuple[int, int]]) -> None:
        ranges = ranges_of(seqs)
        c = self.counters
        for start in range(0, len(ranges), MAX_RANGES):
            part = ranges[start : start + MAX_RANGES]
            n = encode_ack(self._ack_buf, *self._header(), part)
            self._publish(self.topic(device, "ack"), bytes(self._ack_buf[:n]))
            c.acks_sent += 1
            c.ack_ranges += len(part)

    # ------------------------------------------------------------------ periodic
    def tick(self, now: float | None = None) -> None:
        """Timers: silence -> offline, summaries. Cheap; call between batches."""
        now = self.clock() if now is None else now
        for info in self.registry.check_silence(now, self.config.registry.offline_after_s):
            self._forward("registry", {"event": "offline", "reason": "silence", "device": info.device, "at": now})
        if self.summaries.due(now):
            self.flush_summaries(now)
        elif self._summary_marks:
            self._settle_summaries()
        if self.raw_requests is not None:
            self.raw_requests.serve(now)
        for gave_up in self.repair.tick(now):
            self._seq_dirty.add(gave_up.device)
            log.warning(
                "device %s never answered CMD_RESEND: %d frame(s) counted lost, %d older boot(s) closed",
                gave_up.device,
                gave_up.frames,
                gave_up.tails,
            )
            self._forward(
                "registry",
                {
                    "event": "loss",
                    "device": gave_up.device,
                    "at": now,
                    "lost": {"unanswered": gave_up.frames},
                    "boots_closed": gave_up.tails,
                },
            )
        ops = self.registry.take_pending()
        seq_states = self._take_seq_states(()) if self._seq_dirty else {}
        if ops or seq_states:
            commit = Commit(rows=[], seq_states=seq_states, registry_ops=ops, acks={}, now=now)
            if self.writer is None:
                self.commit(commit)
            else:
                self.writer.submit(commit)

    def pipeline_windows(self, device: str, pipeline: str | None = None) -> dict[str, int]:
        """Window counters of one device in one pipeline (the first when not named)."""
        for stage in self.stages:
            if pipeline is None or stage.name == pipeline:
                return stage.window_stats().get(device, {})
        return {}

    def start_writer(self, depth: int = 4) -> None:
        """Commit (and ACK) on a writer thread from now on."""
        if self.writer is None:
            self.writer = Writer(self.commit, depth=depth)

    def close(self) -> None:
        self._settle_summaries()
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        self.registry.close()
        self.rawlog.close()

    def status(self) -> dict[str, Any]:
        c = self.counters
        rl = self.rawlog.stats()
        return {
            "gateway": self.config.gateway.id,
            "site": self.site,
            "uptime_s": round(self.clock() - self.started, 1),
            "frames": {
                "batches": c.batches,
                "received": c.frames,
                "by_kind": dict(c.by_kind),
                "data_accepted": c.data_frames,
                "readings": c.readings,
                "no_schema": c.no_schema,
                "pending_dropped": c.pending_dropped,
                "empty_ignored": c.empty,
            },
            "bad_frames": {
                "total": self.bad.total,
                "by_device": self.bad.counts,
                "sample": list(self.bad.sample)[-10:],
            },
            "sequence": {d: vars(s) for d, s in sorted(self.sequence.counters.items())},
            "repair": {
                "resend_requests": self.repair.requests,
                "devices_waiting": self.repair.pending(),
                "given_up": self.repair.given_up,
                "loss_frames": c.loss_frames,
            },
            "admission": self.admission.stats(),
            "acks": {"sent": c.acks_sent, "ranges": c.ack_ranges, "resynced": c.acks_resynced},
            "rebirth_requests": c.rebirth_requests,
            "raw_requests": self.raw_requests.stats() if self.raw_requests is not None else None,
            "alerts": c.alerts,
            "alert_latency_ms_max": round(c.alert_latency_ms_max, 3),
            "commands": c.commands,
            "rules": self.decider.rule_stats(),
            "publish_failures": c.publish_failures,
            "summaries": c.summaries,
            "summaries_rebuilt": c.summaries_rebuilt,
            "pipelines": {
                s.name: {
                    "model_version": s.spec.version,
                    "windows_scored": s.stats.windows_scored,
                    "calls": s.stats.calls,
                    "inference_s": round(s.stats.seconds, 3),
                    "unmatched_devices": dict(s.stats.unmatched_devices),
                    "windows": s.window_stats(),
                }
                for s in self.stages
            },
            "rawlog": vars(rl),
            "devices": {
                d: {"online": i.online, "state": i.state_reason, "last_seen": i.last_seen}
                for d, i in sorted(self.registry.devices.items())
            },
        }


def ranges_of(seqs: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """Collapse (boot, seq) pairs into inclusive (boot, first, last) ranges."""
    out: list[tuple[int, int, int]] = []
    for boot, seq in sorted(set(seqs)):
        if out and out[-1][0] == boot and out[-1][2] + 1 == seq:
            out[-1] = (boot, out[-1][1], seq)
        else:
            out.append((boot, seq, seq))
    return out
