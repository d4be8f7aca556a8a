# CMD_RESEND: the gateway names sequence ranges it is missing; send again what the
# offline queue still holds and report the rest in LOSS frames (docs/protocol.md,
# "Gap repair"). Loaded only when such a command arrives.
#
# What a number not held means, per boot:
# - this boot: numbers below the next seq were all used, so one not held is gone
#   (dropped when the queue was full) unless the gateway already has it (it would
#   not ask then): LOSS_GONE. Numbers not used yet are not answered.
# - an earlier boot the device remembers (boot.dat): its end is exact after a clean
#   stop, else the lease bound of seq.dat. Not held and below the end: LOSS_GONE up
#   to the highest seq of that boot that was on flash at boot, LOSS_UNSAVED above it
#   when the end is only a bound (a power cut took what was in RAM). From the end
#   on: LOSS_UNUSED, which tells the gateway the boot is over.
# - an older boot: not answered (the gateway gives up after a few requests).

from shared_protocol import LOSS_GONE, LOSS_UNSAVED, LOSS_UNUSED
from shared_protocol.repair import LOSS_MAX_RANGES, encode_loss, loss_size, resend_ranges


def requeue(q, boot, first, last):
    """Every held frame of `boot` with first <= seq <= last that was sent and not ACKed goes
    out again (historical). Returns the held seqs of the range, ascending (frames of one
    boot are queued in sequence order). Kept here, not in the queue module: its code is
    loaded only when a CMD_RESEND arrives."""
    held = []
    total = q.f_count + q.r_count
    k = 0
    while k < total:
        b, seq = q.key_at(k)
        if b == boot and first <= seq <= last:
            held.append(seq)
            q.resend_at(k)
        k += 1
    return held


def _end_of(app, boot):
    """(end, exact) of `boot`, or None when the device does not know it."""
    if boot == app.boot:
        return app.seq, True
    for b, end, exact in app.boot_ends:
        if b == boot:
            return end, exact
    return None


def lost_ranges(app, boot, first, last, held):
    """LOSS ranges of one requested range, given the seqs held (ascending)."""
    known = _end_of(app, boot)
    if known is None:
        return []
    end, exact = known
    # Below the highest frame of the range still held, every number existed (frames reach
    # flash in order); above it, after a power cut, only up to where the device had got.
    kept = held[-1] if held else first - 1
    out = []

    def add(lo, hi):
        if exact or hi <= kept:
            out.append((boot, lo, hi, LOSS_GONE))
        elif lo > kept:
            out.append((boot, lo, hi, LOSS_UNSAVED))
        else:
            out.append((boot, lo, kept, LOSS_GONE))
            out.append((boot, kept + 1, hi, LOSS_UNSAVED))

    hi = last if last < end else end - 1
    lo = first
    for s in held:
        if s > hi:
            break
        if s > lo:
            add(lo, s - 1)
        lo = s + 1
    if lo <= hi:
        add(lo, hi)
    if boot != app.boot and last >= end:
        out.append((boot, first if first > end else end, last, LOSS_UNUSED))
    return out


def answer(app, arg):
    """Requeue what is held, publish LOSS frames for the rest. Raises OSError when the
    link breaks (the caller handles it) and ValueError for a malformed argument."""
    app.resend_requests += 1
    out = []
    for boot, first, last in resend_ranges(arg):
        held = requeue(app.queue, boot, first, last)
        out.extend(lost_ranges(app, boot, first, last, held))
    q = app.queue
    q.in_flight_hint = q.in_flight()
    if not out:
        return 0
    buf = bytearray(loss_size(LOSS_MAX_RANGES))
    i = 0
    while i < len(out):
        part = out[i : i + LOSS_MAX_RANGES]
        n = encode_loss(buf, app.boot, app.seq, app.clock.ticks_ms(), part)
        app.publish_loss(buf, n)
        for r in part:
            if r[3] != LOSS_UNUSED:
                app.loss_reported += r[2] - r[1] + 1
        i += LOSS_MAX_RANGES
    return len(out)
