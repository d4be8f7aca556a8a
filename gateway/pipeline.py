"""The gateway pipeline: one batch of raw frames at a time, through small stages that
pass one ``Batch`` forward (gateway/batch.py):

    route     topic -> device and kind, admission          gateway/route.py
    control   BIRTH/HEALTH/EVENT/DEATH/LOSS effects         gateway/control.py
    accept    DATA decode, sequence (dup/gap), time          gateway/accept.py
    alerting  windows -> scores -> decisions -> alerts/CMDs  gateway/alerting.py
    persist   raw log + registry commit, then ACK per device gateway/writer.py, acker.py

The alert path runs before the commit so an alert never waits for the disk; the ACK
runs after it, so a device only trims frames that are durable here. This module
wires the stages to their shared state and runs them; ``tick`` runs the timers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.accept import AcceptStage
from gateway.acker import Acker, Header, Publisher, recent_stored
from gateway.admission import Admission
from gateway.alerting import AlertStage
from gateway.alertstate import AlertPolicy
from gateway.atrest import KeyRing
from gateway.batch import Batch, Commit
from gateway.calibration import Calibrator, check_model
from gateway.config import Config, ConfigError
from gateway.control import ControlStage, HeldData
from gateway.counters import BadFrames, Counters
from gateway.decisions import Decider, Summaries
from gateway.hadiscovery import HADiscovery
from gateway.ingest import RawFrame
from gateway.live import HISTORY_POINTS, LiveView
from gateway.localstate import LocalState
from gateway.outbox import Outbox, Submit
from gateway.rawlog import RawLog, SeqStates
from gateway.rawrequests import RawRequests
from gateway.registry import Registry
from gateway.repair import GapRepair
from gateway.route import Router
from gateway.schemas import SchemaBook
from gateway.scoring import ModelLike, ModelSpec, ScoringStage
from gateway.sequence import SequenceTracker
from gateway.status import report
from gateway.summaryflow import SummaryFlow
from gateway.timebase import DeviceClocks
from gateway.writer import Writer
from shared_protocol import CMD_RESEND
from shared_protocol.gw_encode import cmd_arg

__all__ = ["Gateway", "Publisher", "Submit"]

log = logging.getLogger(__name__)


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
        keys: KeyRing | None = None,
    ) -> None:
        """submit / committed: the forwarder's ``submit`` and ``committed`` (a ticket is durable).
        rawlog: the raw frame log to use (default: data_dir/rawlog.sqlite); fault tests pass
        one whose writes fail or stall.  keys: encrypt the raw log at rest ([encryption])."""
        self.config = config
        self.clock = clock
        g = config.gateway
        self.site = g.site
        data_dir = Path(g.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        self.registry = Registry(data_dir / "registry.sqlite")
        self.rawlog = rawlog or RawLog(
            data_dir / "rawlog.sqlite",
            max_bytes=config.rawlog.max_bytes,
            max_age_s=config.rawlog.max_age_s,
            cipher=keys.cipher() if keys is not None else None,
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
        self.clocks = DeviceClocks()
        self.bad = BadFrames()
        self.counters = Counters()
        al = config.alerts
        self.decider = Decider(
            config.rules,
            AlertPolicy(
                raise_after=al.raise_after,
                clear_below=al.clear_below,
                clear_after=al.clear_after,
                update_interval_s=al.update_interval_s,
            ),
        )
        self.alerts = self.decider.states  # per-device thresholds: alerts.set_threshold(...)
        now = clock()
        self.started = now
        self.summaries = Summaries(config.summary.interval_s, start=now)
        header = Header(self.registry.next_gateway_boot())
        self.outbox = Outbox(publisher, header, self.counters, prefix=g.prefix, site=g.site, submit=submit)
        # Devices stored before this start: their first ACK also repeats what is stored of their
        # recent frames, since the ACKs of the last commit before a crash may never have left.
        self.acker = Acker(
            publisher,
            header,
            lambda device: self.outbox.topic(device, "ack"),
            resync=set(self.sequence.devices()),
            recent_stored=lambda device, state: recent_stored(self.rawlog, device, state),
        )
        self.writer: Writer | None = None
        self.repair = GapRepair(
            self.sequence,
            self._send_resend,
            self._online,
            after_s=sq.resend_after_s,
            interval_s=sq.resend_interval_s,
            attempts=sq.resend_attempts,
        )
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
                reader=self.rawlog.reader,  # served on the processing thread, as its other reads
            )
        # plot histories only for the status page (readings from the raw log; scores 1.2 KB per device)
        self.live = LiveView(
            self.registry,
            rawlog=self.rawlog.path,
            points=HISTORY_POINTS if config.web.enabled else 0,
            keys=keys,
        )
        self.stages = self._scoring_stages(models or {})
        self.local_state = LocalState(
            config, registry=self.registry, live=self.live, outbox=self.outbox, stages=self.stages
        )
        self.ha: HADiscovery | None = None  # Home Assistant discovery, when [homeassistant] enables it
        if config.homeassistant.enabled:
            self.ha = HADiscovery(
                config, registry=self.registry, outbox=self.outbox, pipelines=self.local_state.pipelines, live=self.live
            )
        self.schemas = SchemaBook(self.stages)
        for device, info in self.registry.devices.items():
            if info.channels:
                self.schemas.learn(device, info.channels)
        held = HeldData(rg.pending_per_device, self.counters)
        self.router = Router(
            prefix=g.prefix, site=g.site, admission=self.admission, bad=self.bad, counters=self.counters
        )
        self.control = ControlStage(
            registry=self.registry,
            schemas=self.schemas,
            clocks=self.clocks,
            held=held,
            outbox=self.outbox,
            bad=self.bad,
            counters=self.counters,
        )
        self.accept = AcceptStage(
            sequence=self.sequence,
            clocks=self.clocks,
            schemas=self.schemas,
            held=held,
            summaries=self.summaries,
            outbox=self.outbox,
            bad=self.bad,
            counters=self.counters,
            rebirth_interval_s=rg.rebirth_interval_s,
        )
        self.alerting = AlertStage(
            stages=self.stages,
            schemas=self.schemas,
            decider=self.decider,
            summaries=self.summaries,
            outbox=self.outbox,
            counters=self.counters,
            raw_requests=self.raw_requests if config.raw.alerts else None,
            live=self.live,
            clock=clock,
        )
        self.summary_flow = SummaryFlow(
            self.summaries, registry=self.registry, outbox=self.outbox, counters=self.counters, committed=committed
        )
        self.summary_flow.recover(self.rawlog, self.schemas, interval_s=config.summary.interval_s, now=now)

    def _scoring_stages(self, models: dict[str, ModelLike]) -> list[ScoringStage]:
        stages = []
        for n, p in enumerate(self.config.pipelines):
            model = models.get(p.name)
            if model is None:
                continue
            spec = ModelSpec.of(model, threshold=p.threshold)
            try:
                stage = ScoringStage(p.name, model, spec, p.devices, p.channels)
            except ValueError as exc:
                raise ConfigError(f"pipelines: {exc}") from exc
            if p.calibrate is not None:
                check_model(p, model, f"pipelines[{n}].calibrate")
                stage.calibration = Calibrator(
                    p.name,
                    p.calibrate,
                    model,
                    Path(self.config.gateway.data_dir),
                    sink=self.alerts.set_calibrated,
                    clock=self.clock,
                )
            stages.append(stage)
        return stages

    def calibrators(self) -> dict[str, Calibrator]:
        """The pipelines that calibrate per device ([[pipelines]] calibrate), by name."""
        return {s.name: s.calibration for s in self.stages if s.calibration is not None}

    def _send_resend(self, device: str, ranges: list[tuple[int, int, int]]) -> None:
        self.outbox.cmd(device, CMD_RESEND, cmd_arg(CMD_RESEND, ranges))
        log.info("device %s: asked to resend %s", device, ranges)

    def _online(self, device: str) -> bool:
        info = self.registry.devices.get(device)
        return info is not None and info.online

    # ------------------------------------------------------------------ the batch
    def process(self, frames: list[RawFrame]) -> None:
        """Run one batch through every stage."""
        c = self.counters
        c.batches += 1
        c.frames += len(frames)
        batch = Batch(now=self.clock(), frames=frames)
        if frames:
            flow = self.summary_flow
            flow.last_received = max(flow.last_received, frames[-1].received)
        self.router.route(batch)
        self.control.apply(batch)
        for device, _, _ in batch.inbox:  # BIRTH, HEALTH, DEATH: what the registry keeps changed
            self.live.touch(device)
        self.accept.accept(batch)
        self.alerting.run(batch)  # alerts and CMDs are out before any disk I/O
        for device, seen in batch.touched.items():
            if self.registry.touch(device, seen):
                self.live.touch(device)
                log.info("device %s: online again", device)
                self.outbox.forward("registry", {"event": "online", "reason": "data", "device": device, "at": seen})
        if batch.summary_blocks:
            self.summaries.add_blocks(batch.summary_blocks)
        self._persist(
            Commit(
                rows=batch.log_rows(),
                seq_states=self._seq_states(batch.acks.keys() | batch.seq_dirty),
                registry_ops=self.registry.take_pending(),
                acks=batch.acks,
                now=batch.now,
            )
        )

    def _seq_states(self, devices: Any) -> SeqStates:
        return {d: (self.sequence.current_boot(d), self.sequence.export(d)) for d in devices}

    def _persist(self, commit: Commit) -> None:
        """Durability, then ACK: here, or on the writer thread while the next batch is decoded."""
        if self.writer is not None:
            self.writer.submit(commit)
            return
        self.store(commit)
        self.acker.add(commit.acks, commit.seq_states)
        self.acker.flush(force=True)

    def store(self, commit: Commit) -> None:
        """Make a commit durable: registry, raw log + sequence state (one transaction each)."""
        self.registry.write(commit.registry_ops)
        self.rawlog.commit_batch(commit.rows, commit.seq_states, now=commit.now)

    # ------------------------------------------------------------------ periodic
    def flush_summaries(self, now: float) -> None:
        """Send the summaries of the interval in progress (each interval, and at a clean stop)."""
        self.summary_flow.flush(now)

    def tick(self, now: float | None = None) -> None:
        """Timers: silence -> offline, summaries, raw requests, gap repair. Cheap; call between batches."""
        now = self.clock() if now is None else now
        for info in self.registry.check_silence(now, self.config.registry.offline_after_s):
            log.info("device %s: offline (silent for %.0f s)", info.device, now - info.last_seen)
            self.live.touch(info.device)
            self.outbox.forward("registry", {"event": "offline", "reason": "silence", "device": info.device, "at": now})
        if self.summaries.due(now):
            self.summary_flow.flush(now)
        elif self.summary_flow.pending():
            self.summary_flow.settle()
        if self.raw_requests is not None:
            self.raw_requests.serve(now)
        changed = self.local_state.tick(now)  # availability, alert states, JSON state
        if self.ha is not None:
            self.ha.sync(changed)
            self.ha.serve()
        dirty = self._repair(now)
        ops = self.registry.take_pending()
        if ops or dirty:
            self._persist(Commit(rows=[], seq_states=self._seq_states(dirty), registry_ops=ops, acks={}, now=now))

    def _repair(self, now: float) -> set[str]:
        """Ask for what is missing; report what devices never sent. Returns the devices changed."""
        dirty = set()
        for gave_up in self.repair.tick(now):
            dirty.add(gave_up.device)
            log.warning(
                "device %s never answered CMD_RESEND: %d frame(s) counted lost, %d older boot(s) closed",
                gave_up.device,
                gave_up.frames,
                gave_up.tails,
            )
            self.outbox.forward(
                "registry",
                {
                    "event": "loss",
                    "device": gave_up.device,
                    "at": now,
                    "lost": {"unanswered": gave_up.frames},
                    "boots_closed": gave_up.tails,
                },
            )
        return dirty

    def pipeline_windows(self, device: str, pipeline: str | None = None) -> dict[str, int]:
        """Window counters of one device in one pipeline (the first when not named)."""
        for stage in self.stages:
            if pipeline is None or stage.name == pipeline:
                return stage.window_stats().get(device, {})
        return {}

    def start_writer(
        self,
        depth: int = 4,
        *,
        group_s: float = 0.0,
        ack_interval_s: float = 0.0,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        """Commit (and ACK) on a writer thread from now on: commits grouped over group_s, at most
        one ACK per device per ack_interval_s; on_error(exc) on the writer thread if a commit fails."""
        if self.writer is None:
            self.acker.interval_s = ack_interval_s
            self.writer = Writer(self.store, self.acker, depth=depth, group_s=group_s, on_error=on_error)

    def close(self, timeout: float = 30.0) -> bool:
        """Commit and ACK what was processed, then close the databases. False when the writer
        thread did not finish within timeout (a stalled disk): the databases stay open under it."""
        self.summary_flow.settle()
        if self.writer is not None:
            if not self.writer.close(timeout):
                return False
            self.writer = None
        self.registry.close()
        self.rawlog.close()
        return True

    def status(self) -> dict[str, Any]:
        return report(self)
