"""Encryption at rest: the forward queue and the raw log with AES-256-GCM (``[encryption]``) beside
the same stores unencrypted, measured in the same run.

Queue in: summary and alert records (``bench_forward.make_records``, ~250 B of JSON) committed into
the SQLite queue, 500 a transaction (``ForwardQueue.commit``).  Queue out: the same records fetched
(decrypted) in lane order, 512 at a time, and deleted in order, 500 a transaction.  Drain: a
forwarder sends the queued records to a real Mosquitto at QoS 1 until every one is acknowledged
and deleted.  Raw log: DATA frames (6 channels x 32 int16 samples) committed as the gateway's
writer does (50 devices x 4 frames a commit, ``synchronous=FULL``), then read back per device.

Rounds alternate which store goes first; each figure is the median of the rounds.  CPU is the
process's CPU time (``time.process_time``: SQLite, deflate, AES-GCM, Python) per record or frame;
wall-clock rates include the fsyncs.  Bytes on disk: the pages in use per record (queue) and the
stored bytes per frame (raw log).

    .venv/bin/python -m bench.bench_atrest [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_forward import _config, make_records
from gateway.atrest import Cipher, EncryptionSettings, KeyRing, open_keyring
from gateway.forward import Forwarder
from gateway.forward.queue import LANE_INDEX, LANES, ForwardQueue, Pending, summary_level
from gateway.rawlog import LogRow, RawLog
from tests.support.mosquitto import Mosquitto

CASES = ("plain", "encrypted")
BATCH = 500
DEVICES, FRAMES_PER_COMMIT = 50, 4
FRAME = 16 + 6 * 32 * 2  # header + 6 channels x 32 int16 samples


def _timed(fn: Callable[[], int]) -> tuple[float, float, int]:
    """(wall s, CPU s, items) of one call."""
    w, c = time.perf_counter(), time.process_time()
    n = fn()
    return time.perf_counter() - w, time.process_time() - c, n


def _pending(n: int) -> list[Pending]:
    out = []
    for lane, rec in make_records(n):
        i = LANE_INDEX[lane]
        out.append(Pending(i, 1.7e9, json.dumps(rec, separators=(",", ":")), summary_level(i, rec)))
    return out


def _queue_round(work: Path, items: Sequence[Pending], cipher: Cipher | None) -> dict[str, float]:
    q = ForwardQueue(work / "forward.db", budget_bytes=1 << 30, cipher=cipher)
    q.open()

    def put() -> int:
        for start in range(0, len(items), BATCH):
            q.commit(items[start : start + BATCH])
        return len(items)

    def take() -> int:
        n = 0
        for lane in range(len(LANES)):
            cursor = -1
            while rows := q.fetch(lane, cursor, 512):
                n += len(rows)
                cursor = rows[-1].id
                for start in range(0, len(rows), BATCH):
                    q.commit([], {lane: rows[min(start + BATCH, len(rows)) - 1].id})
        return n

    w_in, c_in, n = _timed(put)
    used = q.used_bytes()
    w_out, c_out, got = _timed(take)
    q.close()
    assert got == n, (got, n)
    return {
        "in_per_s": n / w_in,
        "in_cpu_us": c_in / n * 1e6,
        "out_per_s": n / w_out,
        "out_cpu_us": c_out / n * 1e6,
        "disk_per_record": used / n,
    }


def _frames(commits: int) -> list[list[LogRow]]:
    payload = bytes(range(256)) * 2
    batches = []
    for c in range(commits):
        rows = []
        for d in range(DEVICES):
            for f in range(FRAMES_PER_COMMIT):
                seq = c * FRAMES_PER_COMMIT + f
                t = 1.7e9 + seq * 0.32
                rows.append(LogRow(f"dev{d:03d}", 1, seq, 2, 0, t, t, payload[:FRAME]))
        batches.append(rows)
    return batches


def _rawlog_round(work: Path, batches: Sequence[list[LogRow]], cipher: Cipher | None) -> dict[str, float]:
    log = RawLog(work / "rawlog.sqlite", max_bytes=1 << 40, max_age_s=1e9, cipher=cipher)

    def write() -> int:
        for rows in batches:
            log.commit_batch(rows, now=rows[0].received)
        return sum(len(rows) for rows in batches)

    def read() -> int:
        return sum(len(log.frames(f"dev{d:03d}", 0.0, 2e9)) for d in range(DEVICES))

    w_w, c_w, n = _timed(write)
    stored = log.stats().stored_bytes
    w_r, c_r, got = _timed(read)
    log.close()
    assert got == n and log.reader.unreadable == 0
    return {
        "write_per_s": n / w_w,
        "write_cpu_us": c_w / n * 1e6,
        "read_per_s": n / w_r,
        "read_cpu_us": c_r / n * 1e6,
        "disk_per_frame": stored / n,
    }


def _drain_round(work: Path, broker: Mosquitto, items: Sequence[Pending], ring: KeyRing | None) -> dict[str, float]:
    data = work / "drain"
    q = ForwardQueue(data / "forward.db", budget_bytes=1 << 30, cipher=ring.cipher() if ring else None)
    q.open()
    for start in range(0, len(items), BATCH):
        q.commit(items[start : start + BATCH])
    q.close()
    fwd = Forwarder(_config(broker.port), "gw-bench", data, cipher=ring.cipher() if ring else None)
    w, c = time.perf_counter(), time.process_time()
    fwd.start()
    try:
        if not fwd.wait_drained(120):
            raise RuntimeError("the forwarder did not drain within 120 s")
        wall, cpu = time.perf_counter() - w, time.process_time() - c
    finally:
        fwd.stop()
    return {"drain_per_s": len(items) / wall, "drain_cpu_us": cpu / len(items) * 1e6}


def rows(quick: bool = False, n: int | None = None) -> list[dict[str, Any]]:
    records = n or (2_000 if quick else 20_000)
    commits = 5 if quick else 50
    rounds = 1 if quick else 5
    items = _pending(records)
    batches = _frames(commits)
    results: dict[str, list[dict[str, float]]] = {case: [] for case in CASES}
    with tempfile.TemporaryDirectory(prefix="edgeline-bench-atrest-") as tmp:
        root = Path(tmp)
        ring = open_keyring(EncryptionSettings(key_dir=root / "keys"), create=True, writer=True)
        broker = Mosquitto(root / "mosquitto").start()
        try:
            for r in range(rounds):
                order = CASES if r % 2 == 0 else CASES[::-1]
                for case in order:
                    work = root / f"{case}-{r}"
                    work.mkdir()
                    keys = ring if case == "encrypted" else None
                    out = _queue_round(work, items, ring.cipher() if keys else None)
                    out |= _rawlog_round(work, batches, ring.cipher() if keys else None)
                    out |= _drain_round(work, broker, items[: max(500, records // 4)], keys)
                    results[case].append(out)
        finally:
            broker.stop()
            ring.close()
    return [
        {"case": case, "records": records, "frames": commits * DEVICES * FRAMES_PER_COMMIT, "rounds": rounds}
        | {k: statistics.median(r[k] for r in results[case]) for k in results[case][0]}
        for case in CASES
    ]


def render(all_rows: Sequence[dict[str, Any]]) -> str:
    plain = next(r for r in all_rows if r["case"] == "plain")

    def table(title: str, columns: list[tuple[str, str, str]]) -> list[str]:
        out = [title, "", "| store | " + " | ".join(c[0] for c in columns) + " |", "|---" * (len(columns) + 1) + "|"]
        for r in all_rows:
            base = r["case"] == "plain"
            cells = [
                format(r[key], fmt) + ("" if base else f" ({r[key] / plain[key]:.2f}x)") for _name, key, fmt in columns
            ]
            name = "baseline: unencrypted" if base else "AES-256-GCM at rest (vs baseline)"
            out.append(f"| {name} | " + " | ".join(cells) + " |")
        return out

    rounds = f"median of {plain['rounds']} interleaved rounds, same run; CPU: process CPU time"
    lines = table(
        f"Forward queue, {plain['records']:,} records (~250 B of JSON each), {rounds}",
        [
            ("in: records/s", "in_per_s", ",.0f"),
            ("CPU µs/record", "in_cpu_us", ".1f"),
            ("out: records/s", "out_per_s", ",.0f"),
            ("CPU µs/record", "out_cpu_us", ".1f"),
            ("drain to Mosquitto: records/s", "drain_per_s", ",.0f"),
            ("CPU µs/record", "drain_cpu_us", ".1f"),
            ("bytes on disk/record", "disk_per_record", ".0f"),
        ],
    )
    lines.append("")
    lines += table(
        f"Raw log, {plain['frames']:,} DATA frames of {FRAME} B ({DEVICES} devices x {FRAMES_PER_COMMIT} frames"
        f" a commit, synchronous=FULL), {rounds}",
        [
            ("write: frames/s", "write_per_s", ",.0f"),
            ("CPU µs/frame", "write_cpu_us", ".2f"),
            ("read: frames/s", "read_per_s", ",.0f"),
            ("CPU µs/frame", "read_cpu_us", ".2f"),
            ("bytes stored/frame", "disk_per_frame", ".1f"),
        ],
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="edgeline encryption-at-rest benchmark")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (checks that the bench runs)")
    parser.add_argument("--records", type=int, default=None, help="queue records per round")
    opts = parser.parse_args(argv)
    print(render(rows(opts.quick, opts.records)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
