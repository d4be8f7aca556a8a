"""The alert path: windows -> scores -> decisions -> alerts and actuator CMDs, published
before anything of the batch touches the disk. Also hands each accepted block of
readings on for the interval summaries (``batch.summary_blocks``)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from gateway.alertstate import CLEARED, RAISED
from gateway.batch import Batch, DataRun
from gateway.counters import Counters
from gateway.decisions import Alert, Command, Decider, Summaries
from gateway.live import LiveView
from gateway.outbox import Outbox
from gateway.rawrequests import RawRequests
from gateway.schemas import SchemaBook
from gateway.scoring import Scored, ScoringStage
from gateway.sequence import FILL
from shared_protocol import CMD_SET_OUTPUT, FLAG_HISTORICAL
from shared_protocol.gw_encode import cmd_arg

log = logging.getLogger(__name__)


class AlertStage:
    def __init__(
        self,
        *,
        stages: list[ScoringStage],
        schemas: SchemaBook,
        decider: Decider,
        summaries: Summaries,
        outbox: Outbox,
        counters: Counters,
        raw_requests: RawRequests | None,
        live: LiveView | None = None,
        clock: Callable[[], float],
    ) -> None:
        self.stages = stages
        self.schemas = schemas
        self.decider = decider
        self.summaries = summaries
        self.outbox = outbox
        self.counters = counters
        self.raw_requests = raw_requests
        self.live = live
        self.clock = clock

    def run(self, batch: Batch) -> None:
        if batch.replayed:
            self._windows(batch, batch.replayed)
        if batch.runs:
            self._windows(batch, batch.runs)
        for stage in self.stages:
            scored = stage.score_pending()
            if scored is not None:
                self._decide(scored)
        for stage in self.stages:  # candidate models in shadow: after every alert of the batch is out
            stage.run_shadow()

    def _windows(self, batch: Batch, runs: list[DataRun]) -> None:
        """Feed accepted DATA to the scoring stages (and summaries), in runs of consecutive frames."""
        n = len(runs)
        i = 0
        while i < n:
            a = runs[i]
            k = i + 1
            while k < n and runs[k].follows(runs[k - 1]):
                k += 1
            if k - i == 1:
                sel = a.rows
                received = a.received
            else:
                sel = [r for run in runs[i:k] for r in run.rows]
                received = [t for run in runs[i:k] for t in run.received]
            i = k
            b = a.batch
            contiguous = sel[-1] - sel[0] == len(sel) - 1
            values = b.values[sel[0] : sel[-1] + 1] if contiguous else b.values[sel]
            block = values.reshape(-1, values.shape[2])
            device = a.device
            schema = self.schemas.get(device)
            if schema is not None:
                batch.summary_blocks.append((device, tuple(schema.names), block))
            if a.verdict == FILL:
                for stage in self.stages:
                    for _ in sel:
                        stage.late_frame(device)
                continue
            if a.missing:
                self.summaries.add_gap(device)
            period_s = int(b.period_us[sel[0]]) * 1e-6
            if self.live is not None:
                self.live.readings(device, a.wall, period_s, block, a.missing)
            if not self.stages:
                continue
            received_arr = np.asarray(received, dtype=np.float64)
            seqs = b.seq[sel].astype(np.int64)
            for stage in self.stages:
                stage.push(
                    device,
                    block,
                    boot=int(b.boot[sel[0]]),
                    period_s=period_s,
                    dev_time=a.dev_s,
                    wall_time=a.wall,
                    received=received_arr,
                    seqs=seqs,
                    historical=bool(int(b.flags[sel[-1]]) & FLAG_HISTORICAL),
                    missing_samples=a.missing,
                )

    def _decide(self, scored: Scored) -> None:
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
            now=self.clock(),
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
                # the device's own threshold (calibrated or an operator's), as the decisions used
                threshold = self.decider.states.threshold(devices[start], scored.pipeline, scored.threshold)
                self.summaries.add_scores(devices[start], scored.pipeline, scored.scores[start:k], threshold)
                if self.live is not None:
                    self.live.scores(
                        devices[start],
                        scored.pipeline,
                        scored.window_end[start:k],
                        scored.scores[start:k],
                        threshold,
                    )
                start = k

    def _alert(self, alert: Alert) -> None:
        """One record of an episode: raised, updated or cleared. Published locally at once,
        forwarded (lane "alert"), shown live; a raise also asks for the raw readings around it."""
        c = self.counters
        rec = alert.to_record()
        self.outbox.publish(self.outbox.alert_topic(alert.device), alert.to_json())
        rec["site"] = self.outbox.site
        self.outbox.forward("alert", rec)
        if self.live is not None:
            self.live.alert(rec)
        if alert.state == RAISED:
            c.alerts += 1
            c.alert_latency_ms_max = max(c.alert_latency_ms_max, (alert.decided - alert.received) * 1000.0)
            log.info(
                "alert raised: %s %s score %.3g > %.3g (%s)%s",
                alert.device,
                alert.pipeline,
                alert.score,
                alert.threshold,
                alert.alert_id,
                " from replayed data" if alert.historical else "",
            )
            if self.raw_requests is not None:
                self.raw_requests.on_alert(alert, alert.decided)
        elif alert.state == CLEARED:
            c.alerts_cleared += 1
            log.info(
                "alert cleared: %s %s after %.1f s, %d of %d windows over, peak %.3g (%s)",
                alert.device,
                alert.pipeline,
                (alert.cleared_at or alert.since) - alert.since,
                alert.windows_over,
                alert.windows,
                alert.peak,
                alert.alert_id,
            )
        else:
            c.alert_updates += 1
            if alert.acts:
                log.info(
                    "alert raised from replayed data is still on in live data: %s %s score %.3g > %.3g (%s)",
                    alert.device,
                    alert.pipeline,
                    alert.score,
                    alert.threshold,
                    alert.alert_id,
                )

    def _command(self, cmd: Command) -> None:
        self.counters.commands += 1
        cmd_id = self.outbox.cmd(
            cmd.device, CMD_SET_OUTPUT, cmd_arg(CMD_SET_OUTPUT, cmd.output, cmd.value, cmd.duration_ms)
        )
        log.info(
            "rule %s: alert %s from %s -> CMD_SET_OUTPUT %s output %d = %d for %d ms (cmd %d)",
            cmd.rule,
            cmd.cause.state,
            cmd.cause.device,
            cmd.device,
            cmd.output,
            cmd.value,
            cmd.duration_ms,
            cmd_id,
        )
