# DATA-frame encoding allocates nothing on MicroPython: proved under
# micropython.heap_lock(), where any allocation raises MemoryError.
# (Runs on the unix port only: heap_lock does not exist on CPython.)
from array import array

import micropython

from shared_protocol import FLAG_DELTA, FLAG_HISTORICAL, ST_INT32
from shared_protocol.decode import Schema, decode
from shared_protocol.encode import DataEncoder, schema_id

CHANNELS = [("c%d" % i, "g", 0.001, 0.0, 1, 50.0) for i in range(6)]


def _smooth(n):
    a = array("h", bytearray(2 * n))
    i = 0
    while i < n:
        a[i] = (i * 13) % 97 - 48
        i += 1
    return a


def _rough(n):
    a = array("h", bytearray(2 * n))
    i = 0
    while i < n:
        a[i] = 30000 if i % 7 == 0 else -30000
        i += 1
    return a


def _locked_encodes(enc, samples, flags, count):
    # All work between lock and unlock must allocate nothing; locals only.
    total = 0
    seq = 0
    micropython.heap_lock()
    try:
        while seq < count:
            total += enc.encode(3, seq, 1000 + seq, 20000, samples, 32, flags)
            seq += 1
    finally:
        micropython.heap_unlock()
    return total


def test_plain_data_encode_allocates_nothing():
    enc = DataEncoder(6, 32, schema_id=schema_id(CHANNELS))
    samples = _smooth(192)
    enc.encode(3, 0, 0, 20000, samples, 32)  # first frame of this length makes its views
    total = _locked_encodes(enc, samples, 0, 50)
    assert total == 50 * 411, total
    f = decode(enc.frame, Schema(CHANNELS))
    assert f.seq == 49 and f.fields["raw"] == list(samples)


def test_delta_and_fallback_encode_allocate_nothing():
    enc = DataEncoder(6, 32)
    smooth = _smooth(192)
    rough = _rough(192)
    enc.encode(3, 0, 0, 20000, smooth, 32, FLAG_DELTA)
    enc.encode(3, 0, 0, 20000, rough, 32, FLAG_DELTA)
    n_delta = _locked_encodes(enc, smooth, FLAG_DELTA | FLAG_HISTORICAL, 20)
    f = decode(enc.frame)
    assert f.flags == FLAG_DELTA | FLAG_HISTORICAL
    assert f.fields["raw"] == list(smooth)
    n_plain = _locked_encodes(enc, rough, FLAG_DELTA, 20)
    f = decode(enc.frame)
    assert f.flags == 0  # fell back to plain int16
    assert f.fields["raw"] == list(rough)
    assert n_delta == 20 * (27 + 12 + 31 * 6) and n_plain == 20 * 411
    assert enc.delta_frames == 21 and enc.plain_frames == 21


def test_int32_encode_allocates_nothing():
    enc = DataEncoder(2, 32, ST_INT32)
    samples = array("i", [0] * 64)
    i = 0
    while i < 64:
        samples[i] = (i - 32) * 1000003
        i += 1
    enc.encode(1, 0, 0, 1000, samples, 32)
    _locked_encodes(enc, samples, 0, 10)
    assert decode(enc.frame).fields["raw"] == list(samples)


def test_allocation_is_detected():
    # The proof above is only worth something if heap_lock really catches allocations.
    micropython.heap_lock()
    try:
        try:
            bytearray(8)
            caught = False
        except MemoryError:
            caught = True
    finally:
        micropython.heap_unlock()
    assert caught
