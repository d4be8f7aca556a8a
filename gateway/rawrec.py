"""A device's readings in the gateway's raw log as a :class:`~gateway.recording.Recording`.

"Learn what normal looks like on this machine": ``edgeline-train raw`` and ``edgeline-gateway
replay --rawlog`` read the DATA frames a device sent between two times, decoded with the
device's schema from the registry (gateway/export.py, as ``edgeline-gateway raw`` does).

The rate is the frames' sample period (the median step between samples, which within a frame
is exactly the period the device wrote, rounded to the microsecond as in the frame header).
A new part starts at each reboot (a new boot number) and at each gap: frames missing or a time
jump longer than 1.5 periods. The channels and units are the schema's. The fingerprint is the
sha256 of the decoded times (float64) and values (float32) of every part.
"""

from __future__ import annotations

import itertools
import logging
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from gateway.atrest import KeyRing
from gateway.export import _read_rows, device_schema, readings
from gateway.rawlog import ChunkReader, LogRow
from gateway.recording import Part, Recording, RecordingError, fingerprint_bytes
from shared_protocol import DATA

log = logging.getLogger(__name__)

GAP_PERIODS = 1.5  # a step longer than this many periods starts a new part
RATE_TOL = 0.01  # runs whose periods differ by more: the device's rate changed


def iso(t: float) -> str:
    """Unix seconds as 2026-12-01T10:00:00Z (to the millisecond when it has a fraction)."""
    d = datetime.fromtimestamp(t, UTC)
    spec = "seconds" if d.microsecond == 0 else "milliseconds"
    return d.isoformat(timespec=spec).replace("+00:00", "Z")


def _known_devices(data_dir: Path) -> list[str]:
    path = data_dir / "registry.sqlite"
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [str(r[0]) for r in db.execute("SELECT device FROM devices ORDER BY device")]
    finally:
        db.close()


def _span(data_dir: Path, device: str) -> tuple[float, float] | None:
    """(first, last) DATA frame time of the device in the raw log, None when it has none."""
    path = data_dir / "rawlog.sqlite"
    if not path.exists():
        return None
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT MIN(t_first), MAX(t_last) FROM chunks WHERE device = ?", (device,)).fetchone()
    finally:
        db.close()
    return None if row is None or row[0] is None else (float(row[0]), float(row[1]))


def _boot_runs(rows: list[LogRow]) -> list[tuple[int, list[LogRow]]]:
    """Consecutive rows (in time order) of one boot."""
    return [(boot, list(group)) for boot, group in itertools.groupby(rows, key=lambda r: r.boot)]


def _period(steps: list[NDArray[np.float64]]) -> float:
    """The sample period: the median step, rounded to the microsecond (a frame's period_us)."""
    allsteps = np.concatenate(steps)
    return round(float(np.median(allsteps)) * 1e6) / 1e6


def read_rawlog(data_dir: Path, device: str, t_from: float, t_to: float, *, keys: KeyRing | None = None) -> Recording:
    """The device's readings with times in [t_from, t_to] (Unix seconds) as a Recording.

    keys: the key ring of an encrypted raw log. Raises RecordingError for an unknown device,
    a device without a schema, encrypted chunks it cannot open, or no readings in the range
    (saying what the log holds)."""
    data_dir = Path(data_dir)
    if not t_to > t_from:
        raise RecordingError(f"the time range is empty: --since {iso(t_from)} is not before --to {iso(t_to)}")
    schema = device_schema(data_dir, device)
    if schema is None:
        known = _known_devices(data_dir)
        if not known:
            raise RecordingError(
                f"no devices in {data_dir / 'registry.sqlite'}: is {data_dir} the gateway's data_dir"
                " ([gateway] data_dir in its configuration)?"
            )
        if device not in known:
            raise RecordingError(f"unknown device {device!r}; the registry knows: {', '.join(known)}")
        raise RecordingError(
            f"device {device!r} has no schema in the registry (it has not sent a BIRTH frame): its readings cannot"
            " be decoded; restart the board or wait for its next BIRTH"
        )
    segments: list[tuple[int, NDArray[np.float64], NDArray[np.float32]]] = []
    skipped = 0
    reader = ChunkReader(keys)
    for boot, run in _boot_runs(_read_rows(data_dir, device, t_from, t_to, reader)):
        t, v, bad = readings([r for r in run if r.type == DATA], schema)
        skipped += bad
        keep = (t >= t_from) & (t <= t_to)
        if keep.any():
            segments.append((boot, t[keep], v[keep]))
    if skipped:
        log.warning("raw log: %d frames of %s do not match its current schema, left out", skipped, device)
    if reader.unreadable:
        what = "no key ring was given" if keys is None else "the key ring does not open them"
        raise RecordingError(
            f"{reader.unreadable} raw-log chunks of {device} in the range are encrypted and {what}: read them with"
            " the gateway's key ring ([encryption] key_dir in its configuration)"
        )
    if not segments:
        span = _span(data_dir, device)
        held = f"the log holds {device} from {iso(span[0])} to {iso(span[1])}" if span else f"the log holds no {device}"
        raise RecordingError(
            f"no readings of {device} between {iso(t_from)} and {iso(t_to)}: {held}; pick a range in it"
        )
    diffs = [np.diff(t) for _, t, _ in segments if t.size > 1]
    if not diffs:
        raise RecordingError(f"only one reading of {device} between {iso(t_from)} and {iso(t_to)}: pick a longer range")
    period = _period(diffs)
    parts: list[Part] = []
    chunks: list[bytes] = []
    for boot, t, v in segments:
        steps = np.diff(t)
        if steps.size and abs(float(np.median(steps)) - period) > RATE_TOL * period:
            raise RecordingError(
                f"{device} changed its sample rate: {1 / float(np.median(steps)):.6g} Hz in boot {boot} from"
                f" {iso(float(t[0]))}, {1 / period:.6g} Hz elsewhere in the range: pick a range with one rate"
            )
        cuts = [0, *(np.flatnonzero(steps > GAP_PERIODS * period) + 1).tolist(), t.size]
        for a, b in itertools.pairwise(cuts):
            chunks += [t[a:b].tobytes(), np.ascontiguousarray(v[a:b], dtype=np.float32).tobytes()]
            parts.append(
                Part(
                    t0=float(t[a]),
                    values=np.ascontiguousarray(v[a:b], dtype=np.float32),
                    labels=None,
                    origin=f"{device} boot {boot} {iso(float(t[a]))}..{iso(float(t[b - 1]))}",
                )
            )
    return Recording(
        channels=tuple(zip(schema.names, schema.units, strict=True)),
        rate_hz=round(1.0 / period, 6),
        parts=tuple(parts),
        source=f"rawlog: {device} {iso(t_from)}..{iso(t_to)}",
        fingerprint=fingerprint_bytes(chunks),
    )
