"""Raw readings out of the raw log: decoded DATA frames of one device and time span.

Used by ``edgeline-gateway raw`` (raw windows on request) and by the pipeline to
attach the readings around an alert. Frames are decoded with the device's
current schema from the registry; a frame that no longer matches it is skipped
and counted.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import TextIO

import numpy as np
from numpy.typing import NDArray

from gateway.atrest import KeyRing
from gateway.rawlog import ChunkReader, LogRow, read_frames
from shared_protocol import DATA
from shared_protocol.decode import Schema
from shared_protocol.errors import ProtocolError
from shared_protocol.np_decode import decode_data_many


def readings(rows: list[LogRow], schema: Schema) -> tuple[NDArray[np.float64], NDArray[np.float32], int]:
    """(times (n,), values (n, channels), frames skipped) for DATA rows, in time order.

    Each sample's time is its frame's rebuilt time plus its offset in the frame.
    """
    data = [r for r in rows if r.type == DATA]
    if not data:
        return np.zeros(0), np.zeros((0, schema.nchannels), dtype=np.float32), 0
    errors: list[tuple[int, ProtocolError]] = []
    times: list[NDArray[np.float64]] = []
    values: list[NDArray[np.float32]] = []
    for batch in decode_data_many([r.payload for r in data], schema, errors):
        ns = batch.values.shape[1]
        t0 = np.asarray([data[i].t for i in batch.index.tolist()])
        step = batch.period_us.astype(np.float64) * 1e-6
        times.append((t0[:, None] + step[:, None] * np.arange(ns)[None, :]).reshape(-1))
        values.append(batch.values.reshape(-1, schema.nchannels))
    t = np.concatenate(times)
    v = np.concatenate(values)
    order = np.argsort(t, kind="stable")
    return t[order], v[order], len(errors)


def device_schema(data_dir: Path, device: str) -> Schema | None:
    path = data_dir / "registry.sqlite"
    if not path.exists():
        return None
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT channels FROM devices WHERE device = ?", (device,)).fetchone()
    finally:
        db.close()
    if row is None or not row[0]:
        return None
    return Schema([tuple(c) for c in json.loads(row[0])])


def _read_rows(
    data_dir: Path, device: str, t_from: float, t_to: float, keys: KeyRing | ChunkReader | None
) -> list[LogRow]:
    # A frame's t is its first sample: start early enough to catch the frame holding t_from.
    return read_frames(data_dir / "rawlog.sqlite", device, t_from - 60.0, t_to, types=(DATA,), keys=keys)


def raw_window(
    data_dir: Path,
    device: str,
    t_from: float,
    t_to: float,
    *,
    schema: Schema | None = None,
    max_samples: int = 0,
    keys: KeyRing | ChunkReader | None = None,
) -> dict[str, object]:
    """A device's readings in [t_from, t_to] as a JSON-ready record (lane "raw").

    {"device", "start", "end", "channels": [names], "units": [...], "t": [...], "values": [[...] per sample],
     "truncated": bool, "skipped_frames": n}. max_samples > 0 keeps the first max_samples.
    """
    schema = schema or device_schema(data_dir, device)
    if schema is None:
        raise ValueError(f"device {device!r} has no known schema in {data_dir / 'registry.sqlite'}")
    t, v, skipped = readings(_read_rows(data_dir, device, t_from, t_to, keys), schema)
    keep = (t >= t_from) & (t <= t_to)
    t, v = t[keep], v[keep]
    truncated = bool(max_samples and len(t) > max_samples)
    if truncated:
        t, v = t[:max_samples], v[:max_samples]
    return {
        "device": device,
        "start": t_from,
        "end": t_to,
        "channels": list(schema.names),
        "units": list(schema.units),
        "t": [round(float(x), 6) for x in t],
        "values": [[float(x) for x in row] for row in v.astype(np.float64)],
        "truncated": truncated,
        "skipped_frames": skipped,
    }


def export_readings(
    data_dir: Path, device: str, t_from: float, t_to: float, out: TextIO, *, keys: KeyRing | None = None
) -> int:
    """Write CSV (time, one column per channel) for a device's readings in [t_from, t_to].
    keys: the key ring of an encrypted raw log."""
    schema = device_schema(data_dir, device)
    if schema is None:
        raise ValueError(f"device {device!r} has no known schema in {data_dir / 'registry.sqlite'}")
    t, v, _skipped = readings(_read_rows(data_dir, device, t_from, t_to, keys), schema)
    keep = (t >= t_from) & (t <= t_to)
    out.write("time," + ",".join(schema.names) + "\n")
    for ti, row in zip(t[keep], v[keep], strict=True):
        out.write(f"{ti:.6f}," + ",".join(f"{x:.6g}" for x in row) + "\n")
    return int(keep.sum())
