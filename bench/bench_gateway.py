"""Gateway benchmarks: throughput from Mosquitto, publish -> alert latency, memory.

Every figure stands beside a baseline measured in the same run:

* readings/s through ingest -> decode -> sequence -> windows -> features ->
  TFLite inference -> raw log -> ACK, the gateway pinned to one core and fed
  from a real Mosquitto (publisher in a separate process), beside a paho
  subscriber that does nothing with the messages (the limit), same broker,
  same queued messages, same core;
* the same pipeline without MQTT (Gateway.process on frames in memory) beside
  the vectorised decoder alone;
* device publish -> alert received on the local broker, p50 / p99, while other
  devices load the gateway, beside a bare paho client in the gateway's process
  that receives the same load and republishes each probe at once (the same two
  broker hops, no processing);
* resident memory of a `python -m gateway run` process with the model loaded
  after processing frames, beside a bare Python that imports numpy, paho and
  LiteRT and loads the same model (the floor).

Data: 6-channel MPU-6050 vibration (healthy machine, firmware's sim_signals),
100 Hz, 32 samples per DATA frame; model models/vibration_anomaly_int8.json.

    .venv/bin/python -m bench.bench_gateway [--quick]
"""

from __future__ import annotations

import os

# As `edgeline-gateway run` does (gateway/cli.py): one BLAS thread, set before numpy loads.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import pickle  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from array import array  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "firmware"))  # sim_signals (plain Python, runs on CPython too)

from sensorfw.boards.sim_signals import Vibration  # noqa: E402

from gateway.config import from_dict  # noqa: E402
from gateway.ingest import RawFrame  # noqa: E402
from gateway.pipeline import Gateway  # noqa: E402
from gateway.runner import Runner  # noqa: E402
from shared_protocol import ST_INT16  # noqa: E402
from shared_protocol.decode import Schema, decode  # noqa: E402
from shared_protocol.encode import DataEncoder, encode_birth  # noqa: E402
from shared_protocol.np_decode import decode_data_many  # noqa: E402
from tests.support.mosquitto import Mosquitto  # noqa: E402

MODEL = ROOT / "models" / "vibration_anomaly_int8.json"
NAMES = ("ax", "ay", "az", "gx", "gy", "gz")
CHANNELS = [(n, "g", 1 / 16384, 0.0, ST_INT16, 100.0) for n in NAMES[:3]] + [
    (n, "deg/s", 1 / 131, 0.0, ST_INT16, 100.0) for n in NAMES[3:]
]
NS = 32
READINGS_PER_FRAME = NS * len(CHANNELS)
SITE = "b"


# --------------------------------------------------------------------------- frames


def device_frames(
    device: str, nframes: int, *, fault: str = "none", ns: int = NS, seed: int = 1
) -> list[tuple[str, bytes]]:
    """BIRTH then nframes DATA frames of one simulated device, as (topic, payload)."""
    vib = Vibration(rate_hz=100.0, seed=seed)
    vib.set_fault(fault, 1.0)
    enc = DataEncoder(len(CHANNELS), ns)
    buf = bytearray(512)
    n = encode_birth(buf, 1, 1, 0, "bench", CHANNELS)
    out = [(f"el/{SITE}/{device}/birth", bytes(buf[:n]))]
    samples = array("h", [0] * (6 * ns))
    ticks = 0
    for i in range(nframes):
        vib.fill_raw(samples, ns)
        n = enc.encode(1, i + 2, ticks, 10_000, samples, ns)
        out.append((f"el/{SITE}/{device}/data", bytes(enc.buf[:n])))
        ticks += ns * 10
    return out


def interleave(per_device: list[list[tuple[str, bytes]]]) -> list[tuple[str, bytes]]:
    births = [d[0] for d in per_device]
    data = [f for rows in zip(*[d[1:] for d in per_device], strict=True) for f in rows]
    return births + data


def gateway_config(data_dir: Path, broker: Mosquitto, client_id: str) -> dict[str, Any]:
    return {
        "gateway": {"id": "benchgw", "site": SITE, "data_dir": str(data_dir), "status_interval_s": 5.0},
        "mqtt": {"host": broker.host, "port": broker.port, "client_id": client_id},
        "ingest": {"queue_size": 50_000, "batch_max": 2000},
        "pipelines": [{"name": "vib", "model": str(MODEL), "devices": ["*"]}],
        "summary": {"interval_s": 10},
        # An "updated" record for every window over the threshold, published on the alert topic
        # like the raise: the probe's fault is one long episode, and each of its windows is timed.
        "alerts": {"update_interval_s": 0},
    }


# --------------------------------------------------------------------------- helper processes


def _connect(host: str, port: int, client_id: str, *, clean: bool = True) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean)
    c.max_inflight_messages_set(200)
    c.max_queued_messages_set(0)
    c.connect(host, port, 60)
    if os.environ.get("EDGELINE_BENCH_NODELAY", "1") == "1":
        # paho leaves Nagle on: a stream of small publishes then waits for TCP ACKs, which
        # delays the probes by tens of ms (measured) and would be charged to the gateway.
        sock = c.socket()
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return c


def publisher_main(args: argparse.Namespace) -> int:
    """Helper process: publish frames from a pickle file (QoS 1), optionally paced, optionally probing."""
    frames: list[tuple[str, bytes]] = pickle.loads(Path(args.publish).read_bytes())
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    c = _connect(args.host, args.port, f"pub-{os.getpid()}")
    c.loop_start()
    probe: list[tuple[str, bytes]] = pickle.loads(Path(args.probe).read_bytes()) if args.probe else []
    sent: dict[int, float] = {}
    got: dict[int, float] = {}
    inside: dict[int, float] = {}  # the gateway's own receive -> decide time, from the alert
    stamps: dict[int, tuple[float, float]] = {}  # the gateway's receive and decide times
    done = threading.Event()
    if probe:
        probe_dev = probe[0][0].split("/")[2]
        reply_topic = args.reply_topic

        def on_message(cl: Any, u: Any, m: mqtt.MQTTMessage) -> None:
            now = time.time()
            if m.topic.endswith("/alert"):
                rec = json.loads(m.payload)
                seq = int(rec["seq"])
                inside.setdefault(seq, float(rec["latency_ms"]["gateway"]))
                stamps.setdefault(seq, (float(rec["received"]), float(rec["decided"])))
            elif m.topic.endswith("/ack"):
                for _boot, first, last in decode(m.payload).fields["ranges"]:
                    for q in range(first, last + 1):
                        got.setdefault(q, now)
                return
            else:
                seq = int.from_bytes(m.payload[5:9], "little")
            got.setdefault(seq, now)

        c.on_message = on_message
        c.subscribe(reply_topic, 1)
        time.sleep(0.3)
        del probe_dev
    # Pace the background load, interleaving probe frames every probe_interval.
    t0 = time.monotonic()
    interval = 1.0 / args.rate if args.rate else 0.0
    next_probe = t0 + 0.5
    pi = 0
    infos = []
    for i, (topic, payload) in enumerate(frames):
        if interval:
            target = t0 + i * interval
            while True:
                now = time.monotonic()
                if probe and pi < len(probe) and now >= next_probe:
                    topic_p, payload_p = probe[pi]
                    seq = int.from_bytes(payload_p[5:9], "little")
                    sent[seq] = time.time()
                    c.publish(args.probe_topic or topic_p, payload_p, qos=1)
                    pi += 1
                    next_probe += args.probe_interval
                if now >= target:
                    break
                time.sleep(min(0.0005, target - now))
        infos.append(c.publish(topic, payload, qos=1))
    for info in infos[-200:]:
        info.wait_for_publish(30)
    if probe:
        deadline = time.monotonic() + 5
        while len(got) < len([s for s in sent if s > 3]) and time.monotonic() < deadline:
            time.sleep(0.05)
        done.set()
    c.disconnect()
    c.loop_stop()
    lat = [1000.0 * (got[s] - sent[s]) for s in sorted(sent) if s in got and s > 3]
    gw_ms = [inside[s] for s in sorted(sent) if s in inside and s > 3]
    # The same clock on one machine: publish -> gateway receive, and decision -> alert received.
    before = [1000.0 * (stamps[s][0] - sent[s]) for s in sorted(sent) if s in stamps and s in got and s > 3]
    after = [1000.0 * (got[s] - stamps[s][1]) for s in sorted(sent) if s in stamps and s in got and s > 3]
    print(
        json.dumps(
            {
                "published": len(frames),
                "probes": len(sent),
                "latencies_ms": lat,
                "gateway_ms": gw_ms,
                "to_gateway_ms": before,
                "alert_delivery_ms": after,
            }
        )
    )
    return 0


def run_publisher(
    frames_file: Path,
    broker: Mosquitto,
    *,
    rate: float = 0.0,
    cpu: int | None = None,
    probe: Path | None = None,
    probe_interval: float = 0.02,
    reply_topic: str = "",
    probe_topic: str = "",
) -> subprocess.Popen[str]:
    cmd = [
        sys.executable,
        "-m",
        "bench.bench_gateway",
        "--_publish",
        str(frames_file),
        "--host",
        broker.host,
        "--port",
        str(broker.port),
        "--rate",
        str(rate),
    ]
    if cpu is not None:
        cmd += ["--cpu", str(cpu)]
    if probe is not None:
        cmd += ["--probe", str(probe), "--probe-interval", str(probe_interval), "--reply-topic", reply_topic]
        if probe_topic:
            cmd += ["--probe-topic", probe_topic]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)


# --------------------------------------------------------------------------- throughput from Mosquitto


def _presubscribe(broker: Mosquitto, client_id: str) -> None:
    """Create a persistent session so the broker queues everything published next."""
    c = _connect(broker.host, broker.port, client_id, clean=False)
    c.loop_start()
    # The gateway's own subscriptions (gateway/ingest.py): DATA at QoS 0, the rest at QoS 1.
    c.subscribe([(f"el/{SITE}/+/{k}", 0 if k == "data" else 1) for k in ("birth", "data", "event", "health", "death")])
    time.sleep(0.3)
    c.disconnect()
    c.loop_stop()


def _publish_all(broker: Mosquitto, frames_file: Path) -> None:
    p = run_publisher(frames_file, broker, cpu=1)
    p.communicate(timeout=600)
    if p.returncode != 0:
        raise RuntimeError("publisher failed")


def bare_subscriber_rate(broker: Mosquitto, frames_file: Path, n: int, run: int = 0) -> float:
    """Messages/s a paho subscriber that does nothing drains from the broker."""
    cid = f"bench-bare-{run}"
    _presubscribe(broker, cid)
    _publish_all(broker, frames_file)
    count = [0]
    done = threading.Event()

    def on_message(c: Any, u: Any, m: mqtt.MQTTMessage) -> None:
        count[0] += 1
        if count[0] >= n:
            done.set()

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, clean_session=False)
    c.on_message = on_message
    t0 = time.perf_counter()
    c.connect(broker.host, broker.port, 60)
    c.loop_start()
    if not done.wait(600):
        raise RuntimeError(f"bare subscriber got {count[0]} of {n}")
    dt = time.perf_counter() - t0
    c.disconnect()
    c.loop_stop()
    return n / dt


def gateway_rate(
    broker: Mosquitto, frames_file: Path, n: int, n_data: int, workdir: Path, *, run: int = 0
) -> tuple[float, Runner]:
    """Messages/s the whole gateway drains from the broker (every frame decoded, windowed, scored)."""
    cid = f"bench-gateway-{run}"
    _presubscribe(broker, cid)
    _publish_all(broker, frames_file)
    runner = Runner(from_dict(gateway_config(workdir / f"gw-{run}", broker, cid)))
    t = threading.Thread(target=runner.run, daemon=True)
    t0 = time.perf_counter()
    t.start()
    g = runner.gateway
    deadline = time.monotonic() + 600
    while g.counters.data_frames < n_data and time.monotonic() < deadline:
        time.sleep(0.002)
    dt = time.perf_counter() - t0
    runner.stop_event.set()
    t.join(30)
    if g.counters.data_frames < n_data:
        raise RuntimeError(f"gateway processed {g.counters.data_frames} of {n_data}")
    return n / dt, runner


# --------------------------------------------------------------------------- pipeline in memory


def pipeline_in_memory(frames: list[tuple[str, bytes]], workdir: Path, batch: int) -> tuple[float, float]:
    """(readings/s through Gateway.process, readings/s of decode_data_many alone) on the same frames."""

    class Null:
        def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> bool:
            return True

    from gateway.inference import load_model

    cfg = from_dict(
        {
            "gateway": {"id": "m", "site": SITE, "data_dir": str(workdir)},
            "pipelines": [{"name": "vib", "model": str(MODEL)}],
        }
    )
    gw = Gateway(cfg, Null(), models={"vib": load_model(MODEL)})
    gw.start_writer()  # as in the running gateway: commit + fsync + ACK on the writer thread
    now = time.time()
    raw = [RawFrame(t, p, now) for t, p in frames]
    births = [r for r in raw if r.topic.endswith("/birth")]
    data = [r for r in raw if r.topic.endswith("/data")]
    gw.process(births)
    t0 = time.perf_counter()
    for i in range(0, len(data), batch):
        gw.process(data[i : i + batch])
    readings = gw.counters.readings
    assert gw.counters.data_frames == len(data)
    gw.close()  # waits for the last commit
    dt = time.perf_counter() - t0
    schema = Schema(CHANNELS)
    payloads = [r.payload for r in data]
    t0 = time.perf_counter()
    for i in range(0, len(payloads), batch):
        decode_data_many(payloads[i : i + batch], schema)
    dt_dec = time.perf_counter() - t0
    return readings / dt, len(payloads) * READINGS_PER_FRAME / dt_dec


# --------------------------------------------------------------------------- latency under load


def _pct(v: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(v), q)) if v else float("nan")


def latency(
    broker: Mosquitto,
    workdir: Path,
    *,
    load_fps: float,
    seconds: float,
    probe_interval: float,
    rounds: int = 1,
    ndev: int = 8,
) -> dict[str, Any]:
    """publish -> alert p50/p99 under load, and the bare two-hop echo under the same load.

    Each round runs phase A (probe -> gateway -> alert) then phase B (probe -> bare echo client
    in the gateway's process), both while ndev other devices load the gateway. Per-round
    percentiles are returned; the machine is shared, so rounds show how much is noise."""
    per_dev = max(1, int(load_fps * seconds / ndev))
    nprobe = int(seconds / probe_interval)
    files = []
    births: list[tuple[str, bytes]] = []
    for r in range(rounds):
        pair = []
        for phase in ("a", "b"):
            # Fresh devices per phase: the same frames again would be cheap duplicates.
            load = interleave([device_frames(f"load{r}{phase}-{d}", per_dev, seed=d + 10) for d in range(ndev)])
            path = workdir / f"load-{r}{phase}.pickle"
            path.write_bytes(pickle.dumps([f for f in load if f[0].endswith("/data")]))
            births += [f for f in load if f[0].endswith("/birth")]
            pair.append(path)
        # The probe device: a bearing fault, 64 samples (= the model's hop) per frame, so
        # every frame after the first completes exactly one anomalous window.
        probe = device_frames(f"probe-{r}", nprobe + 2, fault="bearing", ns=64, seed=99)
        births.append(probe[0])
        probe_path = workdir / f"probe-{r}.pickle"
        probe_path.write_bytes(pickle.dumps(probe[1:]))
        files.append((pair[0], pair[1], probe_path, f"probe-{r}"))

    cfg = gateway_config(workdir / f"gw-live-{ndev}", broker, f"bench-gateway-live-{ndev}")
    cfg["registry"] = {"max_devices": max(2000, 2 * rounds * ndev + rounds)}
    runner = Runner(from_dict(cfg))
    t = threading.Thread(target=runner.run, daemon=True)
    t.start()
    runner.mqtt.subscribed.wait(10)
    c = _connect(broker.host, broker.port, "births")
    c.loop_start()
    for topic, payload in births:
        c.publish(topic, payload, qos=1).wait_for_publish(10)
    echo = _connect(broker.host, broker.port, "echo")

    def on_echo(cl: Any, u: Any, m: mqtt.MQTTMessage) -> None:
        if m.topic.endswith("/echo/in"):
            cl.publish(f"el/{SITE}/echo/out", m.payload, qos=1)

    echo.on_message = on_echo
    echo.loop_start()
    echo.subscribe(f"el/{SITE}/echo/in", 1)
    # The baseline receives the same load as the gateway (same QoS) and ignores it.
    echo.subscribe(f"el/{SITE}/+/data", 0)
    time.sleep(0.5)
    per_round = []
    for load_a, load_b, probe_path, probe_dev in files:
        p = run_publisher(
            load_a,
            broker,
            rate=load_fps,
            cpu=1,
            probe=probe_path,
            probe_interval=probe_interval,
            reply_topic=f"el/{SITE}/{probe_dev}/alert",
        )
        out_a = json.loads(p.communicate(timeout=600)[0])
        p = run_publisher(
            load_b,
            broker,
            rate=load_fps,
            cpu=1,
            probe=probe_path,
            probe_interval=probe_interval,
            reply_topic=f"el/{SITE}/echo/out",
            probe_topic=f"el/{SITE}/echo/in",
        )
        out_b = json.loads(p.communicate(timeout=600)[0])
        per_round.append(
            (
                out_a["latencies_ms"],
                out_a["gateway_ms"],
                out_b["latencies_ms"],
                out_a["to_gateway_ms"],
                out_a["alert_delivery_ms"],
            )
        )
    echo.disconnect()
    echo.loop_stop()
    c.disconnect()
    c.loop_stop()
    runner.stop_event.set()
    t.join(30)
    return {
        "rounds": per_round,
        "load_readings_per_s": load_fps * READINGS_PER_FRAME,
        "dropped": runner.queue.stats().dropped,
        "alerts": runner.gateway.counters.alerts,
    }


# --------------------------------------------------------------------------- memory


def _rss_kb(pid: int) -> tuple[int, int]:
    rss = hwm = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
    return rss, hwm


def memory(broker: Mosquitto, workdir: Path, frames_file: Path, n_data: int) -> dict[str, float]:
    cfg_path = workdir / "mem.toml"
    d = gateway_config(workdir / "gw-mem", broker, "bench-gateway-mem")
    lines = []
    for table, values in d.items():
        if table == "pipelines":
            for p in values:
                lines.append("[[pipelines]]")
                lines += [f"{k} = {json.dumps(v)}" for k, v in p.items()]
            continue
        lines.append(f"[{table}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    cfg_path.write_text("\n".join(lines) + "\n")
    gw = subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "-c", str(cfg_path), "--log-level", "warning"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    status = workdir / "gw-mem" / "status.json"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if json.loads(status.read_text())["ingest"]["connected"]:
                    break
            except (FileNotFoundError, json.JSONDecodeError, KeyError):
                pass
            time.sleep(0.05)
        time.sleep(0.3)
        _publish_all(broker, frames_file)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if json.loads(status.read_text())["frames"]["data_accepted"] >= n_data:
                    break
            except (json.JSONDecodeError, KeyError):
                pass
            time.sleep(0.1)
        rss, hwm = _rss_kb(gw.pid)
    finally:
        gw.terminate()
        gw.wait(30)
    floor = subprocess.run(
        [
            sys.executable,
            "-c",
            "import numpy, paho.mqtt.client, sqlite3\n"
            "from gateway.inference import load_model\n"
            f"m = load_model({str(MODEL)!r})\n"
            "import numpy as np; m.score(np.zeros((64, 128, 6), np.float32))\n"
            "print(open('/proc/self/status').read())",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    floor_rss = next(int(line.split()[1]) for line in floor.splitlines() if line.startswith("VmRSS:"))
    return {"rss_mb": rss / 1024, "hwm_mb": hwm / 1024, "floor_mb": floor_rss / 1024}


# --------------------------------------------------------------------------- rows


def rows(quick: bool = False) -> list[dict[str, Any]]:
    """One row per figure: name, value, unit, baseline name, baseline value, ratio, target."""
    os.sched_setaffinity(0, {0})  # the gateway (this process) on one core; helpers on the other
    ndev = 8
    per_dev = 50 if quick else 2500
    frames = interleave([device_frames(f"pump-{d}", per_dev, seed=d + 1) for d in range(ndev)])
    n_data = ndev * per_dev
    n_msgs = len(frames)
    out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-gw-") as tmp:
        work = Path(tmp)
        frames_file = work / "frames.pickle"
        frames_file.write_bytes(pickle.dumps(frames))
        broker = Mosquitto(
            work / "broker",
            persistence=False,
            extra_conf="max_queued_messages 0\nqueue_qos0_messages true\nset_tcp_nodelay true",
        ).start()
        try:
            # Alternate baseline and gateway runs and keep the best of each: the machine is
            # shared, and interference only ever makes a run slower.
            bare = ours = 0.0
            for k in range(1 if quick else 3):
                bare = max(bare, bare_subscriber_rate(broker, frames_file, n_msgs, k))
                rate, runner = gateway_rate(broker, frames_file, n_msgs, n_data, work, run=k)
                ours = max(ours, rate)
            st = runner.gateway.status()
            q = runner.queue.stats()
            base = "paho subscriber doing nothing"
            per_msg = n_data / n_msgs * READINGS_PER_FRAME
            out.append(
                row(
                    "gateway from Mosquitto, messages/s",
                    ours,
                    "msg/s",
                    baseline=base,
                    base_value=bare,
                    target=">= 0.8x",
                )
            )
            out.append(
                row(
                    "gateway from Mosquitto, readings/s",
                    ours * per_msg,
                    "readings/s",
                    baseline=base,
                    base_value=bare * per_msg,
                    target=">= 1,000,000",
                )
            )
            out.append(
                {
                    "figure": f"  ({n_data} DATA frames; windows scored {st['pipelines']['vib']['windows_scored']}, "
                    f"queue high-water {q.high_water}, dropped {q.dropped})"
                }
            )
            mem_pipe = mem_dec = 0.0
            for k in range(1 if quick else 3):
                p_rate, d_rate = pipeline_in_memory(frames, work / f"mem-{k}", 2000)
                mem_pipe, mem_dec = max(mem_pipe, p_rate), max(mem_dec, d_rate)
            out.append(
                row(
                    "pipeline alone, frames in memory, readings/s",
                    mem_pipe,
                    "readings/s",
                    baseline="decode_data_many alone",
                    base_value=mem_dec,
                    target="",
                )
            )
            rounds = 1 if quick else 3
            lat = latency(
                broker,
                work,
                load_fps=1000 if quick else 2000,
                seconds=2 if quick else 5,
                probe_interval=0.05 if quick else 0.02,
                rounds=rounds,
            )
            load_txt = f"under {lat['load_readings_per_s'] / 1000:.0f} k readings/s"

            def med(idx: int, q: float) -> float:
                """Median over rounds of each round's percentile q."""
                return float(np.median([_pct(r[idx], q) for r in lat["rounds"]]))

            for q_ in (50, 99):
                out.append(
                    row(
                        f"publish -> alert received p{q_} ({load_txt})",
                        med(0, q_),
                        "ms",
                        baseline=f"bare 2-hop echo p{q_}",
                        base_value=med(2, q_),
                        target="<= 10 ms" if q_ == 99 else "",
                    )
                )
            out.append(
                row(
                    "  of which inside the gateway (receive -> decided) p50",
                    med(1, 50),
                    "ms",
                    baseline="p99",
                    base_value=med(1, 99),
                    target="",
                )
            )
            for idx, what in ((3, "device publish -> gateway receive"), (4, "decided -> alert received")):
                out.append(
                    row(
                        f"  of which {what} p50", med(idx, 50), "ms", baseline="p99", base_value=med(idx, 99), target=""
                    )
                )
            per = "; ".join(
                f"alert {_pct(a, 50):.1f}/{_pct(a, 99):.1f}, echo {_pct(e, 50):.1f}/{_pct(e, 99):.1f}"
                for a, _g, e, _b, _d in lat["rounds"]
            )
            n_timed = sum(len(r[0]) for r in lat["rounds"])
            out.append(
                {
                    "figure": f"  (median of {rounds} rounds, p50/p99 ms per round: {per}; {n_timed} alerts "
                    f"timed; gateway queue drops {lat['dropped']})"
                }
            )
            out.extend(fleet_latency_rows(broker, work, quick))
            mem = memory(broker, work, frames_file, n_data)
            out.append(
                row(
                    "gateway RSS with model loaded (after the run)",
                    mem["rss_mb"],
                    "MB",
                    baseline="python + numpy + paho + LiteRT + model",
                    base_value=mem["floor_mb"],
                    target="<= 80 MB",
                )
            )
            out.append(
                row(
                    "gateway peak RSS (VmHWM)",
                    mem["hwm_mb"],
                    "MB",
                    baseline="Greengrass v2 (published)",
                    base_value=96.0,
                    target="<= 80 MB",
                )
            )
        finally:
            broker.kill()
    return out


FLEET = 1000  # devices of the fleet load (100 Hz x 6 channels, 32 samples per frame each)


def fleet_latency_rows(broker: Mosquitto, work: Path, quick: bool) -> list[dict[str, Any]]:
    """publish -> alert p99 while 1,000 devices stream (3,125 DATA frames/s), beside the bare
    two-hop echo under the same load."""
    ndev = 100 if quick else FLEET
    rounds = 1 if quick else 2
    lat = latency(
        broker,
        work,
        load_fps=ndev * 100.0 / NS,
        seconds=2 if quick else 8,
        probe_interval=0.05 if quick else 0.02,
        rounds=rounds,
        ndev=ndev,
    )
    alert = float(np.median([_pct(r[0], 99) for r in lat["rounds"]]))
    echo = float(np.median([_pct(r[2], 99) for r in lat["rounds"]]))
    per = "; ".join(f"alert {_pct(a, 99):.1f}, echo {_pct(e, 99):.1f}" for a, _g, e, _b, _d in lat["rounds"])
    return [
        row(
            f"publish -> alert received p99 (under {ndev:,} streaming devices)",
            alert,
            "ms",
            baseline="bare 2-hop echo p99, same load",
            base_value=echo,
            target="<= 2x",
        ),
        {
            "figure": f"  (median of {rounds} rounds, p99 ms per round: {per}; "
            f"{sum(len(r[0]) for r in lat['rounds'])} alerts timed; gateway queue drops {lat['dropped']})"
        },
    ]


def row(figure: str, value: float, unit: str, *, baseline: str, base_value: float, target: str) -> dict[str, Any]:
    return {
        "figure": figure,
        "value": value,
        "unit": unit,
        "baseline": baseline,
        "baseline_value": base_value,
        "ratio": value / base_value if base_value else float("nan"),
        "target": target,
    }


def _fmt(v: float, unit: str) -> str:
    if unit in ("readings/s", "msg/s"):
        return f"{v / 1e6:.2f} M" if v >= 1e6 else f"{v / 1e3:.1f} k"
    return f"{v:.2f}" if unit == "ms" else f"{v:.1f}"


def render(all_rows: Sequence[dict[str, Any]]) -> str:
    lines = [
        "Gateway (one core, real Mosquitto, model vibration_anomaly int8; baselines measured in the same run;"
        " rates: best of 3 alternating runs)",
        "",
        "| figure | edgeline | baseline | baseline value | ratio | target |",
        "|---|---|---|---|---|---|",
    ]
    for r in all_rows:
        if "value" not in r:
            lines.append(f"| {r['figure']} | | | | | |")
            continue
        u = r["unit"]
        lines.append(
            f"| {r['figure']} | {_fmt(r['value'], u)} {u} | {r['baseline']} | {_fmt(r['baseline_value'], u)} {u} "
            f"| {r['ratio']:.2f}x | {r['target']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="edgeline gateway benchmark")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (checks that the bench runs)")
    parser.add_argument("--_publish", dest="publish", help=argparse.SUPPRESS)
    parser.add_argument("--host", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    parser.add_argument("--probe-interval", type=float, default=0.02, help=argparse.SUPPRESS)
    parser.add_argument("--probe-topic", default="", help=argparse.SUPPRESS)
    parser.add_argument("--reply-topic", default="", help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    if opts.publish:
        return publisher_main(opts)
    print(render(rows(opts.quick)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
