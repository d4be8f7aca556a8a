# Offline queue: every DATA/EVENT frame stays here until the gateway ACKs it.
#
# Two tiers, one FIFO (oldest first):  [flash segments][RAM slots]
# - RAM: `ram_frames` fixed slots. A new frame goes to RAM; when RAM is full the
#   oldest RAM frame spills to flash (an ACKed one is simply discarded).
# - Flash: records packed into a block buffer; a full block is appended to the
#   current segment file (q00000001c.seg, ...) in one write, a segment holds
#   `segment_blocks` blocks and is written append-only. Records never straddle
#   blocks; the unused end of a block is 0xFF padding.
#   Record: magic 0xA5, u16 length, u32 CRC-32 of the frame, frame bytes.
#   A torn tail after power loss (short block, bad magic or CRC) is detected at
#   boot and skipped (counted in `torn`).
# - Block sizes follow littlefs (the ESP32 and Pico W filesystem, block size =
#   `block_bytes`, 4096 on both): block k > 0 of a littlefs file starts with
#   ctz(k)+1 4-byte skip-list pointers, and an append that starts inside a partly
#   filled block first copies it to a freshly erased block. So block k of a segment
#   holds block_bytes - 4 * (ctz(k) + 1) bytes (block 0: block_bytes): each append
#   fills exactly one littlefs block and costs one erase, not two.
#   Segment files of the older layout (q00000001.seg: every block block_bytes long)
#   are still read at boot; their index entries carry _LEGACY in the segment number.
# - Capacity: `flash_frames` records in the flash tier; when full the oldest
#   record is dropped and counted in `dropped` (whether or not it was sent).
# - A record leaves the queue only when an ACK range covers its (boot, seq):
#   a broker PUBACK proves nothing about the gateway's disk. A segment file is
#   deleted once every record in it has left the queue.
# - Frames sent a second time, sent after waiting, or loaded from flash get
#   FLAG_HISTORICAL in their header (CRC recomputed).
# Frames in RAM and in the unwritten block are lost on power loss; sync() writes
# them (deep sleep, reboot command).

import os
import struct
from binascii import crc32

from sensorfw.core.ring import zeros

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


_MAGIC = const(0xA5)
_REC_HDR = const(7)
_SENT = const(1)
_ACKED = const(2)
_HIST = const(4)
_FLAG_HISTORICAL = const(1)
_LEGACY = const(0x10000000)  # segment number flag: a file of the older layout (a small int on 32-bit ports)
_NUMBER = const(0x0FFFFFFF)


def seg_name(d, n):
    if n & _LEGACY:
        return "%s/q%08d.seg" % (d, n & _NUMBER)
    return "%s/q%08dc.seg" % (d, n)


class QueueError(Exception):
    pass


class OfflineQueue:
    def __init__(self, directory, ram_frames=8, flash_frames=256, max_frame=512, block_bytes=4096, segment_blocks=4):  # noqa: PLR0917
        if ram_frames < 1:
            raise QueueError("queue.ram_frames must be >= 1")
        if flash_frames < 1:
            raise QueueError("queue.flash_frames must be >= 1")
        if block_bytes < max_frame + _REC_HDR:
            raise QueueError("queue.block_bytes (%d) must hold one frame of %d bytes + 7" % (block_bytes, max_frame))
        if segment_blocks < 1:
            raise QueueError("queue.segment_blocks must be >= 1")
        self.dir = directory
        self.max_frame = max_frame
        self.block_bytes = block_bytes
        # a segment ends early before a block too short for the largest record
        k = 1
        while k < segment_blocks and self.block_cap(k) >= max_frame + _REC_HDR:
            k += 1
        self.segment_blocks = k
        # RAM tier
        self.R = ram_frames
        self.ram = bytearray(ram_frames * max_frame)
        self.ram_mv = memoryview(self.ram)
        self.r_len = zeros("H", ram_frames)
        self.r_boot = zeros("H", ram_frames)
        self.r_seq = zeros("I", ram_frames)
        self.r_state = bytearray(ram_frames)
        self.r_tail = 0
        self.r_count = 0
        # flash tier index
        self.F = flash_frames
        self.f_boot = zeros("H", flash_frames)
        self.f_seq = zeros("I", flash_frames)
        self.f_seg = zeros("I", flash_frames)
        self.f_off = zeros("I", flash_frames)
        self.f_len = zeros("H", flash_frames)
        self.f_state = bytearray(flash_frames)
        self.f_tail = 0
        self.f_count = 0
        # pending block of the open segment
        self.block = bytearray(block_bytes)
        self.block_mv = memoryview(self.block)
        self.block_used = 0
        self.cap = block_bytes  # bytes of the pending block (block_cap(seg_blocks))
        self.seg = 1  # open segment number
        self.seg_blocks = 0  # blocks already written to it
        self.seg_bytes = 0  # and their bytes: the file offset of the pending block
        self.rd = bytearray(max_frame + _REC_HDR)
        self.rd_mv = memoryview(self.rd)
        self._fmts = {}
        self.cursor = 0  # logical index where the next unsent record is searched
        self.in_flight_hint = 0  # kept by the app: frames sent since the last ACK
        # counters
        self.dropped = 0
        self.torn = 0
        self.corrupt = 0
        self.spilled = 0
        self.block_writes = 0
        self.acked = 0
        self.loaded = 0
        self.clear_block()
        # the boot scan's code is needed once: load it, run it, drop it
        from sensorfw import unload
        from sensorfw.core.queue_scan import scan

        scan(self)
        unload("sensorfw.core.queue_scan")

    # ------------------------------------------------------------------ helpers
    def clear_block(self):
        b = self.block
        i = 0
        n = len(b)
        while i < n:
            b[i] = 0xFF
            i += 1
        self.block_used = 0
        self.cap = self.block_cap(self.seg_blocks)

    def block_cap(self, k):
        """Bytes of block k of a segment: what fills the file's k-th littlefs block
        (block_bytes less ctz(k) + 1 skip-list pointers of 4 bytes)."""
        if k == 0:
            return self.block_bytes
        n = 4
        while not k & 1:
            k >>= 1
            n += 4
        return self.block_bytes - n

    def _new_segment(self):
        self.seg += 1
        self.seg_blocks = 0
        self.seg_bytes = 0

    def _copy(self, dst, off, src, n):
        # C-level copy without slicing (a slice object would allocate)
        fmt = self._fmts.get(n)
        if fmt is None:
            fmt = "%ds" % n
            self._fmts[n] = fmt
        try:
            struct.pack_into(fmt, dst, off, src)
        except Exception:  # CPython's 's' wants bytes: plain slice copy there
            dst[off : off + n] = bytes(src[:n])

    def depth(self):
        return self.f_count + self.r_count

    def __len__(self):
        return self.f_count + self.r_count

    # ------------------------------------------------------------------ flash index
    def index_add(self, boot, seq, seg, off, n, state):  # noqa: PLR0917
        F = self.F
        if self.f_count == F:
            self._drop_oldest_flash()
        i = self.f_tail + self.f_count
        if i >= F:
            i -= F
        self.f_boot[i] = boot
        self.f_seq[i] = seq
        self.f_seg[i] = seg
        self.f_off[i] = off
        self.f_len[i] = n
        self.f_state[i] = state
        self.f_count += 1

    def _drop_oldest_flash(self):
        if not (self.f_state[self.f_tail] & _ACKED):
            self.dropped += 1
        self._pop_flash()

    def _pop_flash(self):
        t = self.f_tail
        seg = self.f_seg[t]
        t += 1
        if t == self.F:
            t = 0
        self.f_tail = t
        self.f_count -= 1
        if self.cursor > 0:
            self.cursor -= 1
        if self.f_count == 0 or self.f_seg[t] != seg:
            self._segment_done(seg)

    def _segment_done(self, seg):
        # every record of `seg` has left the queue
        if seg == self.seg:
            if self.f_count == 0:
                # nothing pending needs the open segment any more: start afresh
                if self.seg_blocks:
                    self._remove(seg)
                    self._new_segment()
                self.clear_block()
            return
        self._remove(seg)

    def _remove(self, seg):
        try:
            os.remove(seg_name(self.dir, seg))
        except OSError:
            pass

    def _write_block(self):
        if self.block_used == 0:
            return
        cap = self.cap
        with open(seg_name(self.dir, self.seg), "ab") as f:
            f.write(self.block_mv[:cap])  # always the whole block: padding stays 0xFF
        self.block_writes += 1
        self.seg_blocks += 1
        self.seg_bytes += cap
        if self.seg_blocks >= self.segment_blocks:
            self._new_segment()
        self.clear_block()

    def _spill(self, src, off, n, boot, seq, state):  # noqa: PLR0917
        if self.block_used + _REC_HDR + n > self.cap:
            self._write_block()
        pos = self.block_used
        blk = self.block
        blk[pos] = _MAGIC
        struct.pack_into("<HI", blk, pos + 1, n, crc32(src[off : off + n]) & 0xFFFFFFFF)
        self._copy(blk, pos + _REC_HDR, src[off : off + n], n)
        self.index_add(boot, seq, self.seg, self.seg_bytes + pos, n, state | _HIST)
        self.block_used = pos + _REC_HDR + n
        self.spilled += 1

    # ------------------------------------------------------------------ public
    def push(self, frame, n, live=False):
        """Copy a finished frame (n bytes) in. live=True: it is about to be sent at
        once, in order, so it keeps its flags; otherwise it goes out historical."""
        if n > self.max_frame:
            raise QueueError("frame of %d bytes exceeds queue slot of %d" % (n, self.max_frame))
        R = self.R
        if self.r_count == R:
            self._spill_oldest_ram()
        i = self.r_tail + self.r_count
        if i >= R:
            i -= R
        self._copy(self.ram, i * self.max_frame, frame, n)
        self.r_len[i] = n
        self.r_boot[i] = frame[3] | (frame[4] << 8)
        self.r_seq[i] = frame[5] | (frame[6] << 8) | (frame[7] << 16) | (frame[8] << 24)
        self.r_state[i] = 0 if live else _HIST
        self.r_count += 1

    def _spill_oldest_ram(self):
        t = self.r_tail
        st = self.r_state[t]
        if not (st & _ACKED):
            off = t * self.max_frame
            self._spill(self.ram_mv, off, self.r_len[t], self.r_boot[t], self.r_seq[t], st)
        elif self.cursor > self.f_count:
            self.cursor -= 1
        t += 1
        if t == self.R:
            t = 0
        self.r_tail = t
        self.r_count -= 1

    def state_at(self, k):
        fc = self.f_count
        if k < fc:
            i = self.f_tail + k
            if i >= self.F:
                i -= self.F
            return self.f_state, i
        i = self.r_tail + k - fc
        if i >= self.R:
            i -= self.R
        return self.r_state, i

    def next_frame(self):
        """memoryview of the oldest unsent frame, or None. The frame
        gets FLAG_HISTORICAL when it is a replay. Call sent() after publishing."""
        total = self.f_count + self.r_count
        k = self.cursor
        while k < total:
            states, i = self.state_at(k)
            st = states[i]
            if not (st & (_SENT | _ACKED)):
                self.cursor = k
                if states is self.r_state:
                    buf = self.ram_mv
                    off = i * self.max_frame
                    n = self.r_len[i]
                else:
                    n = self._read_flash(i)
                    if n < 0:
                        # corrupt on flash: count, mark done, go on
                        self.corrupt += 1
                        states[i] = st | _ACKED
                        k += 1
                        continue
                    buf = self.rd_mv
                    off = _REC_HDR
                if st & _HIST:
                    self._mark_historical(buf, off, n)
                self._last = (states, i)
                return buf[off : off + n]
            k += 1
        self.cursor = total
        return None

    def _mark_historical(self, buf, off, n):
        if buf[off + 2] & _FLAG_HISTORICAL:
            return
        buf[off + 2] |= _FLAG_HISTORICAL
        struct.pack_into("<I", buf, off + n - 4, crc32(buf[off : off + n - 4]) & 0xFFFFFFFF)

    def _read_flash(self, i):
        seg = self.f_seg[i]
        off = self.f_off[i]
        n = self.f_len[i]
        rd = self.rd
        if seg == self.seg and off >= self.seg_bytes:
            # still in the unwritten block
            self._copy(rd, 0, self.block_mv[off - self.seg_bytes :], _REC_HDR + n)
        else:
            try:
                with open(seg_name(self.dir, seg), "rb") as f:
                    f.seek(off)
                    got = f.readinto(rd)
            except OSError:
                return -1
            if got < _REC_HDR + n:
                return -1
        if rd[0] != _MAGIC or (rd[1] | (rd[2] << 8)) != n:
            return -1
        if crc32(self.rd_mv[_REC_HDR : _REC_HDR + n]) & 0xFFFFFFFF != struct.unpack_from("<I", rd, 3)[0]:
            return -1
        return n

    def sent(self):
        """The frame from the last next_frame() went out."""
        states, i = self._last
        states[i] |= _SENT
        self.cursor += 1

    def unsent(self):
        """Number of frames not yet sent in this connection."""
        total = self.f_count + self.r_count
        n = 0
        k = self.cursor
        while k < total:
            states, i = self.state_at(k)
            if not (states[i] & (_SENT | _ACKED)):
                n += 1
            k += 1
        return n

    def key_at(self, k):
        """(boot, seq) of the record at logical index k."""
        fc = self.f_count
        if k < fc:
            i = self.f_tail + k
            if i >= self.F:
                i -= self.F
            return self.f_boot[i], self.f_seq[i]
        i = self.r_tail + k - fc
        if i >= self.R:
            i -= self.R
        return self.r_boot[i], self.r_seq[i]

    def in_flight_head(self):
        """(boot, seq) of the oldest frame sent and not yet ACKed, or None."""
        total = self.f_count + self.r_count
        k = 0
        while k < total:
            states, i = self.state_at(k)
            if states[i] & (_SENT | _ACKED) == _SENT:
                return self.key_at(k)
            k += 1
        return None

    def resend_at(self, k):
        """CMD_RESEND: the record at index k goes out again (historical) if it was sent
        and is not ACKed."""
        states, i = self.state_at(k)
        st = states[i]
        if st & (_SENT | _ACKED) == _SENT:
            states[i] = (st & ~_SENT) | _HIST
            self.cursor = min(self.cursor, k)

    def in_flight(self):
        """Sent but not yet ACKed frames."""
        n = 0
        k = 0
        total = self.f_count + self.r_count
        while k < total:
            states, i = self.state_at(k)
            if states[i] & (_SENT | _ACKED) == _SENT:
                n += 1
            k += 1
        return n

    def rewind(self):
        """Connection lost or ACK overdue: every sent, unACKed frame goes out again,
        flagged historical."""
        total = self.f_count + self.r_count
        k = 0
        while k < total:
            states, i = self.state_at(k)
            st = states[i]
            if st & _SENT and not st & _ACKED:
                states[i] = (st & ~_SENT) | _HIST
            k += 1
        self.cursor = 0
        self.in_flight_hint = 0

    def ack(self, boot, first, last):
        """Gateway persisted (boot, first..last): those frames leave the queue.
        Returns how many queued frames the range covered."""
        hit = 0
        k = 0
        fc = self.f_count
        while k < fc:
            i = self.f_tail + k
            if i >= self.F:
                i -= self.F
            if self.f_boot[i] == boot and first <= self.f_seq[i] <= last and not self.f_state[i] & _ACKED:
                self.f_state[i] |= _ACKED
                hit += 1
            k += 1
        k = 0
        while k < self.r_count:
            i = self.r_tail + k
            if i >= self.R:
                i -= self.R
            if self.r_boot[i] == boot and first <= self.r_seq[i] <= last and not self.r_state[i] & _ACKED:
                self.r_state[i] |= _ACKED
                hit += 1
            k += 1
        self.acked += hit
        self._pop_acked()
        return hit

    def _pop_acked(self):
        while self.f_count and self.f_state[self.f_tail] & _ACKED:
            self._pop_flash()
        if self.f_count == 0:
            while self.r_count and self.r_state[self.r_tail] & _ACKED:
                t = self.r_tail + 1
                if t == self.R:
                    t = 0
                self.r_tail = t
                self.r_count -= 1
                if self.cursor > 0:
                    self.cursor -= 1

    def sync(self):
        """Move every unACKed RAM frame to flash and write the open block (before
        deep sleep or a reboot)."""
        while self.r_count:
            self._spill_oldest_ram()
        self._write_block()
        if self.seg_blocks:
            # next records start a new segment: the synced one is closed
            self._new_segment()
            self.clear_block()
