"""Order: per device and boot, drop duplicate frames and count gaps.

Each device numbers its frames per boot (u16 boot counter, u32 sequence). The
tracker keeps, per (device, boot), the highest sequence seen and the set of
missing sequence ranges below it. A frame is:

  "new"   seq > highest (a jump opens a gap of the skipped numbers),
  "fill"  seq inside a known gap, or below the first one seen (a replayed
          frame arriving late: stored, never mistaken for a duplicate),
  "dup"   seq already seen -> dropped (still ACKed: it is persisted).

Missing ranges are bounded (oldest forgotten first, counted) so a device that
skips wildly cannot grow memory. State can be exported and restored so a
restarted gateway still recognises frames it stored before the restart.
"""

from __future__ import annotations

from dataclasses import dataclass, field

NEW = "new"
FILL = "fill"
DUP = "dup"


@dataclass
class StreamState:
    boot: int
    highest: int
    lowest: int
    missing: list[tuple[int, int]] = field(default_factory=list)  # sorted inclusive ranges


@dataclass
class SequenceCounters:
    frames: int = 0
    duplicates: int = 0
    gaps: int = 0  # gap events (a jump in sequence)
    missing_frames: int = 0  # frames skipped over by gaps (total)
    recovered: int = 0  # late frames that filled a gap
    forgotten: int = 0  # missing frames given up on (range table full)
    boots: int = 0  # boot changes seen
    stale_boot: int = 0  # frames of an older boot after a newer one was seen


class SequenceTracker:
    """Classifies (device, boot, seq) as new / fill / dup and counts gaps."""

    def __init__(self, *, max_missing_ranges: int = 64, max_old_boots: int = 4) -> None:
        self.max_missing_ranges = max_missing_ranges
        self.max_old_boots = max_old_boots
        self._streams: dict[str, dict[int, StreamState]] = {}
        self._current_boot: dict[str, int] = {}
        self.counters: dict[str, SequenceCounters] = {}

    def counters_for(self, device: str) -> SequenceCounters:
        c = self.counters.get(device)
        if c is None:
            c = self.counters[device] = SequenceCounters()
        return c

    def current_boot(self, device: str) -> int | None:
        return self._current_boot.get(device)

    def observe(self, device: str, boot: int, seq: int) -> tuple[str, int]:
        """Classify one frame; returns (verdict, frames skipped before it if a gap opened)."""
        c = self.counters_for(device)
        c.frames += 1
        boots = self._streams.get(device)
        if boots is None:
            boots = self._streams[device] = {}
        st = boots.get(boot)
        if st is None:
            cur = self._current_boot.get(device)
            if cur is None or _boot_newer(boot, cur):
                if cur is not None:
                    c.boots += 1
                self._current_boot[device] = boot
            else:
                c.stale_boot += 1
            boots[boot] = StreamState(boot=boot, highest=seq, lowest=seq)
            self._trim_boots(device, boots)
            return NEW, 0
        if seq > st.highest:
            skipped = seq - st.highest - 1
            if skipped:
                c.gaps += 1
                c.missing_frames += skipped
                st.missing.append((st.highest + 1, seq - 1))
                if len(st.missing) > self.max_missing_ranges:
                    lo, hi = st.missing.pop(0)
                    c.forgotten += hi - lo + 1
            st.highest = seq
            return NEW, skipped
        if seq < st.lowest:
            # Older than anything seen of this boot (e.g. the queue replayed after
            # the gateway first heard the device): new to us.
            if seq + 1 < st.lowest:
                st.missing.insert(0, (seq + 1, st.lowest - 1))
                if len(st.missing) > self.max_missing_ranges:
                    lo, hi = st.missing.pop(0)
                    c.forgotten += hi - lo + 1
            st.lowest = seq
            c.recovered += 1
            return FILL, 0
        # lowest <= seq <= highest: either fills a gap or is a duplicate.
        for i, (lo, hi) in enumerate(st.missing):
            if lo <= seq <= hi:
                parts = []
                if lo < seq:
                    parts.append((lo, seq - 1))
                if seq < hi:
                    parts.append((seq + 1, hi))
                st.missing[i : i + 1] = parts
                c.recovered += 1
                return FILL, 0
            if lo > seq:
                break
        c.duplicates += 1
        return DUP, 0

    def observe_run(self, device: str, boot: int, first: int, last: int) -> int | None:
        """Frames first..last (consecutive) all after everything seen of this boot: record them
        as new and return the frames skipped before first (a gap). None when the run overlaps
        what was seen (then observe() them one by one)."""
        boots = self._streams.get(device)
        st = boots.get(boot) if boots is not None else None
        if st is None:
            verdict, skipped = self.observe(device, boot, first)
            if verdict != NEW:
                return None  # pragma: no cover - a new stream always starts new
        elif first > st.highest:
            verdict, skipped = self.observe(device, boot, first)
        else:
            return None
        st = self._streams[device][boot]
        st.highest = last
        self.counters_for(device).frames += last - first
        return skipped

    def _trim_boots(self, device: str, boots: dict[int, StreamState]) -> None:
        while len(boots) > self.max_old_boots + 1:
            cur = self._current_boot[device]
            oldest = min((b for b in boots if b != cur), key=lambda b: (b - cur) & 0xFFFF)
            del boots[oldest]

    def missing(self, device: str, boot: int) -> list[tuple[int, int]]:
        st = self._streams.get(device, {}).get(boot)
        return list(st.missing) if st else []

    # --- persistence: plain data so the raw log can store it with each commit.
    def export(self, device: str) -> list[tuple[int, int, int, list[tuple[int, int]]]]:
        """[(boot, lowest, highest, missing ranges)] of a device."""
        return [(s.boot, s.lowest, s.highest, list(s.missing)) for s in self._streams.get(device, {}).values()]

    def restore(
        self,
        device: str,
        streams: list[tuple[int, int, int, list[tuple[int, int]]]],
        current_boot: int | None,
    ) -> None:
        self._streams[device] = {
            b: StreamState(boot=b, lowest=lo, highest=h, missing=[(a, z) for a, z in m]) for b, lo, h, m in streams
        }
        if current_boot is not None:
            self._current_boot[device] = current_boot


def _boot_newer(a: int, b: int) -> bool:
    """Serial-number comparison on the u16 boot counter (a reboot wraps at 65536)."""
    return a != b and ((a - b) & 0xFFFF) < 0x8000
