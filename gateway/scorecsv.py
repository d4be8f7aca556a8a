"""Per-window scores as CSV: what ``edgeline-gateway replay`` and ``edgeline-train evaluate``
write, one row per window, so the two can be compared line by line.

Columns: ``part`` (the recording part), ``start`` (the window's first sample within the part),
``t_end`` (time of its last sample, s), ``score``, ``threshold`` (the one that applied to this
window: the device's own when it has one), ``over`` (1 when score > threshold), ``alert`` (1 while
the gateway's alert for the device is raised after this window, empty offline) and ``label``
(1 anomalous, 0 normal, empty when the recording has no labels).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from gateway.recording import RecordingError

COLUMNS = ("part", "start", "t_end", "score", "threshold", "over", "alert", "label")


@dataclass(frozen=True)
class ScoreRow:
    part: int
    start: int
    t_end: float
    score: float
    threshold: float
    alert: bool | None = None  # None: not known (offline scoring)
    label: int | None = None

    @property
    def over(self) -> bool:
        return self.score > self.threshold


def write(rows: Iterable[ScoreRow], out: TextIO) -> int:
    """Write the header and the rows; scores with 9 significant digits (float32 round-trips)."""
    w = csv.writer(out, lineterminator="\n")
    w.writerow(COLUMNS)
    n = 0
    for r in rows:
        w.writerow(
            (
                r.part,
                r.start,
                f"{r.t_end:.6f}",
                f"{r.score:.9g}",
                f"{r.threshold:.9g}",
                int(r.over),
                "" if r.alert is None else int(r.alert),
                "" if r.label is None else r.label,
            )
        )
        n += 1
    return n


def read(path: Path) -> Iterator[ScoreRow]:
    """Rows of a file written by :func:`write`; a malformed file raises RecordingError."""
    with path.open(newline="", encoding="utf-8") as f:
        rd = csv.reader(f)
        header = next(rd, None)
        if header is None or tuple(header) != COLUMNS:
            raise RecordingError(f"{path}: not a scores file: the header must be {','.join(COLUMNS)}, found {header}")
        for lineno, row in enumerate(rd, start=2):
            try:
                yield ScoreRow(
                    part=int(row[0]),
                    start=int(row[1]),
                    t_end=float(row[2]),
                    score=float(row[3]) if row[3] != "nan" else math.nan,
                    threshold=float(row[4]),
                    alert=None if row[6] == "" else row[6] == "1",
                    label=None if row[7] == "" else int(row[7]),
                )
            except (IndexError, ValueError) as exc:
                raise RecordingError(f"{path} line {lineno}: bad scores row {row}: {exc}") from exc
