"""Fleet scale: one gateway process on one core against N devices played in real time.

Each scenario starts a fresh Mosquitto and a fresh ``python -m gateway run`` pinned to core
0; the load generator (bench/fleetgen.py: real encoder, one boot and sequence per device,
BIRTH, DATA at 100 Hz x 6 channels, 32 samples per frame, HEALTH, a held-back frame or two
the gateway must ask for, a reboot), the broker and a few real firmware processes on the
MicroPython unix port run on core 1. Measured in the timed window (after the ramp and
warm-up): the gateway's CPU (/proc/<pid>/stat), its DATA frames/s (status.json), publish ->
ACK p50 / p99 at the generator; after the load: ingest queue drops and high-water, windows
skipped, frames never ACKed, the gateway's RSS. The baseline for CPU is a paho subscriber
that does nothing with the same subscriptions, same broker, same load, same core.
Memory per device is the slope of RSS over the --memory counts, played at MEMORY_RATE_HZ (the
memory a device costs does not depend on its rate, and 3,000 devices at 100 Hz need about
three cores); idle devices (BIRTH + HEALTH only) are added to the largest streaming count to
see that they do not slow ingest.

    .venv/bin/python -m bench.bench_fleet [--quick] [--streaming 100,1000] [--memory 100,1000,3000]
        [--idle 10000] [--duration 40] [--warmup 10] [--firmware 3] [--no-bare]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt

from bench import fleetgen
from bench.bench_gateway import MODEL, ROOT, SITE, _connect, _pct, _rss_kb, row
from bench.bench_gateway import render as gateway_render
from shared_protocol.topics import DEFAULT_PREFIX, DEVICE_KINDS, subscription
from tests.firmware.simdevice import SimDevice as Firmware
from tests.firmware.simdevice import base_config
from tests.support.mosquitto import Mosquitto
from tests.support.waiting import wait_until

GATEWAY_CPU = 0  # the measured process
LOAD_CPU = 1  # generator, broker, firmware
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def gateway_toml(data_dir: Path, port: int, *, resend_after_s: float = 2.0) -> str:
    return f"""
[gateway]
id = "fleetgw"
site = "{SITE}"
data_dir = "{data_dir}"
status_interval_s = 1.0
status_detail_devices = 2000

[mqtt]
host = "127.0.0.1"
port = {port}
client_id = "fleet-gateway"

[ingest]
queue_size = 50000
batch_max = 2000

[registry]
max_devices = 20000

[sequence]
resend_after_s = {resend_after_s}
resend_interval_s = {resend_after_s * 2}

[summary]
interval_s = 10

[[pipelines]]
name = "vib"
model = "{MODEL}"
devices = ["*"]
"""


class Target:
    """The process under load: the gateway, or the bare subscriber (the baseline)."""

    def __init__(self, workdir: Path, broker: Mosquitto, *, bare: bool = False, resend_after_s: float = 2.0) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.bare = bare
        self.data = workdir / "data"
        self.log = workdir / "target.log"
        if bare:
            flag = str(workdir / "subscribed")
            cmd = [sys.executable, "-m", "bench.bench_fleet", "--_bare", "--port", str(broker.port), "--flag", flag]
        else:
            cfg = workdir / "gateway.toml"
            cfg.write_text(gateway_toml(self.data, broker.port, resend_after_s=resend_after_s))
            cmd = [sys.executable, "-m", "gateway", "run", "-c", str(cfg), "--log-level", "warning"]
        with open(self.log, "wb") as log:  # the child keeps its own copy
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        os.sched_setaffinity(self.proc.pid, {GATEWAY_CPU})  # before it starts any thread
        wait_until(self._subscribed, 60, "the target's SUBACK")

    def _alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError("target exited:\n" + self.log.read_text(errors="replace")[-3000:])

    def _subscribed(self) -> bool:
        self._alive()
        if self.bare:
            return (self.dir / "subscribed").exists()
        st = self.status()
        return bool(st and st["ingest"]["subscribed"])

    def status(self) -> dict[str, Any] | None:
        if self.bare:
            return None
        try:
            st: dict[str, Any] = json.loads((self.data / "status.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return st if st.get("pid") == self.proc.pid else None

    def status_after(self, t: float, timeout: float = 30) -> dict[str, Any] | None:
        """The first status.json written after wall time t."""
        if self.bare:
            return None
        return wait_until(lambda: (s := self.status()) and s["written_at"] > t and s, timeout, "a fresh status.json")

    def sample(self) -> tuple[float, float, dict[str, Any] | None]:
        return time.monotonic(), cpu_seconds(self.proc.pid), self.status()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def bare_main(port: int, flag: Path) -> int:
    """The baseline: subscribe as the gateway does (DATA at QoS 0, the rest at 1), do nothing."""
    os.sched_setaffinity(0, {GATEWAY_CPU})
    count = [0]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    c = _connect("127.0.0.1", port, "fleet-bare")

    def on_message(cl: Any, u: Any, m: mqtt.MQTTMessage) -> None:
        count[0] += 1

    c.on_message = on_message
    c.on_subscribe = lambda *a: flag.touch()
    c.loop_start()
    c.subscribe([(subscription(DEFAULT_PREFIX, SITE, "+", k), 0 if k == "data" else 1) for k in DEVICE_KINDS])
    stop.wait()
    c.disconnect()
    c.loop_stop()
    print(json.dumps({"messages": count[0]}))
    return 0


# ---------------------------------------------------------------------- one scenario


@dataclass
class Scenario:
    streaming: int
    idle: int = 0
    duration_s: float = 40.0
    warmup_s: float = 10.0
    firmware: int = 3
    bare: bool = False
    rate_hz: float = 100.0
    drain_s: float = 60.0
    resend_after_s: float = 2.0


def start_firmware(work: Path, port: int, n: int, seconds: float) -> list[Firmware]:
    """Real firmware (firmware/main.py, unix port): MPU-6050 at 100 Hz, 32 samples per frame."""
    out = []
    for i in range(n):
        cfg = base_config(port, f"fw-{i + 1}", site=SITE, sample={"rate_hz": 100, "batch": 32}, health_s=5)
        fw = Firmware(work / f"fw-{i + 1}", cfg, EDGELINE_SIM_DURATION_S=seconds, EDGELINE_SIM_DRAIN_S=30).start()
        assert fw.proc is not None
        os.sched_setaffinity(fw.proc.pid, {LOAD_CPU})
        out.append(fw)
    return out


def firmware_results(fws: list[Firmware], timeout: float) -> list[dict[str, Any]]:
    out = []
    for fw in fws:
        rc = fw.wait(timeout)
        st = fw.stats() if fw.stats_path.exists() else {}
        out.append({"rc": rc, **{k: st.get(k) for k in ("published", "acks", "queue_depth", "dropped", "frames")}})
    return out


def run_scenario(work: Path, sc: Scenario) -> dict[str, Any]:
    """One fresh broker + target; the fleet for sc.duration_s; figures of the timed window."""
    broker = Mosquitto(
        work / "broker", persistence=False, extra_conf="max_queued_messages 0\nmax_inflight_messages 0"
    ).start()
    assert broker.proc is not None
    os.sched_setaffinity(broker.proc.pid, {LOAD_CPU})
    target = fws = None
    try:
        target = Target(work / "target", broker, bare=sc.bare, resend_after_s=sc.resend_after_s)
        ramp = max(2.0, min(10.0, (sc.streaming + sc.idle) / 1000))
        opts = fleetgen.FleetOptions(
            port=broker.port,
            streaming=sc.streaming,
            idle=sc.idle,
            rate_hz=sc.rate_hz,
            duration_s=sc.duration_s,
            ramp_s=ramp,
            warmup_s=sc.warmup_s,
            drain_s=1.0 if sc.bare else sc.drain_s,
            cpu=LOAD_CPU,
        )
        fws = [] if sc.bare else start_firmware(work, broker.port, sc.firmware, ramp + sc.duration_s)
        procs = fleetgen.spawn(opts, workers=max(1, math.ceil((sc.streaming + sc.idle / 20) / 2000)))
        fleetgen.wait_line(procs, "steady")
        t0, c0, s0 = target.sample()
        fleetgen.wait_line(procs, "loadend")
        t1, c1, s1 = target.sample()
        rss_kb, hwm_kb = _rss_kb(target.proc.pid)
        gen = fleetgen.collect(procs, timeout=sc.drain_s + 120)
        fw = firmware_results(fws, sc.drain_s + 60) if fws else []
        final = target.status_after(time.time())
        return {
            "scenario": sc,
            "cpu_pct": 100.0 * (c1 - c0) / (t1 - t0),
            "rss_kb": rss_kb,
            "hwm_kb": hwm_kb,
            "gen": gen,
            "rate": _data_rate(s0, s1),
            "final": final,
            "firmware": fw,
        }
    finally:
        for f in fws or []:
            f.kill()
        if target is not None:
            target.stop()
        broker.kill()


def _data_rate(s0: dict[str, Any] | None, s1: dict[str, Any] | None) -> float:
    """DATA frames/s the gateway accepted between two status files."""
    if not s0 or not s1 or s1["written_at"] <= s0["written_at"]:
        return float("nan")
    accepted = float(s1["frames"]["data_accepted"] - s0["frames"]["data_accepted"])
    return accepted / float(s1["written_at"] - s0["written_at"])


def gateway_counts(st: dict[str, Any], faulty: set[str]) -> dict[str, Any]:
    """What the gateway dropped or skipped, from its status.json. Over status_detail_devices the
    status has fleet totals only: skipped windows are then counted over every device."""
    vib = st["pipelines"]["vib"]
    if "windows" in vib:
        windows = vib["windows"]
        skipped_ok = sum(w["skipped_windows"] for d, w in windows.items() if d not in faulty)
        skipped_faulty = sum(w["skipped_windows"] for d, w in windows.items() if d in faulty)
    else:
        skipped_ok, skipped_faulty = vib["window_totals"].get("skipped_windows", 0), -1
    q = st["ingest"]["queue"]
    return {
        "devices": st["fleet"]["devices"],
        "dropped": q["dropped"],
        "high_water": q["high_water"],
        "skipped": skipped_ok,
        "skipped_faulty": skipped_faulty,
        "resend_requests": st["repair"]["resend_requests"],
        "quarantined": st["admission"]["quarantined_frames"],
        "publish_failures": st["publish_failures"],
    }


# ---------------------------------------------------------------------- rows


def _scenario_rows(r: dict[str, Any], bare: dict[str, Any] | None) -> list[dict[str, Any]]:
    sc: Scenario = r["scenario"]
    gen = r["gen"]
    n = sc.streaming
    name = (
        f"{n:,} streaming"
        + (f" at {sc.rate_hz:g} Hz" if sc.rate_hz != 100.0 else "")
        + (f" + {sc.idle:,} idle" if sc.idle else "")
    )
    lat = gen["latencies_ms"]
    published = gen["steady_data"] / gen["steady_s"] if gen["steady_s"] else float("nan")
    out = []
    if bare is not None:
        out.append(
            row(
                f"{name}: CPU, % of one core",
                r["cpu_pct"],
                "%",
                baseline="paho subscriber doing nothing",
                base_value=bare["cpu_pct"],
                target="< 100",
            )
        )
    else:
        out.append(row(f"{name}: CPU, % of one core", r["cpu_pct"], "%", baseline="", base_value=0, target="< 100"))
    out.append(
        row(
            f"{name}: CPU per streaming device, us per second",
            r["cpu_pct"] / n * 1e4,
            "us/s",
            baseline="paho subscriber doing nothing" if bare else "",
            base_value=bare["cpu_pct"] / n * 1e4 if bare else 0,
            target="",
        )
    )
    out.append(
        row(
            f"{name}: DATA frames/s accepted",
            r["rate"],
            "msg/s",
            baseline="DATA frames/s published",
            base_value=published,
            target="1.00x",
        )
    )
    out.append(
        row(f"{name}: publish -> ACK p99", _pct(lat, 99), "ms", baseline="p50", base_value=_pct(lat, 50), target="")
    )
    g = gateway_counts(r["final"], set(gen["faulty"]))
    unacked = sum(gen["unacked"].values())
    sent = sum(gen["sent"].get(k, 0) for k in ("birth", "data", "health"))
    fw = r["firmware"]
    fw_txt = (
        "; firmware (unix port) published/ACKs/queue left: "
        + ", ".join(f"{f['published']}/{f['acks']}/{f['queue_depth']}" for f in fw)
        if fw
        else ""
    )
    out.append(
        {
            "figure": f"  ({name}: ingest queue dropped {g['dropped']}, high-water {g['high_water']}; "
            f"windows skipped {g['skipped']} (+{g['skipped_faulty']} on the {len(set(gen['faulty']))} devices "
            f"with injected faults); frames never ACKed {unacked} of {sent}; registry {g['devices']} devices; "
            f"resend requests {g['resend_requests']}, frames resent {gen['resent']}; RSS {r['rss_kb'] / 1024:.0f} MB; "
            f"generator late p99 {gen['late_p99_ms']:.1f} ms{fw_txt})"
        }
    )
    return out


MEMORY_RATE_HZ = 10.0  # the memory slope's runs: a rate one core sustains at 3,000 devices


def measure(
    streaming: list[int],
    idle: int,
    *,
    duration_s: float,
    warmup_s: float,
    firmware: int,
    bare: bool,
    memory: list[int] | None = None,
) -> list[dict[str, Any]]:
    """streaming: device counts at 100 Hz (CPU, rates, ACKs, drops, each beside a bare
    subscriber); memory: device counts at MEMORY_RATE_HZ for the RSS slope (memory per device
    does not depend on the rate; 3,000 devices at 100 Hz need about three cores); idle: idle
    devices beside the largest streaming count."""
    results: dict[tuple[int, int], dict[str, Any]] = {}
    mem_results: dict[int, dict[str, Any]] = {}
    bares: dict[int, dict[str, Any]] = {}
    mid = streaming[-1] if idle else None
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        work = Path(tmp)
        k = 0

        def run(sc: Scenario) -> dict[str, Any]:
            nonlocal k
            k += 1
            print(f"   fleet: {sc.streaming} streaming, {sc.idle} idle, {'bare' if sc.bare else 'gateway'}", flush=True)
            return run_scenario(work / f"run-{k}", sc)

        for n in streaming:
            if bare:
                bares[n] = run(Scenario(n, duration_s=duration_s, warmup_s=warmup_s, bare=True))
            results[(n, 0)] = run(Scenario(n, duration_s=duration_s, warmup_s=warmup_s, firmware=firmware))
        if mid is not None:
            results[(mid, idle)] = run(Scenario(mid, idle, duration_s=duration_s, warmup_s=warmup_s, firmware=0))
        for n in memory or []:
            mem_results[n] = run(
                Scenario(n, duration_s=duration_s / 2, warmup_s=warmup_s, firmware=0, rate_hz=MEMORY_RATE_HZ)
            )
    out: list[dict[str, Any]] = []
    for (n, i), r in results.items():
        out += _scenario_rows(r, bares.get(n) if not i else None)
    for r in mem_results.values():
        out += _scenario_rows(r, None)
    ns = list(mem_results)
    if len(ns) >= 2:
        rss = [mem_results[n]["rss_kb"] for n in ns]
        slope = float(np.polyfit(ns, rss, 1)[0])
        out.append(
            row(
                f"gateway RSS per streaming device (slope over {'/'.join(f'{n:,}' for n in ns)}"
                f" at {MEMORY_RATE_HZ:g} Hz)",
                slope * 1.024,
                "KB",
                baseline=f"slope {ns[0]:,} -> {ns[1]:,} only",
                base_value=(rss[1] - rss[0]) * 1.024 / (ns[1] - ns[0]),
                target="<= 20 KB",
            )
        )
    if mid is not None:
        with_idle, without = results[(mid, idle)], results[(mid, 0)]
        out.append(
            row(
                f"gateway RSS per idle device ({idle:,} idle beside {mid:,} streaming)",
                (with_idle["rss_kb"] - without["rss_kb"]) * 1.024 / idle,
                "KB",
                baseline="",
                base_value=0,
                target="",
            )
        )
        out.append(
            row(
                f"{mid:,} streaming: DATA frames/s with {idle:,} idle devices",
                with_idle["rate"],
                "msg/s",
                baseline="without idle devices",
                base_value=without["rate"],
                target=">= 0.98x",
            )
        )
    return out


def rows(quick: bool = False) -> list[dict[str, Any]]:
    if quick:
        # every kind of scenario once (bare, gateway with a firmware device, idle devices, a memory slope)
        return measure([20], 40, duration_s=3, warmup_s=1, firmware=1, bare=True, memory=[20, 40])
    return measure([100, 1000], 10_000, duration_s=40, warmup_s=10, firmware=3, bare=True, memory=[100, 1000, 3000])


def render(all_rows: list[dict[str, Any]]) -> str:
    head = (
        "Fleet scale (`python -m gateway run` pinned to core 0; generator bench/fleetgen.py, Mosquitto and"
        " real firmware on the unix port on core 1; 100 Hz x 6 ch, 32 samples per DATA frame, HEALTH every"
        " 5 s (idle: 30 s); figures from the timed window after ramp and warm-up)"
    )
    # A figure without a baseline in the same run gets no baseline columns.
    plain = [
        {"figure": f"{r['figure']}: {r['value']:.1f} {r['unit']}"} if r.get("baseline") == "" else r for r in all_rows
    ]
    body = gateway_render(plain).split("\n", 1)[1]
    return head + "\n" + body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="edgeline fleet-scale benchmark")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (checks that the bench runs)")
    parser.add_argument("--streaming", default="100,1000", help="device counts at 100 Hz, comma-separated")
    parser.add_argument(
        "--memory", default="100,1000,3000", help=f"device counts at {MEMORY_RATE_HZ:g} Hz for the RSS slope"
    )
    parser.add_argument("--idle", type=int, default=10_000, help="idle devices beside the largest count (0: none)")
    parser.add_argument("--duration", type=float, default=40.0, help="seconds of load per scenario after the ramp")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds of that load not timed")
    parser.add_argument("--firmware", type=int, default=3, help="real firmware processes (unix port) per scenario")
    parser.add_argument("--no-bare", action="store_true", help="skip the bare-subscriber baseline runs")
    parser.add_argument("--_bare", dest="bare_sub", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--flag", type=Path, help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    if opts.bare_sub:
        return bare_main(opts.port, opts.flag)
    if opts.quick:
        print(render(rows(quick=True)))
        return 0
    counts = [int(x) for x in opts.streaming.split(",") if x]
    print(
        render(
            measure(
                counts,
                opts.idle,
                duration_s=opts.duration,
                warmup_s=opts.warmup,
                firmware=opts.firmware,
                bare=not opts.no_bare,
                memory=[int(x) for x in opts.memory.split(",") if x],
            )
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
