"""Fuzz the gateway decoders (plain and numpy) with >= 100,000 mutated and
random frames: nothing but ProtocolError may escape, every rejection carries a
known reason (counted and printed), and every accepted frame re-encodes to the
exact same bytes, so no corrupted frame is ever read as a wrong value."""

from __future__ import annotations

import json
import random
import struct
from array import array
from collections import Counter
from pathlib import Path
from zlib import crc32

import numpy as np

from shared_protocol import ACK, BIRTH, CMD, DATA, DEATH, EVENT, FLAG_DELTA, HEALTH, ST_FLOAT32, ST_INT16
from shared_protocol.decode import HEALTH_FIELDS, Frame, Schema, decode
from shared_protocol.encode import (
    DataEncoder,
    encode_ack,
    encode_birth,
    encode_cmd,
    encode_death,
    encode_event,
    encode_health,
)
from shared_protocol.errors import REASONS, ProtocolError
from shared_protocol.np_decode import decode_data, decode_data_many
from shared_protocol.repair import encode_loss

ROOT = Path(__file__).resolve().parents[2]
TOTAL = 100_000
SEED = 20261129


def _seal(body: bytes) -> bytes:
    return body + struct.pack("<I", crc32(body))


def _reencode(f: Frame) -> bytes:
    buf = bytearray(70000)
    x = f.fields
    if f.type == DATA:
        enc = DataEncoder(x["nchannels"], x["nsamples"], x["sample_type"], x["schema_id"])
        code = {ST_INT16: "h", ST_FLOAT32: "f"}.get(x["sample_type"], "i")
        enc.encode(f.boot, f.seq, f.ticks, x["period_us"], array(code, x["raw"]), x["nsamples"], f.flags)
        return bytes(enc.frame)
    if f.type == BIRTH:
        n = encode_birth(buf, f.boot, f.seq, f.ticks, x["fw_version"], x["channels"], x["tick_bits"], f.flags)
    elif f.type == EVENT:
        ev = x["events"]
        n = encode_event(
            buf,
            f.boot,
            f.seq,
            f.ticks,
            f.flags,
            bytearray(e[0] for e in ev),
            array("I", [e[1] for e in ev]),
            array("i", [e[2] for e in ev]),
            len(ev),
        )
    elif f.type == HEALTH:
        n = encode_health(buf, f.boot, f.seq, f.ticks, f.flags, *(x[k] for k in HEALTH_FIELDS))
    elif f.type == DEATH:
        n = encode_death(buf, f.boot, f.seq, f.ticks)
    elif f.type == CMD:
        n = encode_cmd(buf, f.boot, f.seq, f.ticks, x["cmd_id"], x["op"], x["arg"])
    elif f.type == ACK:
        n = encode_ack(buf, f.boot, f.seq, f.ticks, x["ranges"])
    else:
        n = encode_loss(buf, f.boot, f.seq, f.ticks, x["ranges"])
    return bytes(buf[:n])


def _seeds(schema: Schema) -> list[bytes]:
    doc = json.loads((ROOT / "tests" / "vectors" / "frames.json").read_text())
    seeds = [bytes.fromhex(c["hex"]) for c in doc["frames"]]
    enc = DataEncoder(schema.nchannels, 32, schema_id=schema.schema_id)
    t = np.arange(32)[:, None] * 0.2 + np.arange(schema.nchannels)[None, :]
    smooth = (np.sin(t) * 300).astype(np.int16).reshape(-1)
    for flags in (0, FLAG_DELTA):
        enc.encode(7, 100, 5000, 20000, array("h", smooth.tolist()), 32, flags)
        seeds.append(bytes(enc.frame))
    return seeds


def _mutate(rng: random.Random, seeds: list[bytes]) -> bytes:  # noqa: C901 (one branch per mutation kind)
    base = bytearray(rng.choice(seeds))
    op = rng.randrange(9)
    if op == 0:  # flip 1..4 bits
        for _ in range(rng.randint(1, 4)):
            if base:
                i = rng.randrange(len(base))
                base[i] ^= 1 << rng.randrange(8)
    elif op == 1:  # overwrite bytes
        for _ in range(rng.randint(1, 6)):
            if base:
                base[rng.randrange(len(base))] = rng.randrange(256)
    elif op == 2:  # truncate
        base = base[: rng.randrange(len(base) + 1)]
    elif op == 3:  # extend
        base += bytes(rng.randrange(256) for _ in range(rng.randint(1, 20)))
    elif op == 4:  # splice two frames
        other = rng.choice(seeds)
        base = base[: rng.randrange(len(base) + 1)] + other[rng.randrange(len(other) + 1) :]
    elif op == 5:  # pure random bytes
        base = bytearray(rng.randbytes(rng.randrange(0, 600)))
    elif op == 6:  # random payload behind a plausible header, valid CRC
        hdr = struct.pack("<BBBHII", 1, rng.randint(0, 9), rng.choice([0, 0, 1, 2, 3, 4]), 7, 1, 2)
        return _seal(hdr + rng.randbytes(rng.randrange(0, 400)))
    body = bytes(base[:-4]) if len(base) >= 4 else bytes(base)
    if op in (7, 8) or rng.random() < 0.5:  # mutate the body, then give it a correct CRC
        body = bytearray(rng.choice(seeds)[:-4])
        if op == 7 and body:
            for _ in range(rng.randint(1, 3)):
                body[rng.randrange(len(body))] = rng.randrange(256)
        elif op == 8:
            body = body[: rng.randrange(len(body) + 1)] + rng.randbytes(rng.randrange(0, 8))
        else:
            for _ in range(rng.randint(1, 2)):
                if body:
                    body[rng.randrange(len(body))] ^= 1 << rng.randrange(8)
        return _seal(bytes(body))
    return bytes(base)


def test_fuzz_decoders_reject_with_reasons_and_never_misread() -> None:
    doc = json.loads((ROOT / "tests" / "vectors" / "frames.json").read_text())
    schema = Schema([tuple(c) for c in doc["schema_channels"]])
    seeds = _seeds(schema)
    rng = random.Random(SEED)
    reasons: Counter[str] = Counter()
    np_reasons: Counter[str] = Counter()
    accepted = 0
    batch: list[bytes] = []
    batch_accepted = 0
    for _ in range(TOTAL):
        frame = _mutate(rng, seeds)
        try:
            f = decode(frame, schema if frame[1:2] == b"\x02" else None)
        except ProtocolError as exc:
            assert exc.reason in REASONS, exc.reason
            assert str(exc), "every rejection explains itself"
            reasons[exc.reason] += 1
            plain_ok = False
        else:
            accepted += 1
            plain_ok = True
            assert _reencode(f) == frame, f"accepted frame does not re-encode to itself: {frame.hex()}"
        try:
            block = decode_data(frame, schema)
        except ProtocolError as exc:
            assert exc.reason in REASONS, exc.reason
            np_reasons[exc.reason] += 1
            # a DATA frame the plain decoder accepts must be accepted by numpy too
            assert not (plain_ok and f.type == DATA), f"numpy rejected a valid DATA frame: {exc}"
        else:
            assert plain_ok and f.type == DATA, f"numpy accepted what the plain decoder refused: {frame.hex()}"
            assert block.raw.reshape(-1).tolist() == f.fields["raw"]
        batch.append(frame)
        if plain_ok and f.type == DATA:
            batch_accepted += 1
        if len(batch) == 500:
            errors: list[tuple[int, ProtocolError]] = []
            got = sum(len(b) for b in decode_data_many(batch, schema, errors))
            assert got == batch_accepted and got + len(errors) == len(batch)
            assert all(e.reason in REASONS for _, e in errors)
            batch, batch_accepted = [], 0
    total_rejected = sum(reasons.values())
    print(f"\nfuzz: {TOTAL} frames, plain decoder accepted {accepted}, rejected {total_rejected}")
    print("| reason | plain decode | numpy decode_data |\n|---|---|---|")
    for r in REASONS:
        print(f"| {r} | {reasons[r]} | {np_reasons[r]} |")
    assert accepted + total_rejected == TOTAL
    # the fuzzer reaches every check, not only the CRC
    for r in ("truncated", "length", "crc", "version", "type", "flags", "field", "schema"):
        assert reasons[r] > 0, f"no frame was rejected for {r!r}: the fuzzer misses that check"
