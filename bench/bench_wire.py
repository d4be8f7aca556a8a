"""Bytes per reading on the wire, and decode throughput, for the same readings.

Recorded readings: a 6-channel int16 stream (MPU-6050-like: 3 accelerometer,
3 gyro channels) in frames of 32 samples, generated deterministically from a
fixed seed. Two streams: "vibration" (100 Hz, 24.7 Hz shaft harmonics + noise:
not smooth, consecutive samples differ by thousands of counts) and "smooth"
(1 kHz, slow motion: consecutive samples differ by tens of counts).

Each format is measured as the full MQTT 3.1.1 PUBLISH packet at QoS 1:
fixed header + remaining length + topic + packet id + payload, divided by the
readings it carries (192 per frame; 6 per message for Tasmota-style JSON).

    .venv/bin/python -m bench.bench_wire [--quick] [--frames N]
"""

from __future__ import annotations

import argparse
import json
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import cbor2
import msgpack  # type: ignore[import-untyped]
import numpy as np
import numpy.typing as npt
import pysparkplug as spb

from shared_protocol import FLAG_DELTA, ST_INT16
from shared_protocol.decode import Schema
from shared_protocol.encode import DataEncoder
from shared_protocol.np_decode import decode_data_many
from shared_protocol.topics import topic

NCH = 6
NS = 32
READINGS_PER_FRAME = NCH * NS
NAMES = ("ax", "ay", "az", "gx", "gy", "gz")
ACC_LSB = 16384.0  # LSB per g (MPU-6050, +-2 g)
GYR_LSB = 131.0  # LSB per deg/s
CHANNELS = [(n, "g", 1 / ACC_LSB, 0.0, ST_INT16, 100.0) for n in NAMES[:3]] + [
    (n, "deg/s", 1 / GYR_LSB, 0.0, ST_INT16, 100.0) for n in NAMES[3:]
]
SCHEMA = Schema(CHANNELS)
OUR_TOPIC = topic("el", "site1", "dev01", "data")  # el/site1/dev01/data
TASMOTA_TOPIC = "tele/dev01/SENSOR"
SPB_TOPIC = str(
    spb.Topic(group_id="site1", message_type=spb.MessageType.DDATA, edge_node_id="edge1", device_id="dev01")
)
T0 = datetime(2026, 11, 29, 7, 0, 0, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)


def mqtt_publish_size(topic_name: str, payload_len: int, qos: int = 1) -> int:
    """Length of an MQTT 3.1.1 PUBLISH packet: fixed header byte, remaining
    length (1..4 byte varint), topic (2-byte length + UTF-8), packet id (QoS > 0)."""
    remaining = 2 + len(topic_name.encode()) + (2 if qos else 0) + payload_len
    varint = 1
    while remaining >= 128**varint:
        varint += 1
    return 1 + varint + remaining


def record_stream(kind: str, nframes: int, seed: int = 1) -> tuple[npt.NDArray[np.int16], float]:
    """(raw int16 samples of shape (nframes * 32, 6), sample rate in Hz)."""
    rng = np.random.default_rng(seed)
    n = nframes * NS
    if kind == "vibration":
        rate = 100.0
        t = np.arange(n) / rate
        w = 2 * np.pi * 24.7
        acc = np.stack(
            [
                0.30 * np.sin(w * t) + 0.08 * np.sin(2 * w * t + 0.4) + 0.03 * np.sin(3 * w * t + 1.1),
                0.30 * np.cos(w * t) + 0.06 * np.sin(2 * w * t + 2.0),
                1.0 + 0.05 * np.sin(w * t + 0.7) + 0.02 * np.sin(2 * w * t),
            ],
            axis=1,
        )
        acc += rng.normal(0, 0.01, acc.shape)
        gyr = np.stack([0.4 * np.sin(w * t + p) + 0.1 * np.sin(2 * w * t + p) for p in (0.0, 1.3, 2.6)], axis=1)
        gyr += rng.normal(0, 0.05, gyr.shape)
    else:  # smooth: slow tilting and rotation sampled at 1 kHz
        rate = 1000.0
        t = np.arange(n) / rate
        acc = np.stack(
            [0.2 * np.sin(2 * np.pi * 0.7 * t), 0.15 * np.sin(2 * np.pi * 1.1 * t + 1), 1.0 + 0.01 * np.sin(t)],
            axis=1,
        )
        acc += rng.normal(0, 0.0005, acc.shape)
        gyr = np.stack([20 * np.sin(2 * np.pi * 0.5 * t + p) for p in (0.0, 1.0, 2.0)], axis=1)
        gyr += rng.normal(0, 0.05, gyr.shape)
    raw = np.concatenate([np.round(acc * ACC_LSB), np.round(gyr * GYR_LSB)], axis=1)
    return np.clip(raw, -32768, 32767).astype(np.int16), rate


@dataclass
class Encoded:
    name: str
    topic: str
    messages: list[bytes]
    readings_per_message: int


def encode_ours(raw: npt.NDArray[np.int16], rate: float, delta: bool) -> Encoded:
    enc = DataEncoder(NCH, NS, schema_id=SCHEMA.schema_id)
    period_us = round(1e6 / rate)
    flat = raw.reshape(-1, NS * NCH)
    out = []
    for i, frame in enumerate(flat):
        enc.encode(
            1,
            i,
            (i * NS * period_us // 1000) % 2**30,
            period_us,
            array("h", frame.tobytes()),
            NS,
            FLAG_DELTA if delta else 0,
        )
        out.append(bytes(enc.frame))
    return Encoded("edgeline delta" if delta else "edgeline plain", OUR_TOPIC, out, READINGS_PER_FRAME)


def _physical(raw: npt.NDArray[np.int16]) -> npt.NDArray[np.float64]:
    scales = np.asarray(SCHEMA.scales, dtype=np.float64)
    out: npt.NDArray[np.float64] = raw.astype(np.float64) * scales
    return out


def encode_tasmota(raw: npt.NDArray[np.int16], rate: float) -> Encoded:
    """One message per sample instant, all six values, as Tasmota's tele/.../SENSOR does."""
    phys = _physical(raw)
    out = []
    for i, row in enumerate(phys):
        ts = (T0 + timedelta(seconds=i / rate)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
        doc = {
            "Time": ts,
            "MPU6050": {"AX": round(row[0], 3), "AY": round(row[1], 3), "AZ": round(row[2], 3)}
            | {"GX": round(row[3], 2), "GY": round(row[4], 2), "GZ": round(row[5], 2)},
        }
        out.append(json.dumps(doc, separators=(",", ":")).encode())
    return Encoded("Tasmota-style JSON", TASMOTA_TOPIC, out, NCH)


def _batch_docs(raw: npt.NDArray[np.int16], rate: float) -> list[dict[str, Any]]:
    period_us = round(1e6 / rate)
    return [
        {"b": 1, "s": i, "t": i * NS * period_us // 1000, "p": period_us, "v": frame.tolist()}
        for i, frame in enumerate(raw.reshape(-1, NS, NCH))
    ]


def encode_json_batched(raw: npt.NDArray[np.int16], rate: float) -> Encoded:
    out = [json.dumps(d, separators=(",", ":")).encode() for d in _batch_docs(raw, rate)]
    return Encoded("JSON batched (raw ints)", OUR_TOPIC, out, READINGS_PER_FRAME)


def encode_msgpack(raw: npt.NDArray[np.int16], rate: float) -> Encoded:
    out = [msgpack.packb(d) for d in _batch_docs(raw, rate)]
    return Encoded("msgpack batched", OUR_TOPIC, out, READINGS_PER_FRAME)


def encode_cbor(raw: npt.NDArray[np.int16], rate: float) -> Encoded:
    out = [cbor2.dumps(d) for d in _batch_docs(raw, rate)]
    return Encoded("CBOR batched", OUR_TOPIC, out, READINGS_PER_FRAME)


def encode_sparkplug(raw: npt.NDArray[np.int16], rate: float) -> Encoded:
    """DDATA per 32 samples: 192 metrics, each alias + int value + its own timestamp (no
    datatype: aliases and types were announced in DBIRTH). Real pysparkplug encoding."""
    period_ms = 1000.0 / rate
    out = []
    for i, frame in enumerate(raw.reshape(-1, NS, NCH)):
        metrics = []
        for s in range(NS):
            ts = T0_MS + round((i * NS + s) * period_ms)
            for c in range(NCH):
                metrics.append(
                    spb.Metric(
                        timestamp=ts, name=None, datatype=spb.DataType.INT16, value=int(frame[s, c]), alias=c + 1
                    )
                )
        payload = spb.DData(timestamp=T0_MS + round((i + 1) * NS * period_ms), seq=i % 256, metrics=metrics)
        out.append(payload.encode(include_dtypes=False))
    return Encoded("Sparkplug B (pysparkplug, aliases)", SPB_TOPIC, out, READINGS_PER_FRAME)


def wire_bytes_per_reading(e: Encoded) -> tuple[float, float]:
    """(payload bytes per reading, MQTT PUBLISH bytes per reading)."""
    payload = sum(len(m) for m in e.messages)
    packets = sum(mqtt_publish_size(e.topic, len(m)) for m in e.messages)
    readings = e.readings_per_message * len(e.messages)
    return payload / readings, packets / readings


def _best_rate(fn: Callable[[], int], repeat: int, min_time: float) -> float:
    """Best readings/s over `repeat` timed runs of fn (each returns readings done)."""
    best = 0.0
    for _ in range(repeat):
        t0 = time.perf_counter()
        done = 0
        loops = 0
        while True:
            done += fn()
            loops += 1
            el = time.perf_counter() - t0
            if el >= min_time and loops >= 1:
                break
        best = max(best, done / el)
    return best


def decode_rows(
    ours: Encoded, ours_delta: Encoded, tasmota: Encoded, batched_json: Encoded, quick: bool
) -> list[dict[str, Any]]:
    repeat, min_time = (1, 0.01) if quick else (3, 0.5)
    frames = ours.messages
    dframes = ours_delta.messages
    n_ours = len(frames) * READINGS_PER_FRAME

    def np_plain() -> int:
        batches = decode_data_many(frames, SCHEMA)
        return sum(b.values.size for b in batches)

    def np_delta() -> int:
        batches = decode_data_many(dframes, SCHEMA)
        return sum(b.values.size for b in batches)

    def js() -> int:
        loads = json.loads
        for m in tasmota.messages:
            loads(m)
        return len(tasmota.messages) * NCH

    def js_batched() -> int:
        loads = json.loads
        for m in batched_json.messages:
            loads(m)
        return len(batched_json.messages) * READINGS_PER_FRAME

    assert np_plain() == n_ours
    rows = [
        {
            "decoder": "edgeline numpy decode_data_many (plain)",
            "readings_per_s": _best_rate(np_plain, repeat, min_time),
        },
        {
            "decoder": "edgeline numpy decode_data_many (delta)",
            "readings_per_s": _best_rate(np_delta, repeat, min_time),
        },
        {
            "decoder": "json.loads, Tasmota-style messages (baseline)",
            "readings_per_s": _best_rate(js, repeat, min_time),
        },
        {"decoder": "json.loads, batched JSON", "readings_per_s": _best_rate(js_batched, repeat, min_time)},
    ]
    base = float(rows[2]["readings_per_s"])  # type: ignore[arg-type]
    for r in rows:
        r["vs_json"] = float(r["readings_per_s"]) / base  # type: ignore[arg-type]
    return rows


def wire_rows(nframes: int) -> list[dict[str, Any]]:
    """One row per format: bytes per reading for the vibration and the smooth stream."""
    rows: dict[str, dict[str, Any]] = {}
    for kind in ("vibration", "smooth"):
        raw, rate = record_stream(kind, nframes)
        encs = [
            encode_ours(raw, rate, delta=False),
            encode_ours(raw, rate, delta=True),
            encode_tasmota(raw, rate),
            encode_json_batched(raw, rate),
            encode_msgpack(raw, rate),
            encode_cbor(raw, rate),
            encode_sparkplug(raw, rate),
        ]
        for e in encs:
            payload, wire = wire_bytes_per_reading(e)
            row = rows.setdefault(e.name, {"format": e.name, "topic": e.topic})
            row[f"{kind}_payload"] = payload
            row[f"{kind}_wire"] = wire
    out = list(rows.values())
    spb_row = rows["Sparkplug B (pysparkplug, aliases)"]
    for r in out:
        r["vs_sparkplug"] = spb_row["vibration_wire"] / r["vibration_wire"]
        r["vs_sparkplug_smooth"] = spb_row["smooth_wire"] / r["smooth_wire"]
        r["raw_int16"] = 2.0
    return out


def rows(quick: bool = False, nframes: int | None = None) -> list[dict[str, Any]]:
    """All rows (wire table, then decode table) for a runner: dicts with a 'table' key."""
    n = nframes or (4 if quick else 300)
    out = [{"table": "wire", **r} for r in wire_rows(n)]
    raw, rate = record_stream("vibration", n if quick else 2000)
    smooth, srate = record_stream("smooth", n if quick else 2000)
    out += [
        {"table": "decode", **r}
        for r in decode_rows(
            encode_ours(raw, rate, False),
            encode_ours(smooth, srate, True),
            encode_tasmota(raw, rate),
            encode_json_batched(raw, rate),
            quick,
        )
    ]
    return out


def render(all_rows: Sequence[dict[str, Any]]) -> str:
    lines = [
        "Bytes per reading (6 ch int16, 32 samples per frame; MQTT 3.1.1 PUBLISH QoS 1 incl. topic and packet id)",
        "",
        "| format | topic | vibration: payload B/reading | vibration: on the wire | smooth: on the wire "
        "| Sparkplug B / this (vibration) | Sparkplug B / this (smooth) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in all_rows:
        if r["table"] == "wire":
            lines.append(
                f"| {r['format']} | `{r['topic']}` | {r['vibration_payload']:.2f} | {r['vibration_wire']:.2f} "
                f"| {r['smooth_wire']:.2f} | {r['vs_sparkplug']:.1f}x | {r['vs_sparkplug_smooth']:.1f}x |"
            )
    lines.append("| raw int16 (the limit) | | 2.00 | 2.00 | 2.00 | | |")
    lines += [
        "",
        "Decode throughput (same run, one core)",
        "",
        "| decoder | readings/s | vs json.loads |",
        "|---|---|---|",
    ]
    for r in all_rows:
        if r["table"] == "decode":
            lines.append(f"| {r['decoder']} | {r['readings_per_s'] / 1e6:.2f} M | {r['vs_json']:.1f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="edgeline wire-size and decode benchmark")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (checks that the bench runs)")
    parser.add_argument("--frames", type=int, default=None, help="frames per stream for the wire table")
    opts = parser.parse_args(argv)
    print(render(rows(opts.quick, opts.frames)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
