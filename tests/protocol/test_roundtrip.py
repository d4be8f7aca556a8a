"""Round-trip properties (hypothesis): whatever the encoders write, the plain
and numpy decoders read back exactly, and decoding then re-encoding gives the
same bytes."""

from __future__ import annotations

import json
from array import array
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import shared_protocol as sp
from shared_protocol import encode as enc_mod
from shared_protocol.decode import HEALTH_FIELDS, Schema, decode, schema_from_birth
from shared_protocol.encode import (
    DataEncoder,
    cmd_arg,
    encode_ack,
    encode_birth,
    encode_cmd,
    encode_death,
    encode_event,
    encode_health,
    schema_id,
)
from shared_protocol.errors import BadField, ProtocolError, SchemaMismatch
from shared_protocol.np_decode import decode_blocks, decode_data, decode_data_many

U16 = st.integers(0, 0xFFFF)
U32 = st.integers(0, 0xFFFFFFFF)
TICKS = st.integers(0, 2**30 - 1)
NAME = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=8)
FINITE = st.floats(allow_nan=False, allow_infinity=False, width=64)


def _channels(n: int, stype: int = sp.ST_INT16) -> list[tuple[str, str, float, float, int, float]]:
    return [(f"c{i}", "u", 0.5 + i, -1.0 * i, stype, 50.0) for i in range(n)]


@st.composite
def data_case(draw: st.DrawFn) -> tuple[int, int, int, list[int], int]:
    nch = draw(st.integers(1, 8))
    ns = draw(st.integers(1, 40))
    stype = draw(st.sampled_from([sp.ST_INT16, sp.ST_INT32]))
    lo, hi = (-32768, 32767) if stype == sp.ST_INT16 else (-(2**31), 2**31 - 1)
    smooth = draw(st.booleans())
    if smooth:  # random walk with small steps: delta coding applies
        start = draw(st.lists(st.integers(lo + 5000, hi - 5000), min_size=nch, max_size=nch))
        steps = draw(st.lists(st.integers(-100, 100), min_size=nch * (ns - 1), max_size=nch * (ns - 1)))
        vals = list(start)
        for i, d in enumerate(steps):
            vals.append(vals[i] + d)
    else:
        vals = draw(st.lists(st.integers(lo, hi), min_size=nch * ns, max_size=nch * ns))
    flags = draw(st.sampled_from([0, sp.FLAG_DELTA, sp.FLAG_HISTORICAL, sp.FLAG_DELTA | sp.FLAG_HISTORICAL]))
    return nch, ns, stype, vals, flags


@settings(max_examples=300, deadline=None)
@given(data_case(), U16, U32, TICKS, st.integers(1, 2**32 - 1))
def test_data_roundtrip_plain_and_numpy(
    case: tuple[int, int, int, list[int], int], boot: int, seq: int, ticks: int, period: int
) -> None:
    nch, ns, stype, vals, flags = case
    channels = _channels(nch, stype)
    schema = Schema(channels)
    enc = DataEncoder(nch, ns + 3, stype, schema.schema_id)
    n = enc.encode(boot, seq, ticks, period, array("h" if stype == sp.ST_INT16 else "i", vals), ns, flags)
    frame = bytes(enc.frame)
    assert len(frame) == n == enc.frame_size(ns, bool(frame[2] & sp.FLAG_DELTA))
    f = decode(frame, schema)
    assert f.fields["raw"] == vals
    assert (f.boot, f.seq, f.ticks, f.fields["period_us"], f.fields["nsamples"]) == (boot, seq, ticks, period, ns)
    assert f.flags & sp.FLAG_HISTORICAL == flags & sp.FLAG_HISTORICAL
    if f.flags & sp.FLAG_DELTA:
        assert ns > 1 and flags & sp.FLAG_DELTA
        assert all(-128 <= vals[i] - vals[i - nch] <= 127 for i in range(nch, len(vals)))
    elif flags & sp.FLAG_DELTA and ns > 1:  # fallback happened because a difference does not fit
        assert any(not -128 <= vals[i] - vals[i - nch] <= 127 for i in range(nch, len(vals)))
    expect = [v * schema.scales[i % nch] + schema.offsets[i % nch] for i, v in enumerate(vals)]
    assert f.fields["values"] == pytest.approx(expect)
    block = decode_data(frame, schema)
    assert block.raw.reshape(-1).tolist() == vals
    assert block.values.dtype == np.float32 and block.values.shape == (ns, nch)
    np.testing.assert_allclose(block.values.reshape(-1), np.asarray(expect, dtype=np.float32), rtol=1e-6, atol=1e-3)
    # re-encoding what was decoded gives the same bytes (one canonical encoding)
    again = DataEncoder(nch, ns, stype, schema.schema_id)
    again.encode(f.boot, f.seq, f.ticks, f.fields["period_us"], array(enc_code(stype), f.fields["raw"]), ns, f.flags)
    assert bytes(again.frame) == frame


def enc_code(stype: int) -> str:
    return "h" if stype == sp.ST_INT16 else "i"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=1, max_size=30), st.integers(2, 6))
def test_decode_data_many_matches_single_decodes(layouts: list[int], nch: int) -> None:
    """Mixed layouts and broken frames in one batch: each accepted frame equals its single decode."""
    schema = Schema(_channels(nch))
    enc = DataEncoder(nch, 8, schema_id=schema.schema_id)
    frames: list[bytes] = []
    broken: set[int] = set()
    for i, kind in enumerate(layouts):
        ns = 8 if kind != 1 else 3
        vals = array("h", [(i * 7 + j * 3) % 50 for j in range(nch * ns)])
        enc.encode(1, i, 100 * i, 1000, vals, ns, sp.FLAG_DELTA if kind == 2 else 0)
        frame = bytes(enc.frame)
        if kind == 3:
            frame = frame[:-1] + bytes([frame[-1] ^ 1])
            broken.add(i)
        frames.append(frame)
    errors: list[tuple[int, ProtocolError]] = []
    batches = decode_data_many(frames, schema, errors)
    assert sorted(i for i, _ in errors) == sorted(broken)
    assert all(e.reason == "crc" for _, e in errors)
    seen = []
    for batch in batches:
        assert batch.values.shape[0] == len(batch) == batch.raw.shape[0]
        for j, block in enumerate(batch):
            i = int(batch.index[j])
            seen.append(i)
            single = decode_data(frames[i], schema)
            assert block.seq == single.seq == i
            np.testing.assert_array_equal(block.raw, single.raw)
            np.testing.assert_array_equal(block.values, single.values)
    assert sorted(seen) == sorted(set(range(len(frames))) - broken)
    assert [b.seq for b in decode_blocks(frames, schema, [])] == sorted(seen)
    if broken:
        with pytest.raises(ProtocolError) as info:
            decode_data_many(frames, schema)
        assert info.value.reason == "crc"


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(NAME, st.text(max_size=4), FINITE, FINITE, st.sampled_from([1, 2]), st.floats(0, 1e6)),
        min_size=1,
        max_size=12,
    ),
    st.text(max_size=8),
    st.integers(16, 32),
)
def test_birth_roundtrip(channels: list[tuple[str, str, float, float, int, float]], fw: str, tick_bits: int) -> None:
    buf = bytearray(2048)
    n = encode_birth(buf, 3, 0, 99, fw, channels, tick_bits=tick_bits)
    f = decode(buf[:n])
    assert f.fields["fw_version"] == fw
    assert f.fields["tick_bits"] == tick_bits
    assert f.fields["channels"] == channels
    assert f.fields["schema_id"] == schema_id(channels) == schema_from_birth(f).schema_id
    assert schema_from_birth(bytes(buf[:n])).channels == channels


def test_schema_id_changes_with_any_channel_field() -> None:
    base = _channels(3)
    ids = {schema_id(base)}
    for k in range(6):
        changed = [list(c) for c in base]
        changed[1][k] = {0: "zz", 1: "V", 2: 9.0, 3: 4.0, 4: sp.ST_INT32, 5: 10.0}[k]
        ids.add(schema_id([tuple(c) for c in changed]))
    assert len(ids) == 7
    assert all(0 < i <= 0xFFFF for i in ids)


def test_stale_schema_is_refused_by_both_decoders() -> None:
    old, new = Schema(_channels(3)), Schema([*_channels(2), ("x", "V", 1.0, 0.0, 1, 1.0)])
    enc = DataEncoder(3, 4, schema_id=new.schema_id)
    enc.encode(1, 1, 1, 1000, array("h", range(12)), 4)
    with pytest.raises(SchemaMismatch):
        decode(enc.frame, old)
    with pytest.raises(SchemaMismatch):
        decode_data(bytes(enc.frame), old)
    errors: list[tuple[int, ProtocolError]] = []
    assert decode_data_many([bytes(enc.frame)], old, errors) == []
    assert errors[0][1].reason == "schema"
    assert decode(enc.frame, new).fields["raw"] == list(range(12))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 255), U32, st.integers(-(2**31), 2**31 - 1)), min_size=1, max_size=255))
def test_event_roundtrip(events: list[tuple[int, int, int]]) -> None:
    buf = bytearray(4096)
    n = encode_event(
        buf,
        1,
        2,
        3,
        sp.FLAG_HISTORICAL,
        bytearray(e[0] for e in events),
        array("I", [e[1] for e in events]),
        array("i", [e[2] for e in events]),
        len(events),
    )
    f = decode(buf[:n])
    assert f.fields["events"] == events and f.flags == sp.FLAG_HISTORICAL


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(-(2**40), 2**40), min_size=9, max_size=9))
def test_health_roundtrip_saturates(values: list[int]) -> None:
    buf = bytearray(64)
    kw = dict(zip(HEALTH_FIELDS, values, strict=True))
    n = encode_health(buf, 1, 2, 3, 0, **kw)
    f = decode(buf[:n])
    for name, v in kw.items():
        lo, hi = (-128, 127) if name == "rssi" else (0, 0xFFFF if name == "battery_mv" else 0xFFFFFFFF)
        assert f.fields[name] == min(max(v, lo), hi), name


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(U16, U32, U32).map(lambda t: (t[0], min(t[1], t[2]), max(t[1], t[2]))), max_size=255))
def test_ack_roundtrip(ranges: list[tuple[int, int, int]]) -> None:
    buf = bytearray(4096)
    n = encode_ack(buf, 9, 8, 7, ranges)
    f = decode(memoryview(buf)[:n])
    assert f.fields["ranges"] == ranges and (f.boot, f.seq, f.ticks) == (9, 8, 7)


def test_ack_rejects_reversed_range() -> None:
    with pytest.raises(BadField):
        encode_ack(bytearray(64), 1, 1, 1, [(1, 5, 4)])


@settings(max_examples=100, deadline=None)
@given(U32, st.integers(0, 0xFFFF), st.integers(0, 255), st.integers(0, 255), U32, U32)
def test_cmd_roundtrip(cmd_id: int, u16: int, out: int, val: int, dur: int, mhz: int) -> None:  # noqa: PLR0917
    buf = bytearray(256)
    cases = [
        (sp.CMD_SET_RATE, (mhz,), {"rate_mhz": mhz}),
        (sp.CMD_SET_BATCH, (u16,), {"batch": u16}),
        (sp.CMD_REBOOT, (), {}),
        (sp.CMD_RAW_BURST, (u16,), {"seconds": u16}),
        (sp.CMD_SET_OUTPUT, (out, val, dur), {"output": out, "value": val, "duration_ms": dur}),
        (sp.CMD_REBIRTH, (), {}),
        (sp.CMD_CONFIG, (json.dumps({"k": u16}),), {"config": {"k": u16}}),
    ]
    for op, args, want in cases:
        arg = cmd_arg(op, *args)
        n = encode_cmd(buf, 1, 2, 3, cmd_id, op, arg)
        f = decode(buf[:n])
        assert f.fields == {"cmd_id": cmd_id, "op": op, "arg": arg, **want}


def test_cmd_encoder_refuses_bad_arguments() -> None:
    buf = bytearray(64)
    with pytest.raises(BadField):
        encode_cmd(buf, 1, 1, 1, 1, 99)
    with pytest.raises(BadField):
        encode_cmd(buf, 1, 1, 1, 1, sp.CMD_SET_RATE, b"\x00")
    with pytest.raises(BadField):
        cmd_arg(sp.CMD_SET_BATCH, 70000)
    with pytest.raises(BadField):
        cmd_arg(sp.CMD_REBOOT, 1)


def test_death_is_header_only() -> None:
    buf = bytearray(17)
    assert encode_death(buf, 5, 6, 7) == 17
    f = decode(buf)
    assert (f.kind, f.boot, f.seq, f.ticks, f.fields) == ("death", 5, 6, 7, {})


def test_encoders_refuse_small_buffers_and_bad_sizes() -> None:
    with pytest.raises(BadField):
        encode_death(bytearray(10), 1, 1, 1)
    with pytest.raises(BadField):
        encode_birth(bytearray(20), 1, 1, 1, "1", _channels(2))
    enc = DataEncoder(2, 4)
    with pytest.raises(BadField):
        enc.encode(1, 1, 1, 1000, array("h", range(8)), 5)
    with pytest.raises(BadField):
        enc.encode(1, 1, 1, 1000, array("h", range(6)), 4)
    with pytest.raises(BadField):
        DataEncoder(0, 4)
    with pytest.raises(BadField):
        encode_birth(bytearray(512), 1, 1, 1, "1", [("", "u", 1.0, 0.0, 1, 1.0)])
    with pytest.raises(BadField):
        encode_birth(bytearray(512), 1, 1, 1, "1", [("a", "u", float("nan"), 0.0, 1, 1.0)])


def test_board_constants_mirror_package_constants() -> None:
    """encode.py inlines private const() copies of the public constants."""
    text = Path(enc_mod.__file__ or "").read_text(encoding="utf-8")
    dec_text = (Path(enc_mod.__file__ or "").parent / "decode.py").read_text(encoding="utf-8")
    pairs = {
        "_VERSION": sp.PROTOCOL_VERSION,
        "_BIRTH": sp.BIRTH,
        "_DATA": sp.DATA,
        "_EVENT": sp.EVENT,
        "_HEALTH": sp.HEALTH,
        "_DEATH": sp.DEATH,
        "_ST_INT16": sp.ST_INT16,
        "_ST_INT32": sp.ST_INT32,
        "_ST_FLOAT32": sp.ST_FLOAT32,
        "_FLAG_DELTA": sp.FLAG_DELTA,
    }
    for name, value in pairs.items():
        assert f"{name} = const({value})" in text, name
    for name in dir(sp):
        if name.isupper() and f"_{name} = const(" in dec_text:
            assert f"_{name} = const({getattr(sp, name)})" in dec_text, name
