"""Decode throughput (readings/s, one core) of the gateway's DATA decoders.

Same recorded readings as bench_wire (6 ch int16, 32 samples per frame).
Each edgeline figure stands beside baselines decoding the same readings in the
same run: json.loads of the Tasmota-style messages, json.loads / msgpack /
CBOR of batched frames, and the plain-Python decoder that boards use.

    .venv/bin/python -m bench.bench_decode [--quick]
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import cbor2
import msgpack  # type: ignore[import-untyped]

from bench import cli
from bench.bench_wire import (
    NCH,
    READINGS_PER_FRAME,
    SCHEMA,
    _best_rate,
    encode_cbor,
    encode_json_batched,
    encode_msgpack,
    encode_ours,
    encode_tasmota,
    record_stream,
)
from shared_protocol.decode import decode
from shared_protocol.np_decode import decode_data, decode_data_many


def rows(quick: bool = False) -> list[dict[str, Any]]:
    nframes = 8 if quick else 2000
    repeat, min_time = (1, 0.01) if quick else (3, 0.5)
    raw, rate = record_stream("vibration", nframes)
    smooth, srate = record_stream("smooth", nframes)
    plain = encode_ours(raw, rate, False).messages
    delta = encode_ours(smooth, srate, True).messages
    tasmota = encode_tasmota(raw, rate).messages
    js = encode_json_batched(raw, rate).messages
    mp = encode_msgpack(raw, rate).messages
    cb = encode_cbor(raw, rate).messages
    n = len(plain) * READINGS_PER_FRAME

    def many(frames: Sequence[bytes], chunk: int) -> Callable[[], int]:
        def run() -> int:
            done = 0
            for i in range(0, len(frames), chunk):
                for b in decode_data_many(frames[i : i + chunk], SCHEMA):
                    done += b.values.size
            return done

        return run

    def single() -> int:
        done = 0
        for f in plain:
            done += decode_data(f, SCHEMA).values.size
        return done

    def plain_python() -> int:
        sub = plain[: max(1, len(plain) // 10)]
        for f in sub:
            decode(f, SCHEMA)
        return len(sub) * READINGS_PER_FRAME

    def loads(fn: Callable[[bytes], Any], msgs: Sequence[bytes], per: int) -> Callable[[], int]:
        def run() -> int:
            for m in msgs:
                fn(m)
            return len(msgs) * per

        return run

    cases: list[tuple[str, Callable[[], int]]] = [
        ("edgeline numpy decode_data_many, batches of 1000 frames", many(plain, 1000)),
        ("edgeline numpy decode_data_many, batches of 100 frames", many(plain, 100)),
        ("edgeline numpy decode_data_many, batches of 10 frames", many(plain, 10)),
        ("edgeline numpy decode_data, one frame at a time", single),
        ("edgeline numpy decode_data_many, delta frames, batches of 100", many(delta, 100)),
        ("edgeline plain-Python decode (board decoder, with schema)", plain_python),
        ("json.loads, Tasmota-style messages (baseline)", loads(json.loads, tasmota, NCH)),
        ("json.loads, batched JSON frames", loads(json.loads, js, READINGS_PER_FRAME)),
        ("msgpack.unpackb, batched frames", loads(msgpack.unpackb, mp, READINGS_PER_FRAME)),
        ("cbor2.loads, batched frames", loads(cbor2.loads, cb, READINGS_PER_FRAME)),
    ]
    assert many(plain, 100)() == n
    out: list[dict[str, Any]] = [
        {"decoder": name, "readings_per_s": _best_rate(fn, repeat, min_time)} for name, fn in cases
    ]
    base = next(r["readings_per_s"] for r in out if r["decoder"].startswith("json.loads, Tasmota"))
    for r in out:
        r["vs_json"] = r["readings_per_s"] / base
    return out


def render(all_rows: Sequence[dict[str, Any]]) -> str:
    lines = [
        "DATA decode throughput, 6 ch int16, 32 samples per frame, one core (baselines measured in the same run)",
        "",
        "| decoder | readings/s | vs json.loads (Tasmota-style) |",
        "|---|---|---|",
    ]
    for r in all_rows:
        lines.append(f"| {r['decoder']} | {r['readings_per_s'] / 1e6:.2f} M | {r['vs_json']:.1f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return cli.run("edgeline DATA decode benchmark", rows, render, argv)


if __name__ == "__main__":
    raise SystemExit(main())
