"""Fleet load generator: N virtual devices publishing real frames to a real broker in real time.

Every device is a ``tests.support.simdevice.SimDevice`` (the real encoder
``shared_protocol.encode``): its own boot counter and one sequence per boot shared by
BIRTH, DATA and HEALTH. A streaming device publishes BIRTH, then DATA at 100 Hz x 6
channels, 32 samples per frame (3.125 frames/s), and HEALTH every ``health_s``; an idle
device publishes BIRTH and HEALTH every ``idle_health_s``. Topics come from
``shared_protocol.topics``, QoS and retain from its ``PUBLISH_OPTIONS``.

Like firmware, a device keeps every sequenced frame until an ACK covers it, answers
CMD_RESEND with those frames again (flagged historical) and a LOSS frame for the numbers
an older boot never used, and answers CMD_REBIRTH with a BIRTH. Faults, spread over the
run: ``skips`` DATA frames are held back (lost on the way, so the gateway sees a gap and
must ask for them) and ``reboots`` devices reboot (new boot, new BIRTH, sequence from 0).

Measured per worker: frames sent per kind, publish -> ACK latency of DATA frames
published after the warm-up (first ACK covering the frame; resent frames are not timed),
frames never ACKed after the drain, how late the pacing ran. A worker is one process
with one paho connection; it prints ``steady`` when the warm-up ends, ``loadend`` when
the load stops and then one JSON line (its summary).

    .venv/bin/python -m bench.fleetgen --port 1883 --streaming 100 --idle 0 --duration 20
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import random
import subprocess
import sys
import threading
import time
from array import array
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt

from bench.bench_gateway import CHANNELS, NS, ROOT, SITE, _connect
from shared_protocol import CMD_REBIRTH, CMD_RESEND, LOSS_UNUSED
from shared_protocol.decode import decode
from shared_protocol.errors import ProtocolError
from shared_protocol.repair import LOSS_MAX_RANGES
from shared_protocol.topics import DEFAULT_PREFIX, PUBLISH_OPTIONS, parse_topic, subscription, topic
from tests.support.simdevice import SimDevice, historical

sys.path.insert(0, str(ROOT / "firmware"))  # sim_signals (plain Python, runs on CPython too)
from sensorfw.boards.sim_signals import Vibration

U32_MAX = 0xFFFFFFFF
BANK = 32  # distinct sample blocks per worker (a device cycles through them)
_DATA, _HEALTH, _BIRTH = 0, 1, 2  # scheduled event kinds


@dataclass
class FleetOptions:
    host: str = "127.0.0.1"
    port: int = 1883
    site: str = SITE
    prefix: str = DEFAULT_PREFIX
    streaming: int = 100
    idle: int = 0
    first: int = 0  # index of this worker's first device (device ids stay unique across workers)
    rate_hz: float = 100.0  # samples per second per channel of a streaming device
    duration_s: float = 30.0  # load after the ramp, warm-up included
    ramp_s: float = 5.0  # the devices' BIRTHs are spread over this
    warmup_s: float = 5.0  # after the ramp: frames published before it are not timed
    health_s: float = 5.0
    idle_health_s: float = 30.0
    skips: int = 2  # DATA frames held back (the gateway must ask for them)
    reboots: int = 1  # devices that reboot during the run
    drain_s: float = 30.0  # after the load: wait this long at most for the last ACKs
    seed: int = 1
    cpu: int | None = None


@dataclass
class Sent:
    t: float
    payload: bytes
    kind: str
    timed: bool


@dataclass
class Device:
    sim: SimDevice
    streaming: bool
    pending: dict[tuple[int, int], Sent] = field(default_factory=dict)
    last_seq: dict[int, int] = field(default_factory=dict)  # boot -> highest sequence used
    frames: int = 0  # DATA frames made
    skip_at: set[int] = field(default_factory=set)  # DATA frame numbers held back
    reboot_at: int = -1  # DATA frame number after which the device reboots
    bank_offset: int = 0


@dataclass
class Stats:
    sent: dict[str, int] = field(default_factory=dict)
    acked: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    resend_requests: int = 0
    resent: int = 0
    loss_frames: int = 0
    rebirth_requests: int = 0
    reboots: int = 0
    skips: int = 0
    late_p99_ms: float = 0.0  # pacing: how late the events ran
    late_max_ms: float = 0.0
    steady_data: int = 0  # DATA frames published in the timed window
    steady_s: float = 0.0
    unacked: dict[str, int] = field(default_factory=dict)
    faulty: list[str] = field(default_factory=list)  # devices with an injected fault


class Fleet:
    """The devices of one worker, their pacing, and what the gateway answers them."""

    def __init__(self, opts: FleetOptions) -> None:
        self.o = opts
        self.rng = random.Random(opts.seed)
        self.stats = Stats()
        self.lock = threading.Lock()
        self.pending_total = 0
        self.drained = threading.Event()
        self.loading = True
        self.timed_from = float("inf")
        self.late_ms = array("d")
        self.rebirths: list[str] = []  # CMD_REBIRTH seen by the network thread, served by the pacing loop
        self.devices: dict[str, Device] = {}
        for i in range(opts.streaming):
            self._add(f"fleet-{opts.first + i:05d}", True)
        for i in range(opts.idle):
            self._add(f"idle-{opts.first + i:05d}", False)
        self.bank = self._sample_bank()
        streaming = [d for d in self.devices.values() if d.streaming]
        per_dev = int(opts.duration_s * opts.rate_hz / NS)
        if streaming and per_dev > 4:
            for _ in range(opts.skips):
                d = self.rng.choice(streaming)
                d.skip_at.add(self.rng.randrange(2, per_dev - 2))
                self.stats.faulty.append(d.sim.device)
            for d in self.rng.sample(streaming, min(opts.reboots, len(streaming))):
                d.reboot_at = self.rng.randrange(per_dev // 3, 2 * per_dev // 3)
                self.stats.faulty.append(d.sim.device)
        self.client: mqtt.Client | None = None

    def _add(self, name: str, streaming: bool) -> None:
        sim = SimDevice(name, site=self.o.site, prefix=self.o.prefix, channels=list(CHANNELS), nsamples=NS)
        sim.boot = 1 + self.rng.randrange(200)  # devices have booted before
        sim.period_us = round(1e6 / self.o.rate_hz)
        self.devices[name] = Device(sim, streaming, bank_offset=len(self.devices) % BANK)

    def _sample_bank(self) -> list[np.ndarray]:
        # The 100 Hz machine's signal, whatever rate the frames are stamped with (its shaft
        # frequency needs a rate above 49.4 Hz; the memory runs play devices at 10 Hz).
        vib = Vibration(rate_hz=100.0, seed=self.o.seed)
        raw = array("h", [0] * (len(CHANNELS) * NS * BANK))
        vib.fill_raw(raw, NS * BANK)
        block = np.asarray(raw, dtype=np.int16).reshape(BANK, NS, len(CHANNELS))
        return list(block)

    # ------------------------------------------------------------------ sending
    def _topic(self, d: Device, kind: str) -> str:
        return topic(self.o.prefix, self.o.site, d.sim.device, kind)

    def _publish(self, d: Device, kind: str, payload: bytes) -> None:
        qos, retain = PUBLISH_OPTIONS[kind]
        assert self.client is not None
        self.client.publish(self._topic(d, kind), payload, qos=qos, retain=retain)
        self.stats.sent[kind] = self.stats.sent.get(kind, 0) + 1

    def _keep(self, d: Device, kind: str, payload: bytes, now: float) -> None:
        """Hold a sequenced frame until an ACK covers it (a device's queue)."""
        key = (d.sim.boot, d.sim.seq)
        d.last_seq[key[0]] = key[1]
        with self.lock:
            d.pending[key] = Sent(now, payload, kind, kind == "data" and now >= self.timed_from)
            self.pending_total += 1

    def birth(self, d: Device, now: float) -> None:
        payload = d.sim.birth()
        self._keep(d, "birth", payload, now)
        self._publish(d, "birth", payload)

    def health(self, d: Device, now: float) -> None:
        payload = d.sim.health(uptime_s=int(now), queue_depth=len(d.pending))
        self._keep(d, "health", payload, now)
        self._publish(d, "health", payload)

    def data(self, d: Device, now: float) -> None:
        k = d.frames
        d.frames += 1
        payload = d.sim.data(self.bank[(k + d.bank_offset) % BANK])
        self._keep(d, "data", payload, now)
        if k in d.skip_at:
            self.stats.skips += 1  # lost on the way: only a CMD_RESEND brings it
        else:
            self._publish(d, "data", payload)
            if now >= self.timed_from:
                self.stats.steady_data += 1
        if k == d.reboot_at:
            d.sim.reboot()
            self.stats.reboots += 1
            self.birth(d, now)

    # ------------------------------------------------------------------ answers
    def on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.monotonic()
        try:
            _p, _s, device, kind = parse_topic(msg.topic)
            frame = decode(msg.payload)
        except ProtocolError:
            return
        d = self.devices.get(device)
        if d is None:
            return  # another worker's device, or real firmware
        if kind == "ack":
            self._acked(d, frame.fields["ranges"], now)
        elif kind == "cmd" and frame.fields["op"] == CMD_RESEND:
            self._resend(d, frame.fields["ranges"])
        elif kind == "cmd" and frame.fields["op"] == CMD_REBIRTH:
            self.stats.rebirth_requests += 1
            self.rebirths.append(device)

    def _acked(self, d: Device, ranges: list[tuple[int, int, int]], now: float) -> None:
        st = self.stats
        with self.lock:
            pending = d.pending
            for boot, first, last in ranges:
                if last - first < len(pending):
                    keys = [(boot, s) for s in range(first, last + 1)]
                else:
                    keys = [k for k in pending if k[0] == boot and first <= k[1] <= last]
                for key in keys:
                    sent = pending.pop(key, None)
                    if sent is None:
                        continue
                    st.acked += 1
                    self.pending_total -= 1
                    if sent.timed:
                        st.latencies_ms.append(1000.0 * (now - sent.t))
            if not self.loading and self.pending_total == 0:
                self.drained.set()

    def _resend(self, d: Device, ranges: list[tuple[int, int, int]]) -> None:
        """Send again what is still held; a LOSS frame for what an older boot never used."""
        self.stats.resend_requests += 1
        with self.lock:
            again = sorted(
                (key, sent)
                for key, sent in d.pending.items()
                if any(b == key[0] and lo <= key[1] <= hi for b, lo, hi in ranges)
            )
            for _key, sent in again:
                sent.timed = False
        for _key, sent in again:
            self._publish(d, sent.kind, historical(sent.payload))
            self.stats.resent += 1
        unused = []
        for boot, lo, hi in ranges:
            used = d.last_seq.get(boot, -1)
            if boot != d.sim.boot and max(lo, used + 1) <= hi:
                unused.append((boot, max(lo, used + 1), hi, LOSS_UNUSED))
        if unused:
            self._publish(d, "loss", d.sim.loss(unused[:LOSS_MAX_RANGES]))
            self.stats.loss_frames += 1

    # ------------------------------------------------------------------ pacing
    def schedule(self, t0: float) -> list[tuple[float, int, str]]:
        """(time, kind, device) of every device's first events; births spread over the ramp."""
        o = self.o
        n = len(self.devices)
        frame_s = NS / o.rate_hz
        heap: list[tuple[float, int, str]] = []
        for i, (name, d) in enumerate(self.devices.items()):
            tb = t0 + o.ramp_s * i / max(1, n)
            heap.append((tb, _BIRTH, name))
            every = o.health_s if d.streaming else o.idle_health_s
            heap.append((tb + self.rng.uniform(0.1, every), _HEALTH, name))
            if d.streaming:
                heap.append((tb + self.rng.uniform(0.01, frame_s), _DATA, name))
        heapq.heapify(heap)
        return heap

    def run(self, client: mqtt.Client) -> None:
        o = self.o
        self.client = client
        frame_s = NS / o.rate_hz
        t0 = time.monotonic() + 0.2
        self.timed_from = t0 + o.ramp_s + o.warmup_s
        t_end = t0 + o.ramp_s + o.duration_s
        heap = self.schedule(t0)
        said_steady = False
        while heap:
            due, kind, name = heap[0]
            now = time.monotonic()
            if not said_steady and now >= self.timed_from:
                print("steady", flush=True)
                said_steady = True
            if due >= t_end:
                break
            if due > now:
                time.sleep(min(due - now, 0.05))
                continue
            heapq.heappop(heap)
            self.late_ms.append(1000.0 * (now - due))
            while self.rebirths:
                self.birth(self.devices[self.rebirths.pop()], now)
            d = self.devices[name]
            if kind == _DATA:
                self.data(d, now)
                heapq.heappush(heap, (due + frame_s, kind, name))
            elif kind == _HEALTH:
                self.health(d, now)
                heapq.heappush(heap, (due + (o.health_s if d.streaming else o.idle_health_s), kind, name))
            else:
                self.birth(d, now)
        self.stats.steady_s = max(0.0, time.monotonic() - self.timed_from)
        if not said_steady:
            print("steady", flush=True)
        print("loadend", flush=True)
        late = np.asarray(self.late_ms) if self.late_ms else np.zeros(1)
        self.stats.late_p99_ms = float(np.percentile(late, 99))
        self.stats.late_max_ms = float(late.max())
        with self.lock:
            self.loading = False
            if self.pending_total == 0:
                self.drained.set()
        self.drained.wait(o.drain_s)
        with self.lock:
            for d in self.devices.values():
                for sent in d.pending.values():
                    self.stats.unacked[sent.kind] = self.stats.unacked.get(sent.kind, 0) + 1


def run_worker(opts: FleetOptions) -> Stats:
    if opts.cpu is not None:
        os.sched_setaffinity(0, {opts.cpu})
    fleet = Fleet(opts)
    client = _connect(opts.host, opts.port, f"fleetgen-{os.getpid()}")
    client.on_message = fleet.on_message
    subscribed = threading.Event()
    client.on_subscribe = lambda *a: subscribed.set()
    client.loop_start()
    client.subscribe([(subscription(opts.prefix, opts.site, "+", k), 1) for k in ("ack", "cmd")])
    if not subscribed.wait(10):
        raise TimeoutError("no SUBACK from the broker")
    try:
        fleet.run(client)
    finally:
        client.disconnect()
        client.loop_stop()
    return fleet.stats


# ---------------------------------------------------------------------- workers as processes


def _args(opts: FleetOptions) -> list[str]:
    out = []
    for k, v in asdict(opts).items():
        if v is not None:
            out += [f"--{k.replace('_', '-')}", str(v)]
    return out


def spawn(opts: FleetOptions, workers: int = 1) -> list[subprocess.Popen[str]]:
    """Start `workers` generator processes sharing opts.streaming / opts.idle devices."""
    procs = []
    for w in range(workers):
        mine = FleetOptions(**asdict(opts))
        mine.streaming = opts.streaming // workers + (1 if w < opts.streaming % workers else 0)
        mine.idle = opts.idle // workers + (1 if w < opts.idle % workers else 0)
        mine.first = opts.first + w * 100_000 // workers
        mine.seed = opts.seed + w
        mine.skips = opts.skips if w == 0 else 0
        mine.reboots = opts.reboots if w == 0 else 0
        cmd = [sys.executable, "-m", "bench.fleetgen", *_args(mine)]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True))
    return procs


def wait_line(procs: list[subprocess.Popen[str]], word: str) -> None:
    """Block until every worker has printed `word` (its progress marks are events)."""
    for p in procs:
        assert p.stdout is not None
        while True:
            line = p.stdout.readline()
            if not line:
                raise RuntimeError(f"fleet worker {p.pid} exited before {word!r}")
            if line.strip() == word:
                break


def collect(procs: list[subprocess.Popen[str]], timeout: float = 300) -> dict[str, Any]:
    """Wait for the workers and merge their summaries."""
    merged: dict[str, Any] = {}
    for p in procs:
        out, _ = p.communicate(timeout=timeout)
        if p.returncode != 0:
            raise RuntimeError(f"fleet worker {p.pid} failed ({p.returncode})")
        part = json.loads(out.strip().splitlines()[-1])
        for k, v in part.items():
            if isinstance(v, dict):
                acc = merged.setdefault(k, {})
                for kk, vv in v.items():
                    acc[kk] = acc.get(kk, 0) + vv
            elif isinstance(v, list):
                merged.setdefault(k, []).extend(v)
            elif k == "steady_s" or k.endswith("_ms"):
                merged[k] = max(merged.get(k, 0.0), v)
            else:
                merged[k] = merged.get(k, 0) + v
    return merged


def summary(stats: Stats) -> dict[str, Any]:
    out = asdict(stats)
    out["latencies_ms"] = [round(v, 3) for v in stats.latencies_ms]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="play a fleet of virtual devices against a broker")
    defaults = FleetOptions()
    for k, v in asdict(defaults).items():
        kind = int if k == "cpu" or isinstance(v, int) else type(v)
        parser.add_argument(f"--{k.replace('_', '-')}", type=kind, default=v)
    ns = parser.parse_args(argv)
    opts = FleetOptions(**vars(ns))
    stats = run_worker(opts)
    print(json.dumps(summary(stats)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
