# Boot scan of the offline queue's flash segments (imported once at start-up).
#
# Rebuilds the queue index from the segment files, oldest first. A record is trusted
# only when its magic, length and CRC-32 check out; the first bad one ends that
# segment (a torn tail after power loss) and is counted in q.torn.
# Two layouts (see offline_queue.py): qNNNNNNNNc.seg, block k is q.block_cap(k) bytes
# long (littlefs-aligned); qNNNNNNNN.seg from older firmware, every block is
# q.block_bytes long. Both are read; the older kind is flagged _LEGACY in the index.

import os
import struct
from binascii import crc32

from sensorfw.core.offline_queue import seg_name

_MAGIC = 0xA5
_REC_HDR = 7
_HIST = 4
_LEGACY = 0x10000000
_NUMBER = 0x0FFFFFFF


def _number(s):
    return s & _NUMBER


def scan(q):
    try:
        names = os.listdir(q.dir)
    except OSError:
        os.mkdir(q.dir)
        names = []
    segs = []
    for name in names:
        n = len(name)
        if n < 13 or name[0] != "q" or not name.endswith(".seg"):
            continue
        try:
            s = int(name[1:9])
        except ValueError:
            continue
        if n == 14 and name[9] == "c":
            segs.append(s)
        elif n == 13:
            segs.append(s | _LEGACY)
    segs.sort(key=_number)
    top = 0
    for s in segs:
        _load_segment(q, s)
        top = max(top, s & _NUMBER)
    if segs:
        q.seg = top + 1  # never append to a segment that may have a torn tail
    q.cursor = 0


def _load_segment(q, s):
    path = seg_name(q.dir, s)
    blk = q.block
    mv = q.block_mv
    legacy = s & _LEGACY
    had = False
    with open(path, "rb") as f:
        base = 0
        k = 0
        while True:
            cap = q.block_bytes if legacy else q.block_cap(k)
            got = f.readinto(mv[:cap])
            if not got:
                break
            pos = 0
            while pos + _REC_HDR <= got:
                magic = blk[pos]
                if magic == 0xFF:
                    break  # padding: next block
                n = blk[pos + 1] | (blk[pos + 2] << 8)
                if magic != _MAGIC or n < 17 or n > q.max_frame or pos + _REC_HDR + n > got:
                    q.torn += 1
                    got = 0
                    break
                want = struct.unpack_from("<I", blk, pos + 3)[0]
                fo = pos + _REC_HDR
                if crc32(mv[fo : fo + n]) & 0xFFFFFFFF != want:
                    q.torn += 1
                    got = 0
                    break
                boot, seq = struct.unpack_from("<HI", blk, fo + 3)
                q.index_add(boot, seq, s, base + pos, n, _HIST)
                q.loaded += 1
                had = True
                pos = fo + n
            if got < cap:
                break
            base += cap
            k += 1
    if not had:
        os.remove(path)
    q.clear_block()
