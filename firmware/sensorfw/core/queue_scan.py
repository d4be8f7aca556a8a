# Boot scan of the offline queue's flash segments (imported once at start-up).
#
# Rebuilds the queue index from q*.seg files, oldest first. A record is trusted only
# when its magic, length and CRC-32 check out; the first bad one ends that segment
# (a torn tail after power loss) and is counted in q.torn.

import os
import struct
from binascii import crc32

from sensorfw.core.offline_queue import seg_name

_MAGIC = 0xA5
_REC_HDR = 7
_HIST = 4


def scan(q):
    try:
        names = os.listdir(q.dir)
    except OSError:
        os.mkdir(q.dir)
        names = []
    segs = []
    for name in names:
        if len(name) == 13 and name[0] == "q" and name.endswith(".seg"):
            try:
                segs.append(int(name[1:9]))
            except ValueError:
                pass
    segs.sort()
    for s in segs:
        _load_segment(q, s)
    if segs:
        q.seg = segs[-1] + 1  # never append to a segment that may have a torn tail
    q.cursor = 0


def _load_segment(q, s):
    path = seg_name(q.dir, s)
    blk = q.block
    bb = q.block_bytes
    had = False
    with open(path, "rb") as f:
        base = 0
        while True:
            got = f.readinto(blk)
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
                if crc32(memoryview(blk)[fo : fo + n]) & 0xFFFFFFFF != want:
                    q.torn += 1
                    got = 0
                    break
                boot, seq = struct.unpack_from("<HI", blk, fo + 3)
                q.index_add(boot, seq, s, base + pos, n, _HIST)
                q.loaded += 1
                had = True
                pos = fo + n
            if got < bb:
                break
            base += bb
    if not had:
        os.remove(path)
    q.clear_block()
