# Golden vectors (tests/vectors/*.json, written by tools/gen_vectors.py) checked
# on the MicroPython unix port and on CPython: the same bytes on both sides.
import json
import os
from array import array
from binascii import hexlify, unhexlify

from shared_protocol.decode import Schema, decode
from shared_protocol.encode import (
    DataEncoder,
    encode_ack,
    encode_birth,
    encode_cmd,
    encode_death,
    encode_event,
    encode_health,
)
from shared_protocol.errors import ProtocolError
from shared_protocol.repair import encode_loss

RUNTIMES = ("micropython", "cpython")


def _vector_dir():
    root = os.getenv("EDGELINE_ROOT")
    if root:
        return root + "/tests/vectors"
    here = __file__.rsplit("/", 1)[0]
    return here + "/../vectors"


def _load(name):
    with open(_vector_dir() + "/" + name) as f:
        return json.load(f)


def _hex(b):
    return hexlify(bytes(b)).decode()


def _arg(v):
    if isinstance(v, dict) and "hex" in v:
        return unhexlify(v["hex"])
    return v


def _encode(case):
    a = case["args"]
    enc = case["encoder"]
    buf = bytearray(2048)
    if enc == "data":
        e = DataEncoder(a["nchannels"], a["max_samples"], a["sample_type"], a["schema_id"])
        samples = array("h" if a["sample_type"] == 1 else "i", a["samples"])
        n = e.encode(a["boot"], a["seq"], a["ticks"], a["period_us"], samples, a["nsamples"], a["flags"])
        assert bytes(e.frame) == bytes(e.buf[:n])
        return e.buf[:n]
    if enc == "birth":
        chans = [tuple(c) for c in a["channels"]]
        n = encode_birth(buf, a["boot"], a["seq"], a["ticks"], a["fw_version"], chans, a["tick_bits"])
    elif enc == "event":
        n = encode_event(
            buf,
            a["boot"],
            a["seq"],
            a["ticks"],
            a["flags"],
            bytearray(a["channels"]),
            array("I", a["times"]),
            array("i", a["values"]),
            a["n"],
        )
    elif enc == "health":
        n = encode_health(
            buf,
            a["boot"],
            a["seq"],
            a["ticks"],
            a["flags"],
            a["uptime_s"],
            a["free_heap"],
            a["rssi"],
            a["battery_mv"],
            a["queue_depth"],
            a["dropped_frames"],
            a["irq_overruns"],
            a["worst_latency_us"],
            a["jitter_us"],
        )
    elif enc == "death":
        n = encode_death(buf, a["boot"], a["seq"], a["ticks"])
    elif enc == "ack":
        n = encode_ack(buf, a["boot"], a["seq"], a["ticks"], [tuple(r) for r in a["ranges"]])
    elif enc == "cmd":
        n = encode_cmd(buf, a["boot"], a["seq"], a["ticks"], a["cmd_id"], a["op"], _arg(a["arg"]))
    elif enc == "loss":
        n = encode_loss(buf, a["boot"], a["seq"], a["ticks"], [tuple(r) for r in a["ranges"]])
    else:
        raise ValueError("unknown encoder " + enc)
    return buf[:n]


def _same(got, want, where):
    if isinstance(want, dict) and "hex" in want:
        got_hex = _hex(got)
        if got_hex != want["hex"]:
            raise AssertionError("%s: %s != %s" % (where, got_hex, want["hex"]))
        return
    if isinstance(want, float) or isinstance(got, float):
        if abs(got - want) > 1e-9 * max(1.0, abs(want)):
            raise AssertionError("%s: %r != %r" % (where, got, want))
        return
    if isinstance(want, list):
        if len(got) != len(want):
            raise AssertionError("%s: length %d != %d" % (where, len(got), len(want)))
        i = 0
        while i < len(want):
            _same(got[i], want[i], "%s[%d]" % (where, i))
            i += 1
        return
    if isinstance(want, dict):
        if sorted(got.keys()) != sorted(want.keys()):
            raise AssertionError("%s: keys %r != %r" % (where, sorted(got.keys()), sorted(want.keys())))
        for k in want:
            _same(got[k], want[k], where + "." + k)
        return
    if got != want:
        raise AssertionError("%s: %r != %r" % (where, got, want))


def test_every_frame_type_has_vectors():
    doc = _load("frames.json")
    kinds = set(c["encoder"] for c in doc["frames"])
    for k in ("birth", "data", "event", "health", "death", "ack", "cmd", "loss"):
        assert k in kinds, k
    assert len(_load("rejects.json")["rejects"]) >= 30


def test_encoder_writes_golden_bytes():
    for case in _load("frames.json")["frames"]:
        got = _hex(_encode(case))
        if got != case["hex"]:
            raise AssertionError("%s: encoder wrote %s, vector says %s" % (case["name"], got, case["hex"]))


def test_decoder_returns_golden_fields():
    doc = _load("frames.json")
    for case in doc["frames"]:
        schema = Schema([tuple(c) for c in case["schema"]]) if case["schema"] else None
        f = decode(unhexlify(case["hex"]), schema)
        h = case["header"]
        got_header = {
            "version": f.version,
            "type": f.type,
            "flags": f.flags,
            "boot": f.boot,
            "seq": f.seq,
            "ticks": f.ticks,
        }
        _same(got_header, h, case["name"] + ".header")
        _same(f.fields, case["fields"], case["name"])


def test_schema_id_matches_vectors():
    doc = _load("frames.json")
    assert Schema([tuple(c) for c in doc["schema_channels"]]).schema_id == doc["schema_id"]


def test_broken_frames_rejected_with_reason():
    doc = _load("rejects.json")
    schema = Schema([tuple(c) for c in doc["schema_channels"]])
    for case in doc["rejects"]:
        frame = unhexlify(case["hex"])
        try:
            decode(frame, schema if case["with_schema"] else None)
        except ProtocolError as exc:
            if exc.reason != case["reason"]:
                raise AssertionError("%s: reason %r, want %r (%s)" % (case["name"], exc.reason, case["reason"], exc))
        else:
            raise AssertionError("%s: decoded without error" % case["name"])
