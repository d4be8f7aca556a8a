"""Replay: a recording through the real gateway pipeline, in-process, with per-window scores out.

``edgeline-gateway replay`` answers "what would this model have done last week": the recording
(a CSV file, or a span of the raw log) is sent as a device would send it, frame by frame, into
a ``Gateway`` built from the user's configuration (its pipelines, models, alert policy, rules),
and every window it scores is written as a row of gateway/scorecsv.py.

What it touches: nothing of the live gateway. The replayed gateway keeps its registry, raw log
and sequence state in a temporary directory that is removed afterwards; its publisher only
records what would have been sent (alerts, actuator commands); nothing is forwarded. So the
per-device state of the live gateway (an operator's per-device thresholds, a calibration in
progress) does not apply: a pipeline with ``calibrate`` calibrates from the replay's first
windows, as it would for a new device.

How the device is played:

- one boot per recording part: a BIRTH with the recording's channels (name, unit, rate), each
  ``ST_FLOAT32`` with scale 1 and offset 0, so every value arrives exactly as recorded; then
  DATA frames of ``frame_samples`` samples (32, the firmware's default batch) with sequence
  numbers from 1 and millisecond ticks following the samples' times. A new boot restarts the
  gateway's windows, so each part is cut from its first sample, as ``gateway.recording.windows``
  cuts it offline;
- frames arrive when their last sample was taken, in batches of ``batch_s`` of recording time
  (as the ingest thread hands over what accumulated), and the gateway's clock follows the
  recording's time, so alert episodes (raise, updates, clear) are timed as live. Parts that
  overlap in time are played one after the other (their rows keep their own times).

It runs as fast as the CPU allows: no sleeping.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
import math
import tempfile
import time
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from numpy.typing import NDArray

from gateway import scorecsv
from gateway.alertstate import CLEARED, RAISED
from gateway.config import Config
from gateway.decisions import Alert, Command, Decided
from gateway.ingest import RawFrame
from gateway.pipeline import Gateway
from gateway.rawlog import RawLog
from gateway.recording import Part, Recording, RecordingError
from gateway.scoring import ModelLike, ScoringStage
from shared_protocol import ST_FLOAT32
from shared_protocol.encode import DataEncoder, encode_birth
from shared_protocol.schema import schema_id
from shared_protocol.topics import topic

log = logging.getLogger(__name__)

FRAME_SAMPLES = 32  # samples per DATA frame: the firmware's default batch (sample.batch)
BATCH_S = 1.0  # recording time handed to Gateway.process at once
TICK_BITS = 30  # MicroPython's ticks_ms
FW_VERSION = "replay"
PROGRESS_S = 2.0  # a progress line on stderr at most this often
RAWLOG_BYTES = 16 * 1024 * 1024  # the replayed gateway's raw log keeps the latest this much


class ReplayError(RecordingError):
    """A replay that cannot run; the message says what does not fit and what to do."""


@dataclass
class PipelineCounts:
    windows: int = 0
    over: int = 0
    raised: int = 0
    cleared: int = 0
    commands: int = 0


@dataclass
class ReplayResult:
    device: str
    pipeline: str  # the pipeline whose windows were written
    windows: int  # rows written
    frames: int  # DATA frames sent
    samples: int
    duration_s: float  # of the recording
    seconds: float  # wall-clock time the replay took
    scores: NDArray[np.float32]  # the written windows' scores, in row order
    pipelines: dict[str, PipelineCounts] = field(default_factory=dict)
    alerts: list[Alert] = field(default_factory=list)  # every record published: raised, updated, cleared
    commands: list[Command] = field(default_factory=list)

    def summary(self) -> str:
        """The lines ``edgeline-gateway replay`` prints."""
        speed = self.duration_s / self.seconds if self.seconds > 0 else math.inf
        lines = [
            f"replayed {self.samples} samples ({_hours(self.duration_s)}) of device {self.device} "
            f"in {self.frames} DATA frames in {self.seconds:.1f} s ({speed:.0f}x real time)"
        ]
        for name, c in self.pipelines.items():
            mark = " (written)" if name == self.pipeline else ""
            lines.append(
                f"pipeline {name}{mark}: {c.windows} windows, {c.over} over the threshold, "
                f"{c.raised} alert(s) raised, {c.cleared} cleared, {c.commands} actuator command(s)"
            )
        return "\n".join(lines)


class _Recorder:
    """The replayed gateway's publisher: keeps what would have been sent."""

    def __init__(self) -> None:
        self.published = 0

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> bool:
        self.published += 1
        return True


class _Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class _Collector:
    """Decider observer: the selected pipeline's windows, in order, attributed to the part being played."""

    def __init__(self, pipelines: list[str], selected: str) -> None:
        self.selected = selected
        self.counts = {p: PipelineCounts() for p in pipelines}
        self.part = 0
        self.index = 0  # windows of the current part so far
        self.rows: list[tuple[int, int, float, float, bool, bool]] = []  # part, k, score, threshold, over, alert
        self.scores: list[NDArray[Any]] = []
        self.alerts: list[Alert] = []
        self.commands: list[Command] = []

    def __call__(self, d: Decided) -> None:
        c = self.counts.get(d.pipeline)
        if c is None:
            return
        n = len(d.devices)
        c.windows += n
        c.over += int(d.over.sum())
        for a in d.alerts:
            c.raised += a.state == RAISED
            c.cleared += a.state == CLEARED
        c.commands += len(d.commands)
        self.alerts.extend(d.alerts)
        self.commands.extend(d.commands)
        if d.pipeline != self.selected:
            return
        self.scores.append(np.asarray(d.scores))
        for i in range(n):
            self.rows.append(
                (
                    self.part,
                    self.index,
                    float(d.scores[i]),
                    float(d.thresholds[i]),
                    bool(d.over[i]),
                    bool(d.alert[i]),
                )
            )
            self.index += 1


class _Device:
    """The recording played as a board: one boot per part, BIRTH then DATA frames."""

    def __init__(self, rec: Recording, device: str, prefix: str, site: str, frame_samples: int) -> None:
        self.rec = rec
        self.channels = [(name, unit, 1.0, 0.0, ST_FLOAT32, float(rec.rate_hz)) for name, unit in rec.channels]
        self.period_us = round(1e6 / rec.rate_hz)
        if not 1 <= self.period_us <= 0xFFFFFFFF:
            raise ReplayError(
                f"sample rate {rec.rate_hz:g} Hz: a DATA frame carries sample periods of 1 us to 4294 s only"
            )
        self.frame_samples = frame_samples
        self.enc = DataEncoder(len(self.channels), frame_samples, ST_FLOAT32, schema_id(self.channels))
        self.buf = bytearray(256 + 64 * len(self.channels))
        self.data_topic = topic(prefix, site, device, "data")
        self.birth_topic = topic(prefix, site, device, "birth")

    def birth(self, boot: int, t: float) -> RawFrame:
        n = encode_birth(self.buf, boot, 0, 5, FW_VERSION, self.channels, TICK_BITS)
        return RawFrame(self.birth_topic, bytes(self.buf[:n]), t)

    def batches(self, part: Part, boot: int, t0: float, batch_s: float) -> Iterator[list[RawFrame]]:
        """The part's DATA frames (seq 1, 2, ...), each received when its last sample was taken
        (t0: the feed time of the part's first sample), in batches of batch_s."""
        rate = self.rec.rate_hz
        values = np.ascontiguousarray(part.values, dtype=np.float32)
        wrap = 1 << TICK_BITS
        fs = self.frame_samples
        batch: list[RawFrame] = []
        for seq, a in enumerate(range(0, part.n, fs), start=1):
            b = min(a + fs, part.n)
            samples = array("f")
            samples.frombytes(values[a:b].tobytes())
            ticks = (5 + round(a * 1000.0 / rate)) % wrap
            n = self.enc.encode(boot, seq, ticks, self.period_us, samples, b - a)
            received = t0 + b / rate
            if batch and received >= batch[0].received + batch_s:
                yield batch
                batch = []
            batch.append(RawFrame(self.data_topic, bytes(self.enc.frame[:n]), received))
        if batch:
            yield batch


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds:.1f} s"


def _replay_config(config: Config, data_dir: Path) -> Config:
    """The user's configuration with its state in data_dir, any device admitted, no status page."""
    return dataclasses.replace(
        config,
        gateway=dataclasses.replace(config.gateway, data_dir=data_dir),
        registry=dataclasses.replace(config.registry, devices_file=None),
        web=dataclasses.replace(config.web, enabled=False),
        homeassistant=dataclasses.replace(config.homeassistant, enabled=False),
        forward=None,
        updates=None,
        encryption=None,
    )


def _describe(rec: Recording) -> str:
    return ", ".join(f"{n} ({u or 'no unit'})" for n, u in rec.channels) + f" at {rec.rate_hz:g} Hz"


def _model_channels(stage: ScoringStage) -> str:
    m = getattr(stage.model, "manifest", None)
    inp = getattr(m, "input", None)
    chans = getattr(inp, "channels", None)
    names = [f"{c.name} ({c.unit or 'no unit'})" for c in chans] if chans else list(stage.spec.channels)
    text = ", ".join(names)
    rate = stage.spec.rate_hz
    return text + (f" at {rate:g} Hz" if rate else "")


def _why_not(stage: ScoringStage, device: str, rec: Recording) -> str:
    """Why a pipeline does not score the replayed device, and what to do about it."""
    if not any(fnmatch.fnmatchcase(device, p) for p in stage.device_patterns):
        return (
            f"pipeline {stage.name}: device name {device!r} does not match its devices "
            f"{list(stage.device_patterns)}: give --device with a name that does"
        )
    reason = stage.stats.unmatched_devices.get(device, "it does not take this device's channels")
    mapping = ""
    if stage.select != stage.spec.channels:
        mapping = f" (its `channels` list feeds {', '.join(stage.select)} to the model)"
    text = (
        f"pipeline {stage.name}: {reason}. The recording has {_describe(rec)}; the model takes "
        f"{_model_channels(stage)}{mapping}. "
    )
    if reason.startswith("device lacks channels"):
        names = rec.channel_names
        suggest = ", ".join(f'"{n}"' for n in names) if len(names) == len(stage.spec.channels) else '"...", ...'
        return text + (
            f"Map the recording's channels to the model's with the pipeline's `channels` list in the "
            f"configuration (channels = [{suggest}], one per model channel, in the model's order), "
            f"or train a model on this data under the device's names (edgeline-train ... --channels-as)"
        )
    return text + (
        "Units come from the CSV header ('ax [g]') or --units ax=g, the rate from the time column or "
        "--rate-hz; data in other units or at another rate needs a model trained on it (edgeline-train)"
    )


def replay(
    config: Config,
    rec: Recording,
    *,
    device: str,
    out: TextIO,
    pipeline: str | None = None,
    models: dict[str, ModelLike] | None = None,
    frame_samples: int = FRAME_SAMPLES,
    batch_s: float = BATCH_S,
    progress: TextIO | None = None,
) -> ReplayResult:
    """Play ``rec`` as device ``device`` through a gateway built from ``config``; write the
    scores of ``pipeline``'s windows (default: the one pipeline that scores the device) to
    ``out`` as gateway/scorecsv.py rows. models: the pipelines' models (default: loaded as
    ``run`` loads them). Raises ReplayError (what does not fit, what to do) or ConfigError."""
    started = time.perf_counter()
    if not rec.parts or rec.n_samples == 0:
        raise ReplayError(f"{rec.source}: the recording has no samples: nothing to replay")
    names = [p.name for p in config.pipelines]
    if not names:
        raise ReplayError(f"{config.source or 'the configuration'} has no [[pipelines]]: nothing would score the data")
    if pipeline is not None and pipeline not in names:
        raise ReplayError(f"--pipeline {pipeline}: no such pipeline; the configuration has {', '.join(names)}")
    if models is None:
        from gateway.runner import load_models

        models = load_models(config)
    with tempfile.TemporaryDirectory(prefix="edgeline-replay-") as tmp:
        cfg = _replay_config(config, Path(tmp))
        clock = _Clock(rec.parts[0].t0)
        # The pipeline's raw log, thrown away afterwards: bounded, and no fsync per batch
        rawlog = RawLog(Path(tmp) / "rawlog.sqlite", max_bytes=RAWLOG_BYTES, max_age_s=cfg.rawlog.max_age_s)
        rawlog.db.execute("PRAGMA synchronous=OFF")
        gw = Gateway(cfg, _Recorder(), models=models, clock=clock, rawlog=rawlog)
        try:
            return _play(
                gw,
                clock,
                rec,
                device=device,
                out=out,
                pipeline=pipeline,
                frame_samples=frame_samples,
                batch_s=batch_s,
                progress=progress,
                started=started,
            )
        finally:
            gw.close()


def _play(
    gw: Gateway,
    clock: _Clock,
    rec: Recording,
    *,
    device: str,
    out: TextIO,
    pipeline: str | None,
    frame_samples: int,
    batch_s: float,
    progress: TextIO | None,
    started: float,
) -> ReplayResult:
    g = gw.config.gateway
    dev = _Device(rec, device, g.prefix, g.site, frame_samples)
    feed_t = rec.parts[0].t0
    collector: _Collector | None = None
    frames_sent = 0
    last_report = time.perf_counter()
    played = 0
    for i, part in enumerate(rec.parts):
        if part.n == 0:
            continue
        t0 = max(part.t0, feed_t)  # parts overlapping in time play one after the other
        clock.now = t0
        gw.process([dev.birth(i + 1, t0)])
        if collector is None:
            collector = _select(gw, device, rec, pipeline)
            gw.decider.observer = collector
        collector.part, collector.index = i, 0
        sent = 0
        for batch in dev.batches(part, i + 1, t0, batch_s):
            clock.now = batch[-1].received
            gw.process(batch)
            gw.tick(clock.now)
            sent += len(batch)
            if progress is not None and time.perf_counter() - last_report >= PROGRESS_S:
                last_report = time.perf_counter()
                done = played + min(sent * frame_samples, part.n)
                progress.write(
                    f"replay: part {i + 1}/{len(rec.parts)}, {_hours(done / rec.rate_hz)} of "
                    f"{_hours(rec.duration_s)} ({100.0 * done / rec.n_samples:.0f}%), "
                    f"{collector.counts[collector.selected].windows} windows\n"
                )
                progress.flush()
        frames_sent += sent
        played += part.n
        feed_t = t0 + part.n / rec.rate_hz + 1.0
    assert collector is not None
    _check_windows(gw, collector, rec, device)
    rows = list(_rows(collector, rec, gw))
    n = scorecsv.write(rows, out)
    return ReplayResult(
        device=device,
        pipeline=collector.selected,
        windows=n,
        frames=frames_sent,
        samples=rec.n_samples,
        duration_s=rec.duration_s,
        seconds=time.perf_counter() - started,
        scores=(np.concatenate(collector.scores) if collector.scores else np.zeros(0)).astype(np.float32),
        pipelines=collector.counts,
        alerts=collector.alerts,
        commands=collector.commands,
    )


def _select(gw: Gateway, device: str, rec: Recording, pipeline: str | None) -> _Collector:
    """After the first BIRTH: the pipelines that score the device, and the one to write."""
    scoring = [s for s in gw.stages if s.columns(device) is not None]
    if pipeline is not None:
        stage = next((s for s in gw.stages if s.name == pipeline), None)
        if stage is None:  # named in the configuration, but its model did not load
            raise ReplayError(f"--pipeline {pipeline}: the pipeline has no model loaded")
        if stage not in scoring:
            raise ReplayError(_why_not(stage, device, rec))
        selected = pipeline
    elif not scoring:
        reasons = "; ".join(_why_not(s, device, rec) for s in gw.stages)
        raise ReplayError(f"no pipeline scores device {device!r}: {reasons}")
    elif len(scoring) > 1:
        raise ReplayError(
            f"device {device!r} is scored by pipelines {', '.join(s.name for s in scoring)}: "
            "choose the one to write with --pipeline"
        )
    else:
        selected = scoring[0].name
    return _Collector([s.name for s in scoring], selected)


def _check_windows(gw: Gateway, collector: _Collector, rec: Recording, device: str) -> None:
    """Every window of every part scored: the replay plays no gaps, so none may be skipped."""
    stage = next(s for s in gw.stages if s.name == collector.selected)
    spec = stage.spec
    want = sum(max(0, (p.n - spec.window_len) // spec.hop + 1) for p in rec.parts if p.n)
    got = collector.counts[collector.selected].windows
    stats = stage.window_stats().get(device, {})
    if got != want or stats.get("skipped_windows", 0):
        raise ReplayError(
            f"internal: the gateway scored {got} windows, the recording has {want} "
            f"(window statistics {stats}); please report this"
        )


def _rows(collector: _Collector, rec: Recording, gw: Gateway) -> Any:
    stage = next(s for s in gw.stages if s.name == collector.selected)
    window, hop = stage.spec.window_len, stage.spec.hop
    label_of: Callable[[Part, int], int | None]
    if rec.labelled:

        def label_of(p: Part, start: int) -> int | None:
            assert p.labels is not None
            return int(p.labels[start : start + window].max() > 0)

    else:

        def label_of(p: Part, start: int) -> int | None:
            return None

    for part_i, k, score, threshold, _over, alert in collector.rows:
        p = rec.parts[part_i]
        start = k * hop
        yield scorecsv.ScoreRow(
            part=part_i,
            start=start,
            t_end=p.t0 + (start + window - 1) / rec.rate_hz,
            score=score,
            threshold=threshold,
            alert=alert,
            label=label_of(p, start),
        )
