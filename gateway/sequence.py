"""Order: per device and boot, drop duplicate frames, count gaps, know what is lost.

Each device numbers its frames per boot (u16 boot counter, u32 sequence). The
tracker keeps, per (device, boot), the highest sequence seen, the missing ranges
below it, the ranges the device reported lost, and, once the device has moved
on to a newer boot, where the old boot ended. A frame is:

  "new"      seq > highest (a jump opens a gap of the skipped numbers),
  "fill"     seq inside a known gap, below the first one seen, or inside a range
             reported lost (a replayed frame arriving late: stored, never mistaken
             for a duplicate),
  "dup"      seq already seen -> dropped (still ACKed: it is persisted),
  "suspect"  seq further above the highest than ``max_jump``: not the new truth
             (one corrupt or forged frame must not stop a device's scoring). It is
             neither stored nor ACKed. When ``jump_confirm`` frames in a row continue
             the jump, the jump is accepted and the numbers skipped become a gap.

What the gateway still wants from a device (``wanted``): its missing ranges, and
the tail of every older boot whose end it does not know yet. The gap-repair stage
(gateway/repair.py) asks for them with CMD_RESEND; the device answers with the
frames or a LOSS frame, which ``mark_lost`` records: lost ranges stay in the
state (bounded, merged), so "stored or counted lost" can be checked per number.

Missing and lost ranges are bounded (oldest forgotten first, counted) so a device
that skips wildly cannot grow memory. State can be exported and restored so a
restarted gateway still recognises frames it stored before the restart.

Over 400 lines on purpose: one state machine per (device, boot) (highest, missing, lost,
end, jumps) whose transitions share that state; splitting it would spread one rule over
several modules.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shared_protocol import LOSS_GONE, LOSS_UNSAVED, LOSS_UNUSED

NEW = "new"
FILL = "fill"
DUP = "dup"
SUSPECT = "suspect"

LOST_UNANSWERED = 0
"""Reason of a lost range the gateway gave up asking for (the device never answered)."""
LOST_REASONS = {LOSS_GONE: "gone", LOSS_UNSAVED: "unsaved", LOST_UNANSWERED: "unanswered"}

U32_MAX = 0xFFFFFFFF

Range = tuple[int, int]
LostRange = tuple[int, int, int]  # first, last, reason
Exported = tuple[int, int, int, list[Range], list[LostRange], int | None]


@dataclass(slots=True)
class StreamState:
    boot: int
    highest: int
    lowest: int
    missing: list[Range] = field(default_factory=list)  # sorted inclusive ranges
    lost: list[LostRange] = field(default_factory=list)  # sorted (first, last, reason)
    end: int | None = None  # an older boot's end (no seq >= end was used), once known
    suspect: tuple[int, int] | None = None  # (last suspect seq, how many in a row)


@dataclass(slots=True)
class SequenceCounters:
    frames: int = 0
    duplicates: int = 0
    gaps: int = 0  # gap events (a jump in sequence)
    missing_frames: int = 0  # frames skipped over by gaps (total)
    recovered: int = 0  # late frames that filled a gap
    forgotten: int = 0  # missing frames given up on (range table full)
    boots: int = 0  # boot changes seen
    stale_boot: int = 0  # frames of an older boot after a newer one was seen
    lost_gone: int = 0  # frames the device reported gone (exact)
    lost_unsaved: int = 0  # frames reported unsaved after a power cut (an upper bound)
    lost_unanswered: int = 0  # frames given up on: the device never answered
    tails_unanswered: int = 0  # older boots whose end the device never told
    suspect: int = 0  # frames with an absurd sequence jump, held back
    jumps_accepted: int = 0  # jumps confirmed by the frames that followed


class SequenceTracker:
    """Classifies (device, boot, seq) as new / fill / dup / suspect and counts gaps and losses."""

    def __init__(
        self,
        *,
        max_missing_ranges: int = 64,
        max_old_boots: int = 8,
        max_jump: int = 1_000_000,
        jump_confirm: int = 3,
    ) -> None:
        self.max_missing_ranges = max_missing_ranges
        self.max_old_boots = max_old_boots
        self.max_jump = max_jump
        self.jump_confirm = jump_confirm
        self._streams: dict[str, dict[int, StreamState]] = {}
        self._current_boot: dict[str, int] = {}
        self.counters: dict[str, SequenceCounters] = {}
        self.changed: set[str] = set()
        """Devices whose missing ranges, tails or losses changed (read and cleared by gap repair)."""

    def counters_for(self, device: str) -> SequenceCounters:
        c = self.counters.get(device)
        if c is None:
            c = self.counters[device] = SequenceCounters()
        return c

    def current_boot(self, device: str) -> int | None:
        return self._current_boot.get(device)

    def devices(self) -> list[str]:
        return list(self._streams)

    def forget(self, device: str) -> None:
        self._streams.pop(device, None)
        self._current_boot.pop(device, None)
        self.counters.pop(device, None)
        self.changed.discard(device)

    # ------------------------------------------------------------------ classification
    def _stream(self, device: str, boot: int, seq: int) -> StreamState | None:
        """The stream of (device, boot); None after creating it for its first frame `seq`."""
        boots = self._streams.get(device)
        if boots is None:
            boots = self._streams[device] = {}
        st = boots.get(boot)
        if st is not None:
            return st
        c = self.counters_for(device)
        cur = self._current_boot.get(device)
        self.changed.add(device)
        if cur is not None and _boot_newer(boot, cur):
            c.boots += 1
            # Boots in between that the gateway never heard of: their frames may still
            # come (replayed), or be reported lost; the whole boot is wanted.
            step = (boot - cur) & 0xFFFF
            if 1 < step <= self.max_old_boots:
                for k in range(1, step):
                    b = (cur + k) & 0xFFFF
                    boots.setdefault(b, StreamState(boot=b, highest=-1, lowest=0))
            self._current_boot[device] = boot
            # A reboot of a device the gateway knows: its numbering starts at 0 (the BIRTH),
            # so whatever comes first, the numbers before it are wanted.
            st = boots[boot] = StreamState(boot=boot, highest=-1, lowest=0)
            self._trim_boots(device, boots)
            return st
        if cur is None:
            self._current_boot[device] = boot
        else:
            c.stale_boot += 1
        # The first boot the gateway sees of a device (or an older one): what came before
        # the first frame is history from before it listened, not a gap.
        boots[boot] = StreamState(boot=boot, highest=seq, lowest=seq)
        self._trim_boots(device, boots)
        return None

    def observe(self, device: str, boot: int, seq: int) -> tuple[str, int]:
        """Classify one frame; returns (verdict, frames skipped before it if a gap opened)."""
        c = self.counters_for(device)
        st = self._stream(device, boot, seq)
        if st is None:
            c.frames += 1
            return NEW, 0
        if seq > st.highest:
            skipped = seq - st.highest - 1
            if skipped > self.max_jump and not self._confirm_jump(st, seq, c):
                c.suspect += 1
                return SUSPECT, 0
            c.frames += 1
            self._advance(device, st, seq, c)
            return NEW, skipped
        c.frames += 1
        if seq < st.lowest:
            # Older than anything seen of this boot (e.g. the queue replayed after
            # the gateway first heard the device): new to us.
            if st.lowest - seq - 1 > self.max_jump:
                c.frames -= 1
                c.suspect += 1
                return SUSPECT, 0
            if seq + 1 < st.lowest:
                self._add_missing(st, (seq + 1, st.lowest - 1), c, front=True)
                self.changed.add(device)
            st.lowest = seq
            c.recovered += 1
            return FILL, 0
        # lowest <= seq <= highest: fills a gap, arrives after being reported lost, or is a duplicate.
        if _cut(st.missing, seq):
            c.recovered += 1
            self.changed.add(device)
            return FILL, 0
        for lo, hi, reason in st.lost:
            if lo <= seq <= hi:
                self._unlose(st, seq, reason, c)
                c.recovered += 1
                self.changed.add(device)
                return FILL, 0
            if lo > seq:
                break
        c.duplicates += 1
        return DUP, 0

    def observe_run(self, device: str, boot: int, first: int, last: int) -> int | None:
        """Frames first..last (consecutive) all after everything seen of this boot: record them
        as new and return the frames skipped before first (a gap). None when the run overlaps
        what was seen, or starts with a suspect jump (then observe() them one by one)."""
        boots = self._streams.get(device)
        st = boots.get(boot) if boots is not None else None
        if st is not None and (first <= st.highest or first - st.highest - 1 > self.max_jump):
            return None
        verdict, skipped = self.observe(device, boot, first)
        if verdict != NEW:
            return None  # pragma: no cover - checked above
        st = self._streams[device][boot]
        st.highest = last
        self.counters_for(device).frames += last - first
        return skipped

    def _advance(self, device: str, st: StreamState, seq: int, c: SequenceCounters) -> None:
        if seq > st.highest + 1:
            c.gaps += 1
            c.missing_frames += seq - st.highest - 1
            self._add_missing(st, (st.highest + 1, seq - 1), c)
            self.changed.add(device)
        st.highest = seq
        st.suspect = None
        if st.end is not None and seq >= st.end:
            st.end = None  # the device used a number it said it never would: ask again

    def _confirm_jump(self, st: StreamState, seq: int, c: SequenceCounters) -> bool:
        """True when this frame is the jump_confirm-th in a row continuing a suspect jump."""
        prev = st.suspect
        if prev is not None and prev[0] < seq <= prev[0] + self.jump_confirm:
            n = prev[1] + 1
            if n >= self.jump_confirm:
                st.suspect = None
                c.jumps_accepted += 1
                return True
            st.suspect = (seq, n)
            return False
        st.suspect = (seq, 1)
        return False

    def _add_missing(self, st: StreamState, rng: Range, c: SequenceCounters, *, front: bool = False) -> None:
        if front:
            st.missing.insert(0, rng)
        else:
            st.missing.append(rng)
        if len(st.missing) > self.max_missing_ranges:
            lo, hi = st.missing.pop(0)
            c.forgotten += hi - lo + 1

    def _unlose(self, st: StreamState, seq: int, reason: int, c: SequenceCounters) -> None:
        """A frame reported lost arrived after all (e.g. it was in flight): not lost."""
        out: list[LostRange] = []
        for lo, hi, r in st.lost:
            if lo <= seq <= hi:
                if lo < seq:
                    out.append((lo, seq - 1, r))
                if seq < hi:
                    out.append((seq + 1, hi, r))
            else:
                out.append((lo, hi, r))
        st.lost = out
        _count_lost(c, reason, -1)

    def _trim_boots(self, device: str, boots: dict[int, StreamState]) -> None:
        while len(boots) > self.max_old_boots + 1:
            cur = self._current_boot[device]
            oldest = min((b for b in boots if b != cur), key=lambda b: (b - cur) & 0xFFFF)
            del boots[oldest]

    # ------------------------------------------------------------------ gap repair
    def missing(self, device: str, boot: int) -> list[Range]:
        st = self._streams.get(device, {}).get(boot)
        return list(st.missing) if st else []

    def lost(self, device: str, boot: int) -> list[LostRange]:
        st = self._streams.get(device, {}).get(boot)
        return list(st.lost) if st else []

    def end(self, device: str, boot: int) -> int | None:
        st = self._streams.get(device, {}).get(boot)
        return st.end if st else None

    def wanted(self, device: str) -> list[tuple[int, int, int]]:
        """(boot, first, last) ranges the gateway still wants: gaps, then older boots' tails."""
        boots = self._streams.get(device)
        if not boots:
            return []
        cur = self._current_boot.get(device)
        out = [(b, lo, hi) for b, st in boots.items() for lo, hi in st.missing]
        for b, st in boots.items():
            if b != cur and st.end is None:
                out.append((b, st.highest + 1, U32_MAX))
        return out

    def missing_total(self, device: str) -> int:
        """Frames in missing ranges plus open tails (for progress: it shrinks as repair works)."""
        return sum(hi - lo + 1 for _b, lo, hi in self.wanted(device))

    def mark_lost(self, device: str, boot: int, first: int, last: int, reason: int) -> int:
        """The device cannot send (boot, first..last): record it. Returns the frames newly
        counted lost (those the gateway neither has nor had counted). LOSS_UNUSED closes an
        older boot's tail at `first` instead (numbers never used are not lost)."""
        boots = self._streams.get(device)
        if boots is None:
            boots = self._streams[device] = {}
        st = boots.get(boot)
        if st is None:
            if reason == LOSS_UNUSED:
                return 0
            st = boots[boot] = StreamState(boot=boot, highest=-1, lowest=0)
            self._trim_boots(device, boots)
            if boot not in boots:
                return 0
        c = self.counters_for(device)
        self.changed.add(device)
        if first > st.highest + 1:
            # The numbers between the highest seen and this range: the device holds them (it
            # does not report them), so they are on their way again: wanted until they arrive.
            self._add_missing(st, (st.highest + 1, first - 1), c)
            st.highest = first - 1
        if reason == LOSS_UNUSED:
            if boot != self._current_boot.get(device):
                st.end = first
            return 0
        # The numbers to count: inside the missing ranges, or above the highest seen.
        gone: list[Range] = []
        keep: list[Range] = []
        for lo, hi in st.missing:
            a, z = max(lo, first), min(hi, last)
            if a > z:
                keep.append((lo, hi))
                continue
            gone.append((a, z))
            if lo < a:
                keep.append((lo, a - 1))
            if z < hi:
                keep.append((z + 1, hi))
        st.missing = keep
        if last > st.highest:
            gone.append((max(first, st.highest + 1), last))
            st.highest = last
        if not gone:
            return 0
        n = sum(z - a + 1 for a, z in gone)
        st.lost = _merge_lost(st.lost + [(a, z, reason) for a, z in gone])
        while len(st.lost) > self.max_missing_ranges:
            st.lost.pop(0)  # the counters keep the total; the ranges are for checks
        _count_lost(c, reason, n)
        return n

    def give_up(self, device: str) -> tuple[int, int]:
        """Stop asking: every missing range is counted lost (unanswered), every open tail is
        closed where it stands. Returns (frames counted lost, tails closed)."""
        boots = self._streams.get(device, {})
        cur = self._current_boot.get(device)
        frames = tails = 0
        for b, st in boots.items():
            for lo, hi in list(st.missing):
                frames += self.mark_lost(device, b, lo, hi, LOST_UNANSWERED)
            if b != cur and st.end is None:
                st.end = st.highest + 1
                tails += 1
        self.counters_for(device).tails_unanswered += tails
        return frames, tails

    # --- persistence: plain data so the raw log can store it with each commit.
    def export(self, device: str) -> list[Exported]:
        """[(boot, lowest, highest, missing, lost, end)] of a device."""
        return [
            (s.boot, s.lowest, s.highest, list(s.missing), list(s.lost), s.end)
            for s in self._streams.get(device, {}).values()
        ]

    def restore(self, device: str, streams: list[Exported], current_boot: int | None) -> None:
        self._streams[device] = {
            b: StreamState(
                boot=b,
                lowest=lo,
                highest=h,
                missing=[(x, y) for x, y in m],
                lost=[(x, y, r) for x, y, r in lost],
                end=end,
            )
            for b, lo, h, m, lost, end in streams
        }
        c = self.counters_for(device)
        for s in self._streams[device].values():
            for lo, hi, r in s.lost:
                _count_lost(c, r, hi - lo + 1)
        if current_boot is not None:
            self._current_boot[device] = current_boot
        if any(self.wanted(device)):
            self.changed.add(device)


def _cut(ranges: list[Range], seq: int) -> bool:
    """Remove seq from sorted inclusive ranges; True if it was inside one."""
    for i, (lo, hi) in enumerate(ranges):
        if lo <= seq <= hi:
            parts = []
            if lo < seq:
                parts.append((lo, seq - 1))
            if seq < hi:
                parts.append((seq + 1, hi))
            ranges[i : i + 1] = parts
            return True
        if lo > seq:
            return False
    return False


def _merge_lost(ranges: list[LostRange]) -> list[LostRange]:
    out: list[LostRange] = []
    for lo, hi, r in sorted(ranges):
        if out and out[-1][2] == r and out[-1][1] + 1 >= lo:
            out[-1] = (out[-1][0], max(out[-1][1], hi), r)
        else:
            out.append((lo, hi, r))
    return out


def _count_lost(c: SequenceCounters, reason: int, n: int) -> None:
    if reason == LOSS_GONE:
        c.lost_gone += n
    elif reason == LOSS_UNSAVED:
        c.lost_unsaved += n
    else:
        c.lost_unanswered += n


def _boot_newer(a: int, b: int) -> bool:
    """Serial-number comparison on the u16 boot counter (a reboot wraps at 65536)."""
    return a != b and ((a - b) & 0xFFFF) < 0x8000
