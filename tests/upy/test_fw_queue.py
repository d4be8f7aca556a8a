# Offline queue: order, ACK trimming, spill to flash, capacity, torn tails, restarts.
import os
import struct
from array import array

from sensorfw.core.offline_queue import OfflineQueue

from shared_protocol import FLAG_HISTORICAL
from shared_protocol.decode import decode
from shared_protocol.encode import DataEncoder

RUNTIMES = ("micropython", "cpython")

_ENC = DataEncoder(2, 8)
_SAMPLES = array("h", [0] * 16)


def _frame(seq, boot=1):
    i = 0
    while i < 16:
        _SAMPLES[i] = seq * 10 + i
        i += 1
    n = _ENC.encode(boot, seq, seq * 80, 10000, _SAMPLES, 8)
    return _ENC.frame, n


def _base():
    # MicroPython tests run in a clean temporary cwd; under CPython the cwd is the repo
    import sys

    if sys.implementation.name == "cpython":
        import tempfile

        return tempfile.mkdtemp(prefix="edgeline-q-") + "/"
    return ""


def _dir(name):
    d = _base() + "qtest_" + name
    try:
        for f in os.listdir(d + "/q"):
            os.remove(d + "/q/" + f)
    except OSError:
        pass
    try:
        os.mkdir(d)
    except OSError:
        pass
    return d + "/q"


def _queue(d, ram=4, flash=64, block=512, segblocks=2):
    return OfflineQueue(d, ram, flash, len(_ENC.buf), block, segblocks)


def _drain(q):
    out = []
    while True:
        got = q.next_frame()
        if got is None:
            return out
        f = decode(bytes(got))
        out.append((f.seq, f.flags))
        q.sent()


def test_live_frames_keep_flags_and_ack_trims():
    q = _queue(_dir("live"))
    for s in range(3):
        mv, n = _frame(s)
        q.push(mv, n, True)
    assert _drain(q) == [(0, 0), (1, 0), (2, 0)]
    assert q.depth() == 3 and q.in_flight() == 3
    q.ack(1, 0, 1)
    assert q.depth() == 1
    q.ack(1, 2, 2)
    assert q.depth() == 0


def test_spill_replay_order_and_historical_flag():
    d = _dir("spill")
    q = _queue(d)
    for s in range(40):  # link down: 4 in RAM, the rest spilled to flash blocks
        mv, n = _frame(s)
        q.push(mv, n, False)
    assert q.spilled == 36 and q.block_writes > 0
    got = _drain(q)
    assert [s for s, _ in got] == list(range(40))
    assert all(fl & FLAG_HISTORICAL for _, fl in got)
    # reconnect before any ACK: everything goes out again, still in order
    q.rewind()
    assert [s for s, _ in _drain(q)] == list(range(40))
    q.ack(1, 0, 39)
    assert q.depth() == 0
    assert [f for f in os.listdir(d) if f.endswith(".seg")] == []


def test_capacity_drops_oldest_and_counts():
    q = _queue(_dir("cap"), ram=2, flash=10)
    for s in range(30):
        mv, n = _frame(s)
        q.push(mv, n, False)
    assert q.depth() == 12
    assert q.dropped == 18
    assert [s for s, _ in _drain(q)] == list(range(18, 30))


def test_flash_survives_restart_and_ack_deletes_segments():
    d = _dir("restart")
    q = _queue(d)
    for s in range(20):
        mv, n = _frame(s, boot=3)
        q.push(mv, n, False)
    q.sync()  # e.g. before deep sleep / reboot
    q2 = _queue(d)  # power cycle: a fresh queue on the same flash
    assert q2.loaded == 20 and q2.torn == 0
    got = _drain(q2)
    assert [s for s, _ in got] == list(range(20))
    assert all(fl & FLAG_HISTORICAL for _, fl in got)
    q2.ack(3, 0, 9)
    q2.ack(3, 10, 19)
    assert q2.depth() == 0
    assert [f for f in os.listdir(d) if f.endswith(".seg")] == []
    q3 = _queue(d)
    assert q3.loaded == 0


def test_torn_tail_is_detected_and_skipped():
    d = _dir("torn")
    q = _queue(d, ram=1, flash=64, block=512, segblocks=8)
    for s in range(12):
        mv, n = _frame(s)
        q.push(mv, n, False)
    q.sync()
    segs = sorted(f for f in os.listdir(d) if f.endswith(".seg"))
    last = d + "/" + segs[-1]
    with open(last, "rb") as f:
        data = f.read()
    # power lost in the middle of the last block write: keep only part of it
    cut = len(data) - 512 + 30
    with open(last, "wb") as f:
        f.write(data[:cut])
    q2 = _queue(d)
    assert q2.torn == 1
    seqs = [s for s, _ in _drain(q2)]
    assert seqs == list(range(len(seqs))) and 0 < len(seqs) < 12
    # a flipped bit inside a record is caught by its CRC
    with open(last, "wb") as f:
        bad = bytearray(data)
        bad[len(data) - 512 + 20] ^= 0x10
        f.write(bad)
    q3 = _queue(d)
    assert q3.torn == 1 and q3.loaded == len(seqs)


def test_segment_blocks_fill_littlefs_blocks():
    # block k > 0 of a littlefs file starts with ctz(k)+1 pointers of 4 bytes: the queue's
    # block k is that much shorter, so every append fills exactly one littlefs block
    d = _dir("layout")
    q = _queue(d, ram=1, flash=64, block=512, segblocks=4)
    assert [q.block_cap(k) for k in range(5)] == [512, 508, 504, 508, 500]
    for s in range(30):
        mv, n = _frame(s)
        q.push(mv, n, False)
    q.sync()
    sizes = sorted((f, os.stat(d + "/" + f)[6]) for f in os.listdir(d))
    assert [f for f, _ in sizes][:2] == ["q00000001c.seg", "q00000002c.seg"], sizes
    assert sizes[0][1] == 512 + 508 + 504 + 508  # a full segment
    q2 = _queue(d, ram=1, flash=64, block=512, segblocks=4)
    assert q2.loaded == 30 and q2.torn == 0
    assert [s for s, _ in _drain(q2)] == list(range(30))


def _legacy_segment(path, seqs, block):
    # a segment file as firmware before the littlefs alignment wrote it: q%08d.seg,
    # every block `block` bytes, records packed from the start of each block
    from binascii import crc32

    out = bytearray()
    blk = bytearray(b"\xff" * block)
    pos = 0
    for s in seqs:
        mv, n = _frame(s, boot=2)
        if pos + 7 + n > block:
            out += blk
            blk = bytearray(b"\xff" * block)
            pos = 0
        blk[pos] = 0xA5
        blk[pos + 1 : pos + 7] = struct.pack("<HI", n, crc32(bytes(mv[:n])) & 0xFFFFFFFF)
        blk[pos + 7 : pos + 7 + n] = bytes(mv[:n])
        pos += 7 + n
    out += blk
    with open(path, "wb") as f:
        f.write(out)


def test_segments_of_the_older_layout_are_read_after_an_upgrade():
    d = _dir("legacy")
    try:
        os.mkdir(d)
    except OSError:
        pass
    _legacy_segment(d + "/q00000006.seg", range(0, 20), 512)  # 3 blocks of 512
    _legacy_segment(d + "/q00000007.seg", range(20, 26), 512)
    q = _queue(d)
    assert q.loaded == 26 and q.torn == 0
    for s in range(26, 30):  # new frames after the upgrade: a new segment, next number
        mv, n = _frame(s, boot=2)
        q.push(mv, n, False)
    q.sync()
    assert sorted(f for f in os.listdir(d) if f.endswith(".seg")) == [
        "q00000006.seg",
        "q00000007.seg",
        "q00000008c.seg",
    ]
    got = _drain(q)
    assert [s for s, _ in got] == list(range(30))  # read back from both layouts
    q.ack(2, 0, 22)
    assert sorted(f for f in os.listdir(d) if f.endswith(".seg")) == ["q00000007.seg", "q00000008c.seg"]
    q.ack(2, 23, 29)
    assert [f for f in os.listdir(d) if f.endswith(".seg")] == []
