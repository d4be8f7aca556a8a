"""CSV files as a :class:`~gateway.recording.Recording`: the user's own sensor data.

One job, long on purpose: most of its lines are the checks that give each kind of bad file
(column, cell, time, rate, separator) its own message naming the file, line and column.

Each file becomes one part (or one part per gap-free run with ``split_gaps``); files must
have the same columns and be given in time order. Columns:

- a **time** column: ``time_column``, else the first of ``time``, ``timestamp``, ``datetime``,
  ``t`` (any case). Its cells are seconds (``1733200000.25``), ISO-8601 date-times
  (``1970-01-01 00:04:40.015``, ``2026-12-01T10:00:00Z``; no zone means UTC), or, when
  ``rate_hz`` is given and they are integers counting up by one, sample numbers. Without a
  time column ``rate_hz`` is required.
- **value** columns: ``columns``, else every other column but the label column.
- an optional **label** column: ``label_column``, else the first of ``label``, ``is_anomaly``,
  ``anomaly``, ``class`` (``no_labels`` ignores it). The value ``normal_label`` (default
  ``"0"``, which also accepts ``0.0``, ``false`` and ``normal`` in any case) is normal (0),
  anything else anomalous (1).

Units come from ``units`` (``{"ax": "g"}``), else from a header written ``ax [g]`` or
``ax (g)``, else ``""``.

The sample rate is read from the time column: the mean step over the gap-free runs (that is
(last - first) / (n - 1) of each run), so timestamps rounded to the millisecond (64 Hz
written as steps of 15 and 16 ms) still give 64 Hz. A step longer than 1.5 periods is a gap;
one shorter than half a period is irregular sampling. When ``rate_hz`` is given too, the two
must agree within 1 %. The rate is rounded to the roundest value the timestamps' resolution
allows (64.0002 Hz from millisecond timestamps over 110 s is 64 Hz).

Parsing is numpy's (``np.loadtxt`` on the numeric columns); on anything it rejects, the
file is scanned line by line to say exactly where and what is wrong. About 1 s per million
rows of seven columns on one core.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from gateway.recording import Part, Recording, RecordingError, fingerprint_bytes

TIME_NAMES = ("time", "timestamp", "datetime", "t")
LABEL_NAMES = ("label", "is_anomaly", "anomaly", "class")
NORMAL_ZERO = ("0", "0.0", "false", "normal")  # accepted as normal when normal_label is "0"
GAP_PERIODS = 1.5  # a step longer than this many periods is a gap
IRREGULAR_PERIODS = 0.5  # a step shorter than this many periods is irregular sampling
RATE_TOL = 0.01  # --rate-hz and the time column's rate must agree within 1 %
_UNIT_RE = re.compile(r"^(.*?)\s*[\[(]\s*([^\])]*?)\s*[\])]$")


def _header_name(cell: str) -> tuple[str, str]:
    """'ax [g]' / 'ax (g)' -> ('ax', 'g'); 'ax' -> ('ax', '')."""
    cell = cell.strip()
    m = _UNIT_RE.match(cell)
    if m and m.group(1):
        return m.group(1), m.group(2)
    return cell, ""


@dataclass(frozen=True)
class _Columns:
    header: tuple[str, ...]  # names as parsed (units stripped)
    header_units: tuple[str, ...]
    time: int | None
    values: tuple[int, ...]
    label: int | None


@dataclass
class _File:
    path: Path
    lines: list[str]  # data lines, blank ones removed
    line_no: NDArray[np.int64] | None  # editor line number of each data line (None: i + 2)
    times: NDArray[np.float64] | None  # seconds, or sample numbers when kind == "samples"
    kind: str  # "seconds", "iso", "samples", "none"
    values: NDArray[np.float64]
    labels_raw: NDArray[np.str_] | None

    def line(self, i: int) -> int:
        return int(self.line_no[i]) if self.line_no is not None else i + 2


def _where(f: _File | Path, line: int, column: str | None = None) -> str:
    path = f.path if isinstance(f, _File) else f
    return f"{path} line {line}" + (f", column {column!r}" if column is not None else "")


def _resolve(name: str, header: Sequence[str], raw: Sequence[str], what: str, path: Path) -> int:
    for names in (header, raw):
        if name in names:
            return list(names).index(name)
    lower = [h.lower() for h in header]
    if name.lower() in lower:
        return lower.index(name.lower())
    raise RecordingError(f"{path}: {what} {name!r} is not a column; the columns are: {', '.join(header)}")


def _columns(
    path: Path,
    raw: list[str],
    *,
    time_column: str | None,
    columns: Sequence[str] | None,
    label_column: str | None,
    no_labels: bool,
) -> _Columns:
    if len(raw) == 1:
        for sep, name in ((";", "semicolons"), ("\t", "tabs"), ("|", "bars")):
            if sep in raw[0]:
                raise RecordingError(
                    f"{_where(path, 1)}: the columns are separated by {name}, not commas: save the file as"
                    " comma-separated CSV"
                )
    parsed = [_header_name(c) for c in raw]
    header = [n for n, _ in parsed]
    for i, name in enumerate(header):
        if not name:
            raise RecordingError(f"{_where(path, 1)}: column {i + 1} has no name: name every column in the header")
        if name in header[:i]:
            raise RecordingError(
                f"{_where(path, 1)}: column name {name!r} appears twice (columns {header.index(name) + 1} and"
                f" {i + 1}): give every column its own name"
            )
    lower = [h.lower() for h in header]
    if time_column is not None:
        t_idx: int | None = _resolve(time_column, header, raw, "--time-column", path)
    else:
        t_idx = next((lower.index(n) for n in TIME_NAMES if n in lower), None)
    if label_column is not None:
        if no_labels:
            raise RecordingError("--label-column and --no-labels contradict each other: pass one of them")
        l_idx: int | None = _resolve(label_column, header, raw, "--label-column", path)
    else:
        l_idx = next((lower.index(n) for n in LABEL_NAMES if n in lower), None)
    if l_idx is not None and l_idx == t_idx:
        raise RecordingError(f"{path}: column {header[l_idx]!r} cannot be both the time and the label column")
    if columns:
        v_idx = [_resolve(c, header, raw, "--columns:", path) for c in columns]
        for i in v_idx:
            if i in (t_idx, l_idx):
                role = "time" if i == t_idx else "label"
                raise RecordingError(
                    f"{path}: --columns names {header[i]!r}, the {role} column: list only value columns"
                )
        if len(set(v_idx)) != len(v_idx):
            raise RecordingError(f"--columns names a column twice: {', '.join(columns)}")
    else:
        v_idx = [i for i in range(len(header)) if i not in (t_idx, l_idx)]
    if not v_idx:
        raise RecordingError(f"{path}: no value columns (header: {', '.join(header)}): the file needs a data column")
    return _Columns(
        header=tuple(header),
        header_units=tuple(u for _, u in parsed),
        time=t_idx,
        values=tuple(v_idx),
        label=None if no_labels else l_idx,
    )


def _read_text(path: Path) -> tuple[bytes, str]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise RecordingError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise RecordingError(f"{path}: is a directory, not a CSV file") from None
    except OSError as exc:
        raise RecordingError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise RecordingError(
            f"{_where(path, line)}: not UTF-8 text (byte {exc.start}): save the file as UTF-8 CSV"
        ) from None
    return data, text


def _split_lines(path: Path, text: str) -> tuple[str, list[str], NDArray[np.int64] | None]:
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise RecordingError(f"{path}: the file is empty: it needs a header line and data rows")
    header, data = lines[0], lines[1:]
    if not data:
        raise RecordingError(f"{path}: only a header line, no data rows")
    line_no = None
    if "" in data:  # blank lines: skipped, the line numbers in messages still count them
        keep = [i for i, s in enumerate(data) if s.strip()]
        line_no = np.asarray(keep, dtype=np.int64) + 2
        data = [data[i] for i in keep]
    return header, data, line_no


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _parse_iso(cells: NDArray[np.str_]) -> NDArray[np.float64]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no explicit representation of timezones": converted to UTC
        dt = cells.astype("datetime64[us]")
    return (dt - np.datetime64(0, "us")).astype(np.int64) / 1e6


def _iso_ok(cell: str) -> bool:
    try:
        _parse_iso(np.asarray([cell.strip()]))
    except ValueError:
        return False
    return True


def _loadtxt(lines: list[str], cols: Sequence[int], dtype: Any) -> NDArray[Any]:
    out: NDArray[Any] = np.loadtxt(
        lines, delimiter=",", quotechar='"', comments=None, usecols=list(cols), dtype=dtype, ndmin=2
    )
    return out


def _scan(f: _File, cols: _Columns, kind: str) -> RecordingError | None:
    """The first problem in the file, found line by line (None: no problem found)."""
    width = len(cols.header)
    for i, row in enumerate(csv.reader(f.lines)):
        line = f.line(i)
        if len(row) != width:
            return RecordingError(
                f"{_where(f, line)}: {len(row)} fields, the header has {width}"
                f" ({', '.join(cols.header)}): fix the row (a missing or extra comma?)"
            )
        if cols.time is not None:
            cell = row[cols.time].strip()
            name = cols.header[cols.time]
            if not cell:
                return _empty(f, line, name)
            ok = _is_float(cell) if kind != "iso" else _iso_ok(cell)
            if not ok:
                want = "a number (seconds or sample number)" if kind != "iso" else "an ISO-8601 date-time"
                return RecordingError(
                    f"{_where(f, line, name)}: {cell!r} is not {want} like the rows above: fix or remove the row"
                )
        for j in cols.values:
            cell = row[j].strip()
            if not cell:
                return _empty(f, line, cols.header[j])
            if not _is_float(cell):
                return RecordingError(
                    f"{_where(f, line, cols.header[j])}: {cell!r} is not a number: value columns must be numeric"
                    " (pick the numeric ones with --columns)"
                )
        if cols.label is not None and not row[cols.label].strip():
            return _empty(f, line, cols.header[cols.label])
    return None


def _empty(f: _File, line: int, column: str) -> RecordingError:
    return RecordingError(f"{_where(f, line, column)}: empty cell: every row needs a value in every column")


def _cell(f: _File, i: int, col: int) -> str:
    """The text of one cell, for messages."""
    row = next(csv.reader(f.lines[i : i + 1]), [])
    return row[col].strip() if col < len(row) else ""


def _time_kind(f: _File, cols: _Columns) -> str:
    """How the time column is written, from its first cell: seconds, iso or none."""
    if cols.time is None:
        return "none"
    cell = _cell(f, 0, cols.time)
    if _is_float(cell):
        return "seconds"
    if not _iso_ok(cell):
        raise RecordingError(
            f"{_where(f, f.line(0), cols.header[cols.time])}: {cell!r} is neither a number (seconds) nor an"
            " ISO-8601 date-time (2026-12-01 10:00:00.250): fix the time column or name another with"
            " --time-column"
        )
    return "iso"


def _load(f: _File, cols: _Columns, kind: str, text: str, header: str) -> None:
    """Fill f.values, f.times and f.labels_raw with numpy; the first problem as a RecordingError."""
    expected_commas = len(f.lines) * (len(cols.header) - 1)
    if '"' in text or text.count(",") - header.count(",") != expected_commas:
        # a row with too few / too many fields (or quoted cells): the line-by-line scan finds it
        err = _scan(f, cols, kind)
        if err is not None:
            raise err
    try:
        num_cols = list(cols.values) + ([cols.time] if kind == "seconds" and cols.time is not None else [])
        num = _loadtxt(f.lines, num_cols, np.float64)
        f.values = num[:, : len(cols.values)]
        if kind == "seconds":
            f.times = num[:, -1].copy()
        elif kind == "iso" and cols.time is not None:
            f.times = _parse_iso(np.char.strip(_loadtxt(f.lines, [cols.time], str)[:, 0]))
        if cols.label is not None:
            f.labels_raw = np.char.strip(_loadtxt(f.lines, [cols.label], str)[:, 0])
    except ValueError as exc:
        raise _scan(f, cols, kind) or RecordingError(f"{f.path}: cannot be read as CSV: {exc}") from None
    if f.labels_raw is not None and cols.label is not None and (f.labels_raw == "").any():
        raise _empty(f, f.line(int(np.flatnonzero(f.labels_raw == "")[0])), cols.header[cols.label])
    bad = ~np.isfinite(f.values)
    if bad.any():
        i, j = (int(x) for x in np.argwhere(bad)[0])
        raise _not_finite(f, i, cols.values[j], cols)
    if f.times is not None and cols.time is not None and not np.isfinite(f.times).all():
        raise _not_finite(f, int(np.flatnonzero(~np.isfinite(f.times))[0]), cols.time, cols)


def _not_finite(f: _File, i: int, col: int, cols: _Columns) -> RecordingError:
    return RecordingError(
        f"{_where(f, f.line(i), cols.header[col])}: {_cell(f, i, col)!r} is not a finite number:"
        " fill in the value or remove the row"
    )


def _parse_file(
    path: Path, cols: _Columns, text: str, split: tuple[str, list[str], NDArray[np.int64] | None], rate_hz: float | None
) -> _File:
    header, lines, line_no = split
    f = _File(path, lines, line_no, None, "none", np.zeros((0, 0)), None)
    kind = _time_kind(f, cols)
    _load(f, cols, kind, text, header)
    if kind == "seconds" and f.times is not None and _counts_samples(f.times):
        if rate_hz is not None:
            kind = "samples"
        elif f.times[0] < 1e9:  # not Unix seconds
            raise RecordingError(
                f"{_where(f, f.line(0), cols.header[cols.time or 0])}: the time column holds integers counting"
                f" up by one ({f.times[0]:.0f}, {f.times[min(1, f.times.size - 1)]:.0f}, ...): are they sample"
                " numbers or seconds? Pass --rate-hz with the sample rate (--rate-hz 1 if they are seconds)"
            )
    f.kind = kind
    return f


def _counts_samples(t: NDArray[np.float64]) -> bool:
    """Integers counting up by one (most steps are 1): sample numbers, not seconds."""
    if not np.all(t == np.round(t)):
        return False
    if t.size < 2:
        return bool(t.size == 1 and abs(t[0]) < 1e9)
    return bool(np.median(np.diff(t)) == 1.0)


def _check_increasing(f: _File, column: str) -> NDArray[np.float64]:
    assert f.times is not None
    steps = np.diff(f.times)
    bad = np.flatnonzero(steps <= 0)
    if bad.size:
        i = int(bad[0]) + 1
        what = "repeats" if steps[i - 1] == 0 else "goes back to"
        raise RecordingError(
            f"{_where(f, f.line(i), column)}: the time {what} {_fmt_time(f, i)} after {_fmt_time(f, i - 1)}"
            f" (line {f.line(i - 1)}): rows must be in time order, one per sample; sort the file by time"
            " and remove repeated rows"
        )
    return steps


def _fmt_time(f: _File, i: int) -> str:
    assert f.times is not None
    return f"{f.times[i]:.6g}" if f.kind != "iso" else str(np.datetime64(round(f.times[i] * 1e6), "us"))


def _runs(steps: NDArray[np.float64], period: float) -> tuple[float, int]:
    """(sum of in-run steps, their count): the steps that are not gaps."""
    ok = steps <= GAP_PERIODS * period
    return float(steps[ok].sum()), int(ok.sum())


def _file_period(f: _File, column: str) -> tuple[float, int]:
    """(sum, count) of the file's in-run steps, from its median step (seconds/iso times)."""
    steps = _check_increasing(f, column)
    if steps.size == 0:
        return 0.0, 0
    return _runs(steps, float(np.median(steps)))


def _quantum(times: NDArray[np.float64]) -> float:
    """The resolution the times are written with: 1, 0.1, ... 1e-6 s (checked on the first rows)."""
    head = times[:1000]
    for k in range(7):
        x = head * 10.0**k
        if np.all(np.abs(x - np.round(x)) <= 1e-3):
            return 10.0**-k
    return 1e-6


def _tidy_rate(rate: float, quantum: float, span: float) -> float:
    """The roundest rate within what the time resolution allows: timestamps rounded to the
    millisecond over 110 s give 64.0002 Hz, which is 64 Hz."""
    tol = rate * (2 * quantum / span + 1e-9)
    for digits in range(7):
        cand = round(rate, digits)
        if cand > 0 and abs(cand - rate) <= tol:
            return float(cand)
    return float(f"{rate:.6g}")


def _rate(files: list[_File], cols: _Columns, rate_hz: float | None) -> float:
    """The recording's rate: given, or the time columns' (they must agree)."""
    timed = [f for f in files if f.kind in ("seconds", "iso")]
    if not timed:
        if rate_hz is None:
            if cols.time is None:
                raise RecordingError(
                    f"{files[0].path}: no time column (none named {', '.join(TIME_NAMES)}): pass --rate-hz"
                    " with the sample rate, or name the time column with --time-column"
                )
            raise RecordingError(f"{files[0].path}: cannot tell the sample rate: pass --rate-hz")
        return rate_hz
    column = cols.header[cols.time or 0]
    per_file = [(f, *_file_period(f, column)) for f in timed]
    total = sum(s for _, s, _ in per_file)
    count = sum(c for _, _, c in per_file)
    if count == 0:
        if rate_hz is None:
            raise RecordingError(
                f"{timed[0].path}: one row is not enough to tell the sample rate: pass --rate-hz or more rows"
            )
        return rate_hz
    inferred = count / total
    ref, ref_s, ref_c = next(x for x in per_file if x[2])
    for f, s, c in per_file:
        if c and abs(c / s - ref_c / ref_s) > RATE_TOL * ref_c / ref_s:
            raise RecordingError(
                f"{f.path}: sampled at {c / s:.6g} Hz, {ref.path} at {ref_c / ref_s:.6g} Hz: every file must have"
                " the same rate (train on each rate separately)"
            )
    if rate_hz is not None:
        if abs(inferred - rate_hz) > RATE_TOL * rate_hz:
            raise RecordingError(
                f"{timed[0].path}: --rate-hz {rate_hz:g} but the time column {column!r} steps at {inferred:.6g} Hz:"
                " drop --rate-hz to use the file's rate, or fix it"
            )
        return rate_hz
    return _tidy_rate(inferred, max(_quantum(f.times) for f in timed if f.times is not None), total)


def _parts_of(
    f: _File,
    rate: float,
    cols: _Columns,
    *,
    labels: NDArray[np.int8] | None,
    split_gaps: bool,
    start_after: float | None,
) -> list[Part]:
    """The file's parts: one, or one per gap-free run with split_gaps."""
    n = f.values.shape[0]
    period = 1.0 / rate
    values = f.values.astype(np.float32)
    cuts: list[int] = []
    if f.kind in ("seconds", "iso"):
        assert f.times is not None and cols.time is not None
        column = cols.header[cols.time]
        steps = np.diff(f.times)
        irregular = np.flatnonzero(steps < IRREGULAR_PERIODS * period)
        if irregular.size:
            i = int(irregular[0]) + 1
            raise RecordingError(
                f"{_where(f, f.line(i), column)}: the time steps by {steps[i - 1]:.6g} s after line {f.line(i - 1)},"
                f" less than half the sample period ({period:.6g} s at {rate:g} Hz): the readers need one steady"
                " rate; resample the file to a fixed rate"
            )
        gaps = np.flatnonzero(steps > GAP_PERIODS * period)
        if gaps.size and not split_gaps:
            i = int(gaps[0]) + 1
            dt = float(steps[i - 1])
            more = f"; {gaps.size} gaps in this file" if gaps.size > 1 else ""
            raise RecordingError(
                f"{_where(f, f.line(i), column)}: gap in the data: the time jumps from {_fmt_time(f, i - 1)} to"
                f" {_fmt_time(f, i)} ({dt:.6g} s, about {round(dt * rate) - 1} missing samples at {rate:g} Hz){more}:"
                " pass --split-gaps to start a new part at each gap, or fill the gap"
            )
        cuts = [int(g) + 1 for g in gaps]
        t0s = f.times
    elif f.kind == "samples":
        assert f.times is not None and cols.time is not None
        steps = _check_increasing(f, cols.header[cols.time])
        gaps = np.flatnonzero(steps > 1)
        if gaps.size and not split_gaps:
            i = int(gaps[0]) + 1
            raise RecordingError(
                f"{_where(f, f.line(i), cols.header[cols.time])}: gap in the data: the sample number jumps from"
                f" {f.times[i - 1]:.0f} to {f.times[i]:.0f} ({int(steps[i - 1]) - 1} missing samples):"
                " pass --split-gaps to start a new part at each gap, or fill the gap"
            )
        cuts = [int(g) + 1 for g in gaps]
        t0s = f.times / rate
    else:
        t0s = np.arange(n, dtype=np.float64) / rate
    if f.kind in ("samples", "none") and start_after is not None and t0s[0] <= start_after:
        t0s = t0s - t0s[0] + start_after + period  # files without a clock: one after the other
    bounds = [0, *cuts, n]
    out = []
    for a, b in itertools.pairwise(bounds):
        out.append(
            Part(
                t0=float(t0s[a]),
                values=np.ascontiguousarray(values[a:b]),
                labels=None if labels is None else labels[a:b],
                origin=f"{f.path.name} lines {f.line(a)}-{f.line(b - 1)}",
            )
        )
    return out


def _label_values(raw: NDArray[np.str_], normal_label: str) -> NDArray[np.int8]:
    names, inverse = np.unique(raw, return_inverse=True)
    normal = np.asarray([_is_normal(str(s), normal_label) for s in names], dtype=bool)
    out: NDArray[np.int8] = np.where(normal[inverse], 0, 1).astype(np.int8)
    return out


def _is_normal(value: str, normal_label: str) -> bool:
    if value == normal_label:
        return True
    return normal_label == "0" and value.lower() in NORMAL_ZERO


def read_csv(
    paths: Sequence[Path],
    *,
    time_column: str | None = None,
    rate_hz: float | None = None,
    columns: Sequence[str] | None = None,
    label_column: str | None = None,
    normal_label: str = "0",
    units: Mapping[str, str] | None = None,
    split_gaps: bool = False,
    no_labels: bool = False,
) -> Recording:
    """Read one or more CSV files (same columns, in time order) into a Recording.

    Raises RecordingError naming the file, line, column and value of the first problem."""
    if not paths:
        raise RecordingError("no CSV file given")
    if rate_hz is not None and not (math.isfinite(rate_hz) and rate_hz > 0):
        raise RecordingError(f"--rate-hz must be a positive number of samples per second, got {rate_hz}")
    rate_hz = None if rate_hz is None else float(rate_hz)
    paths = [Path(p) for p in paths]
    blobs: list[bytes] = []
    files: list[_File] = []
    cols: _Columns | None = None
    first_raw: list[str] = []
    for path in paths:
        data, text = _read_text(path)
        blobs.append(data)
        split = _split_lines(path, text)
        header_line = split[0]
        raw = [c.strip() for c in next(csv.reader([header_line]))]
        if cols is None:
            cols = _columns(
                path, raw, time_column=time_column, columns=columns, label_column=label_column, no_labels=no_labels
            )
            first_raw = raw
            channels = _channels(cols, units)
        elif raw != first_raw:
            raise RecordingError(
                f"{_where(path, 1)}: columns {', '.join(raw)} differ from {paths[0]}'s ({', '.join(first_raw)}):"
                " every file must have the same columns in the same order"
            )
        files.append(_parse_file(path, cols, text, split, rate_hz))
    assert cols is not None
    rate = _rate(files, cols, rate_hz)
    label_names: tuple[str, ...] = ()
    if cols.label is not None:
        label_names = tuple(
            sorted({str(s) for f in files if f.labels_raw is not None for s in np.unique(f.labels_raw)})
        )
    parts: list[Part] = []
    for k, f in enumerate(files):
        labels = None if f.labels_raw is None else _label_values(f.labels_raw, normal_label)
        prev_end = parts[-1].t0 + (parts[-1].n - 1) / rate if parts else None
        if prev_end is not None and f.kind in ("seconds", "iso") and f.times is not None and f.times[0] <= prev_end:
            raise RecordingError(
                f"{_where(f, f.line(0))}: starts at {_fmt_time(f, 0)}, before {paths[k - 1]} ends: give the files in"
                " time order (and without overlap)"
            )
        parts.extend(_parts_of(f, rate, cols, labels=labels, split_gaps=split_gaps, start_after=prev_end))
    return Recording(
        channels=channels,
        rate_hz=rate,
        parts=tuple(parts),
        source="csv: " + ", ".join(p.name for p in paths),
        fingerprint=fingerprint_bytes(blobs),
        label_names=label_names,
    )


def _channels(cols: _Columns, units: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    names = [cols.header[i] for i in cols.values]
    given = dict(units or {})
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise RecordingError(
            f"--units names {', '.join(unknown)}, not a value column; the value columns are: {', '.join(names)}"
        )
    return tuple((cols.header[i], given.get(cols.header[i], cols.header_units[i])) for i in cols.values)


# --------------------------------------------------------------------------- command line


def _name_list(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"{text!r}: give column names separated by commas, like ax,ay,az")
    return names


def _unit_pairs(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in text.split(","):
        name, eq, unit = item.partition("=")
        if not eq or not name.strip():
            raise argparse.ArgumentTypeError(f"{item!r} is not name=unit (like ax=g,temp=C)")
        out[name.strip()] = unit.strip()
    return out


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r}: the rate must be > 0 samples per second")
    return value


def add_csv_arguments(p: argparse.ArgumentParser) -> None:
    """The CSV reading options, shared by edgeline-train and edgeline-gateway replay."""
    g = p.add_argument_group("CSV input")
    g.add_argument(
        "--time-column", metavar="NAME", help=f"the time column (default: the first of {', '.join(TIME_NAMES)})"
    )
    g.add_argument(
        "--rate-hz",
        type=_positive,
        metavar="HZ",
        help="sample rate; required without a time column, and to read integer time values as sample numbers",
    )
    g.add_argument(
        "--columns", type=_name_list, metavar="A,B,C", help="value columns (default: all but time and label)"
    )
    g.add_argument(
        "--label-column", metavar="NAME", help=f"the label column (default: the first of {', '.join(LABEL_NAMES)})"
    )
    g.add_argument(
        "--normal-label",
        default="0",
        metavar="VALUE",
        help="the label value of normal rows; any other is anomalous (default 0; also 0.0, false, normal)",
    )
    g.add_argument(
        "--units",
        type=_unit_pairs,
        action="append",
        metavar="A=UNIT,...",
        help="units of value columns, like ax=g,temp=C (default: from a header 'ax [g]', else none)",
    )
    g.add_argument("--split-gaps", action="store_true", help="start a new part at each gap instead of stopping")
    g.add_argument("--no-labels", action="store_true", help="ignore the label column")


def csv_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of read_csv from options added by add_csv_arguments."""
    units: dict[str, str] = {}
    for d in args.units or []:
        units.update(d)
    return {
        "time_column": args.time_column,
        "rate_hz": args.rate_hz,
        "columns": args.columns,
        "label_column": args.label_column,
        "normal_label": args.normal_label,
        "units": units or None,
        "split_gaps": args.split_gaps,
        "no_labels": args.no_labels,
    }
