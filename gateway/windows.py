"""Windows: sliding windows (length, hop) over one device's channel group.

Blocks of samples (n_samples, n_channels) are appended in sequence order.
Whenever enough samples have arrived, every complete window is cut at once
(a strided view, copied into one (n_windows, length, n_channels) array).

A gap (frames missing, a time jump, a reboot or a sample-rate change) is not
papered over: the stream restarts after it, and every window that would have
spanned it is counted as skipped and the gap is recorded; such windows are
never inferred.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
from numpy.lib.stride_tricks import as_strided
from numpy.typing import NDArray

# The firmware stamps every row of a DATA frame within one sample period of when it was
# taken (docs/firmware.md, "Interrupt rules") on a millisecond clock, and cuts the frame
# at any hole it sees. So consecutive frames of one boot agree to within a period plus a
# millisecond; a larger jump in the device clock is a hole of missing samples.
TIME_GAP_PERIODS = 1.5
TIME_GAP_SLACK_S = 0.002


@dataclass(frozen=True)
class WindowSpec:
    length: int
    hop: int

    def __post_init__(self) -> None:
        if self.length < 1 or self.hop < 1:
            raise ValueError(f"window length and hop must be >= 1, got {self.length}, {self.hop}")


@dataclass(frozen=True)
class Gap:
    start_time: float  # wall-clock time of the first missing sample
    end_time: float  # wall-clock time of the first sample after the gap
    samples: int  # missing samples (0 when unknown, e.g. reboot)
    reason: str  # "seq", "time", "boot", "rate"
    skipped_windows: int


@dataclass(slots=True)
class WindowStats:
    samples: int = 0
    windows: int = 0
    skipped_windows: int = 0
    gaps: int = 0
    late_frames: int = 0  # out-of-order frames (gap fills) not windowed


@dataclass(frozen=True)
class Windows:
    """Complete windows cut from one push: plain arrays, one row per window."""

    values: NDArray[np.float32]  # (n, length, n_channels)
    end_time: NDArray[np.float64]  # wall-clock time of each window's last sample
    end_index: NDArray[np.int64]  # stream index one past each window's last sample
    end_in_block: NDArray[np.int64]  # the same, counted from the start of the pushed block

    def __len__(self) -> int:
        return int(self.values.shape[0])


@dataclass
class StreamWindower:
    """Sliding windows over one stream (a device's channel group)."""

    spec: WindowSpec
    n_channels: int
    max_gaps: int = 100
    stats: WindowStats = field(default_factory=WindowStats)
    gaps: deque[Gap] = field(default_factory=deque)

    def __post_init__(self) -> None:
        cap = self.spec.length + 32  # a window and a frame; grows if a push needs more
        self._buf = np.empty((cap, self.n_channels), dtype=np.float32)
        self._count = 0  # samples in _buf
        self._base = 0  # stream index of _buf[0]
        self._next_start = 0  # stream index where the next window starts
        self._period = 0.0  # s per sample
        self._dev_next: float | None = None  # expected device time of the next sample
        self._wall_base = 0.0  # wall time of _buf[0]
        self._boot: int | None = None

    def push(
        self,
        values: NDArray[np.float32],
        *,
        boot: int,
        period_s: float,
        dev_time: float,
        wall_time: float,
        missing_samples: int = 0,
    ) -> Windows | None:
        """Append a block; returns the windows it completed (or None).

        dev_time / wall_time: device-clock and rebuilt wall-clock time of the
        block's first sample. missing_samples: samples known to be missing just
        before this block (from a sequence gap).
        """
        n = int(values.shape[0])
        if self._boot is None:
            self._restart(boot, period_s, wall_time)
        elif boot != self._boot:
            self._gap(wall_time, 0, "boot", boot, period_s)
        elif abs(period_s - self._period) > 1e-9 * max(1.0, self._period):
            self._gap(wall_time, 0, "rate", boot, period_s)
        elif missing_samples > 0:
            self._gap(wall_time, missing_samples, "seq", boot, period_s)
        elif self._dev_next is not None:
            drift = dev_time - self._dev_next
            # beyond the firmware's stamping bound (above): samples are missing there
            if abs(drift) > max(TIME_GAP_PERIODS * self._period, self._period + TIME_GAP_SLACK_S):
                missing = max(0, round(drift / self._period)) if self._period > 0 else 0
                self._gap(wall_time, missing, "time", boot, period_s)
        self._dev_next = dev_time + n * period_s
        if self._count == 0:
            self._wall_base = wall_time
        block_start = self._base + self._count
        self._append(values)
        self.stats.samples += n
        return self._cut(block_start)

    def late_frame(self) -> None:
        self.stats.late_frames += 1

    # ---------------------------------------------------------------- internals
    def _restart(self, boot: int, period_s: float, wall_time: float) -> None:
        self._boot = boot
        self._period = period_s
        self._count = 0
        self._wall_base = wall_time
        self._dev_next = None

    def _gap(self, wall_time: float, missing: int, reason: str, boot: int, period_s: float) -> None:
        end = self._base + self._count  # stream index of the first missing sample
        gap_end = end + missing
        # Every pending window start before the gap's end would span the gap.
        skipped = -(-(gap_end - self._next_start) // self.spec.hop) if self._next_start < gap_end else 0
        start_time = self._wall_base + self._count * self._period
        self.stats.gaps += 1
        self.stats.skipped_windows += skipped
        self.gaps.append(Gap(start_time, wall_time, missing, reason, skipped))
        while len(self.gaps) > self.max_gaps:
            self.gaps.popleft()
        self._base = gap_end
        self._next_start = gap_end
        self._restart(boot, period_s, wall_time)

    def _append(self, values: NDArray[np.float32]) -> None:
        n = values.shape[0]
        need = self._count + n
        if need > self._buf.shape[0]:
            new = np.empty((max(need, 2 * self._buf.shape[0]), self.n_channels), dtype=np.float32)
            new[: self._count] = self._buf[: self._count]
            self._buf = new
        self._buf[self._count : need] = values
        self._count = need

    def _cut(self, block_start: int) -> Windows | None:
        length, hop = self.spec.length, self.spec.hop
        end = self._base + self._count
        first = self._next_start - self._base
        if self._next_start + length > end:
            self._compact()
            return None
        k = (end - length - self._next_start) // hop + 1
        buf = self._buf
        if k <= 8:
            # The usual case (a few windows per push): slice copies beat building a strided view.
            out = np.empty((k, length, self.n_channels), dtype=np.float32)
            for i in range(k):
                s0 = first + i * hop
                out[i] = buf[s0 : s0 + length]
        else:
            c = self.n_channels
            isz = buf.itemsize
            view = as_strided(buf[first:], shape=(k, length, c), strides=(hop * c * isz, c * isz, isz), writeable=False)
            out = view.copy()  # always a copy: the buffer is reused
        ends = [self._next_start + i * hop + length for i in range(k)]
        end_index = np.asarray(ends, dtype=np.int64)
        base, wall, period = self._base, self._wall_base, self._period
        end_time = np.asarray([wall + (e - 1 - base) * period for e in ends], dtype=np.float64)
        self._next_start += k * hop
        self.stats.windows += k
        self._compact()
        return Windows(out, end_time, end_index, np.asarray([e - block_start for e in ends], dtype=np.int64))

    def _compact(self) -> None:
        """Drop samples no future window needs."""
        drop = min(self._next_start - self._base, self._count)
        if drop <= 0:
            return
        keep = self._count - drop
        if keep:
            self._buf[:keep] = self._buf[drop : self._count]
        self._count = keep
        self._base += drop
        self._wall_base += drop * self._period
