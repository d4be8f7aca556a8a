"""Generate the golden vectors in tests/vectors/ from the real encoder.

    .venv/bin/python -m tools.gen_vectors          # rewrite tests/vectors/*.json
    .venv/bin/python -m tools.gen_vectors --check  # exit 1 if the files differ

frames.json: valid frames, each with the encoder call ("encoder", "args"), the
fields the decoder must return and the frame's hex. rejects.json: broken
frames with the ProtocolError reason a decoder must give. Both are checked on
CPython and on the MicroPython unix port (tests/upy/test_protocol_vectors.py).
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zlib import crc32

import shared_protocol as sp
from shared_protocol import (
    FLAG_DELTA,
    FLAG_HISTORICAL,
    LOSS_GONE,
    LOSS_UNSAVED,
    ST_INT16,
    ST_INT32,
)
from shared_protocol.config_change import APPLIED, ack_events, change_arg
from shared_protocol.decode import HEALTH_FIELDS, Schema, decode
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
from shared_protocol.repair import encode_loss

ROOT = Path(__file__).resolve().parents[1]
VECTOR_DIR = ROOT / "tests" / "vectors"

CHANNELS: list[list[Any]] = [
    ["ax", "m/s2", 0.001, 0.0, ST_INT16, 50.0],
    ["ay", "m/s2", 0.001, 0.0, ST_INT16, 50.0],
    ["az", "m/s2", 0.001, -9.81, ST_INT16, 50.0],
    ["gx", "deg/s", 0.0625, 0.0, ST_INT16, 50.0],
    ["temp", "degC", 0.01, 25.0, ST_INT16, 50.0],
    ["flow", "l/min", 0.5, 0.0, ST_INT16, 50.0],
]
SCHEMA_ID = schema_id(CHANNELS)
DEVICE = {"boot": 7, "seq": 0, "ticks": 1073741000}  # close to the 2**30 wrap


def _json_fields(fields: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in fields.items():
        if isinstance(v, bytes):
            out[k] = {"hex": v.hex()}
        elif isinstance(v, list):
            out[k] = [list(x) if isinstance(x, tuple) else x for x in v]
        else:
            out[k] = v
    return out


def _data_samples(nch: int, ns: int, step: int, base: int = 0) -> list[int]:
    vals = []
    for s in range(ns):
        for c in range(nch):
            vals.append(base + (s * step * (c + 1)) % 200 - 100 + c * 1000)
    return vals


def _frame_case(name: str, encoder: str, args: dict[str, Any], frame: bytes, schema: Schema | None) -> dict[str, Any]:
    f = decode(frame, schema)
    return {
        "name": name,
        "encoder": encoder,
        "args": args,
        "schema": CHANNELS if schema is not None else None,
        "header": {
            "version": f.version,
            "type": f.type,
            "flags": f.flags,
            "boot": f.boot,
            "seq": f.seq,
            "ticks": f.ticks,
        },
        "fields": _json_fields(f.fields),
        "hex": frame.hex(),
    }


def build_frames() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = []
    schema = Schema(CHANNELS)
    buf = bytearray(2048)
    b, t = DEVICE["boot"], DEVICE["ticks"]

    args: dict[str, Any] = {
        "boot": b,
        "seq": 0,
        "ticks": t,
        "fw_version": "0.3.1",
        "channels": CHANNELS,
        "tick_bits": 30,
    }
    n = encode_birth(buf, b, 0, t, "0.3.1", [tuple(c) for c in CHANNELS], tick_bits=30)
    cases.append(_frame_case("birth_6ch", "birth", args, bytes(buf[:n]), None))

    def data(  # noqa: PLR0917
        name: str, seq: int, ns: int, samples: list[int], flags: int, stype: int = ST_INT16, sid: int = SCHEMA_ID
    ) -> None:
        enc = DataEncoder(6, max(ns, 4), sample_type=stype, schema_id=sid)
        arr = array("h" if stype == ST_INT16 else "i", samples)
        length = enc.encode(b, seq, t + seq * 80, 20000, arr, ns, flags)
        a = {
            "nchannels": 6,
            "max_samples": max(ns, 4),
            "sample_type": stype,
            "schema_id": sid,
            "boot": b,
            "seq": seq,
            "ticks": t + seq * 80,
            "period_us": 20000,
            "samples": samples,
            "nsamples": ns,
            "flags": flags,
        }
        cases.append(_frame_case(name, "data", a, bytes(enc.buf[:length]), schema))

    data("data_plain_4x6", 1, 4, _data_samples(6, 4, 7), 0)
    data("data_delta_4x6", 2, 4, _data_samples(6, 4, 7), FLAG_DELTA)
    data("data_delta_fallback_4x6", 3, 4, _data_samples(6, 4, 60), FLAG_DELTA)
    data("data_historical_1x6", 4, 1, [-32768, 32767, 0, 1, -1, 12345], FLAG_HISTORICAL | FLAG_DELTA)
    data("data_int32_2x6", 5, 2, [2**31 - 1, -(2**31), 70000, -70000, 0, 5] * 2, 0, ST_INT32)
    data("data_no_schema_id_2x6", 6, 2, list(range(12)), 0, ST_INT16, 0)

    ev_ch, ev_t, ev_v = [1, 5, 0], [t + 5, t + 900, 3], [1, -2, 2**31 - 1]
    n = encode_event(buf, b, 7, t + 900, 0, bytearray(ev_ch), array("I", ev_t), array("i", ev_v), 3)
    cases.append(
        _frame_case(
            "event_3",
            "event",
            {
                "boot": b,
                "seq": 7,
                "ticks": t + 900,
                "flags": 0,
                "channels": ev_ch,
                "times": ev_t,
                "values": ev_v,
                "n": 3,
            },
            bytes(buf[:n]),
            schema,
        )
    )
    # a configuration acknowledgement: status codes 0xF0.. in the channel byte (config_change.py)
    pairs = ack_events(1234, APPLIED, (50, 32, 30))
    ack_ch, ack_v = [c for c, _ in pairs], [v for _, v in pairs]
    ack_t = [t + 950] * len(pairs)
    n = encode_event(buf, b, 10, t + 950, 0, bytearray(ack_ch), array("I", ack_t), array("i", ack_v), len(pairs))
    cases.append(
        _frame_case(
            "event_config_ack",
            "event",
            {
                "boot": b,
                "seq": 10,
                "ticks": t + 950,
                "flags": 0,
                "channels": ack_ch,
                "times": ack_t,
                "values": ack_v,
                "n": len(pairs),
            },
            bytes(buf[:n]),
            schema,
        )
    )
    h = {
        "uptime_s": 86400,
        "free_heap": 104000,
        "rssi": -67,
        "battery_mv": 3712,
        "queue_depth": 12,
        "dropped_frames": 3,
        "irq_overruns": 1,
        "worst_latency_us": 412,
        "jitter_us": 950,
    }
    n = encode_health(buf, b, 8, t + 1000, FLAG_HISTORICAL, **h)
    cases.append(
        _frame_case(
            "health",
            "health",
            {"boot": b, "seq": 8, "ticks": t + 1000, "flags": FLAG_HISTORICAL, **h},
            bytes(buf[:n]),
            None,
        )
    )
    n = encode_death(buf, b, 9, 5)
    cases.append(_frame_case("death", "death", {"boot": b, "seq": 9, "ticks": 5}, bytes(buf[:n]), None))
    ranges = [[7, 0, 41], [6, 100, 100]]
    n = encode_ack(buf, 3, 55, 123456, [(r[0], r[1], r[2]) for r in ranges])
    cases.append(
        _frame_case("ack_2", "ack", {"boot": 3, "seq": 55, "ticks": 123456, "ranges": ranges}, bytes(buf[:n]), None)
    )
    n = encode_ack(buf, 3, 56, 123457, [])
    cases.append(
        _frame_case("ack_empty", "ack", {"boot": 3, "seq": 56, "ticks": 123457, "ranges": []}, bytes(buf[:n]), None)
    )
    cmds: list[tuple[str, int, bytes]] = [
        ("cmd_set_rate", sp.CMD_SET_RATE, cmd_arg(sp.CMD_SET_RATE, 100000)),
        ("cmd_set_batch", sp.CMD_SET_BATCH, cmd_arg(sp.CMD_SET_BATCH, 64)),
        ("cmd_reboot", sp.CMD_REBOOT, b""),
        ("cmd_raw_burst", sp.CMD_RAW_BURST, cmd_arg(sp.CMD_RAW_BURST, 10)),
        ("cmd_set_output", sp.CMD_SET_OUTPUT, cmd_arg(sp.CMD_SET_OUTPUT, 2, 1, 1500)),
        ("cmd_rebirth", sp.CMD_REBIRTH, b""),
        ("cmd_config", sp.CMD_CONFIG, cmd_arg(sp.CMD_CONFIG, '{"batch": 32, "rate_hz": 50}')),
        ("cmd_resend", sp.CMD_RESEND, cmd_arg(sp.CMD_RESEND, [(7, 42, 44), (6, 101, 130)])),
        ("cmd_config_change", sp.CMD_CONFIG, change_arg(1234, {"sample_rate_hz": 50, "batch": 32})),
    ]
    for i, (name, op, arg) in enumerate(cmds):
        n = encode_cmd(buf, 3, 60 + i, 200000 + i, 1000 + i, op, arg)
        a = {"boot": 3, "seq": 60 + i, "ticks": 200000 + i, "cmd_id": 1000 + i, "op": op, "arg": {"hex": arg.hex()}}
        cases.append(_frame_case(name, "cmd", a, bytes(buf[:n]), None))
    losses = [[7, 43, 43, LOSS_GONE], [6, 120, 135, LOSS_UNSAVED]]
    n = encode_loss(buf, 8, 12, 4321, [(r[0], r[1], r[2], r[3]) for r in losses])
    cases.append(
        _frame_case("loss_2", "loss", {"boot": 8, "seq": 12, "ticks": 4321, "ranges": losses}, bytes(buf[:n]), None)
    )
    return cases


def _reseal(body: bytes) -> bytes:
    """body + a correct CRC: makes frames that only the later checks can refuse."""
    return body + struct.pack("<I", crc32(body))


def build_rejects(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by = {c["name"]: bytes.fromhex(c["hex"]) for c in frames}
    plain = by["data_plain_4x6"]
    delta = by["data_delta_4x6"]
    health = by["health"]
    birth = by["birth_6ch"]
    one = by["data_historical_1x6"]
    out: list[tuple[str, bytes, str, bool]] = [
        ("empty", b"", "truncated", False),
        ("short_16", plain[:16], "truncated", False),
        ("bit_flip_payload", plain[:30] + bytes([plain[30] ^ 0x04]) + plain[31:], "crc", False),
        ("bit_flip_crc", plain[:-1] + bytes([plain[-1] ^ 0x80]), "crc", False),
        ("cut_tail", plain[:-6], "crc", False),
        ("version_2", _reseal(b"\x02" + plain[1:-4]), "version", False),
        ("version_0", _reseal(b"\x00" + plain[1:-4]), "version", False),
        ("type_0", _reseal(plain[:1] + b"\x00" + plain[2:-4]), "type", False),
        ("type_9", _reseal(plain[:1] + b"\x09" + plain[2:-4]), "type", False),
        ("unknown_flag", _reseal(plain[:2] + b"\x80" + plain[3:-4]), "flags", False),
        ("delta_flag_on_health", _reseal(health[:2] + b"\x02" + health[3:-4]), "flags", False),
        ("historical_flag_on_ack", _reseal(by["ack_2"][:2] + b"\x01" + by["ack_2"][3:-4]), "flags", False),
        ("historical_flag_on_death", _reseal(by["death"][:2] + b"\x01" + by["death"][3:-4]), "flags", False),
        ("data_truncated_fixed", _reseal(plain[:20]), "truncated", False),
        ("data_short_samples", _reseal(plain[:-6]), "truncated", False),
        ("data_extra_bytes", _reseal(plain[:-4] + b"\x00\x00"), "length", False),
        ("data_zero_channels", _reseal(plain[:17] + b"\x00" + plain[18:-4]), "field", False),
        ("data_zero_samples", _reseal(plain[:19] + b"\x00\x00" + plain[21:-4]), "field", False),
        ("data_bad_sample_type", _reseal(plain[:18] + b"\x09" + plain[19:-4]), "field", False),
        ("data_zero_period", _reseal(plain[:13] + b"\x00\x00\x00\x00" + plain[17:-4]), "field", False),
        ("data_wrong_schema_id", _reseal(plain[:21] + b"\x34\x12" + plain[23:-4]), "schema", True),
        (
            "data_wrong_nchannels",
            _reseal(plain[:17] + b"\x03" + plain[18:19] + b"\x08\x00" + plain[21:-4]),
            "schema",
            True,
        ),
        ("delta_overflow", _reseal(delta[:23] + b"\xff\x7f" + delta[25:35] + b"\x7f" + delta[36:-4]), "field", False),
        ("delta_length", _reseal(delta[:-5]), "truncated", False),
        ("delta_one_sample", _reseal(one[:2] + b"\x03" + one[3:-4]), "flags", False),
        ("health_short", _reseal(health[:-6]), "truncated", False),
        ("health_long", _reseal(health[:-4] + b"\x00"), "length", False),
        ("birth_trailing", _reseal(birth[:-4] + b"\x00"), "length", False),
        ("birth_bad_schema_id", _reseal(birth[:20] + bytes([birth[20] ^ 1]) + birth[21:-4]), "field", False),
        ("birth_cut_table", _reseal(birth[:-20]), "field", False),
        ("birth_bad_utf8", _reseal(birth[:13] + b"\x02\xff\xfe" + birth[19:-4]), "field", False),
        ("event_zero", _reseal(by["event_3"][:13] + b"\x00"), "field", False),
        ("event_count_mismatch", _reseal(by["event_3"][:13] + b"\x04" + by["event_3"][14:-4]), "truncated", False),
        ("event_bad_channel", _reseal(by["event_3"][:14] + b"\x09" + by["event_3"][15:-4]), "schema", True),
        ("death_long", _reseal(by["death"][:-4] + b"\x00"), "length", False),
        (
            "ack_reversed_range",
            _reseal(by["ack_2"][:14] + b"\x07\x00" + struct.pack("<II", 9, 3) + by["ack_2"][24:-4]),
            "field",
            False,
        ),
        ("ack_count_mismatch", _reseal(by["ack_2"][:13] + b"\x03" + by["ack_2"][14:-4]), "truncated", False),
        ("cmd_unknown_op", _reseal(by["cmd_reboot"][:17] + b"\x63" + by["cmd_reboot"][18:-4]), "field", False),
        (
            "cmd_wrong_arg_size",
            _reseal(by["cmd_set_batch"][:17] + b"\x01" + by["cmd_set_batch"][18:-4]),
            "field",
            False,
        ),
        ("cmd_bad_json", _reseal(by["cmd_reboot"][:17] + b"\x07\x03\x00{x}"), "field", False),
        ("cmd_json_not_object", _reseal(by["cmd_reboot"][:17] + b"\x07\x02\x00[]"), "field", False),
        ("cmd_arg_len_past_end", _reseal(by["cmd_reboot"][:17] + b"\x03\x09\x00"), "truncated", False),
        ("cmd_resend_no_ranges", _reseal(by["cmd_reboot"][:17] + b"\x08\x01\x00\x00"), "field", False),
        (
            "cmd_resend_count_mismatch",
            _reseal(by["cmd_resend"][:20] + b"\x03" + by["cmd_resend"][21:-4]),
            "field",
            False,
        ),
        ("loss_zero", _reseal(by["loss_2"][:13] + b"\x00"), "field", False),
        ("loss_count_mismatch", _reseal(by["loss_2"][:13] + b"\x03" + by["loss_2"][14:-4]), "truncated", False),
        ("loss_long", _reseal(by["loss_2"][:-4] + b"\x00"), "length", False),
        ("loss_bad_reason", _reseal(by["loss_2"][:-5] + b"\x09"), "field", False),
        (
            "loss_reversed_range",
            _reseal(by["loss_2"][:16] + struct.pack("<II", 50, 43) + by["loss_2"][24:-4]),
            "field",
            False,
        ),
        ("historical_flag_on_loss", _reseal(by["loss_2"][:2] + b"\x01" + by["loss_2"][3:-4]), "flags", False),
    ]
    rejects = []
    for name, frame, reason, needs_schema in out:
        rejects.append({"name": name, "hex": frame.hex(), "reason": reason, "with_schema": needs_schema})
    return rejects


class _Cursor:
    """Walks a frame and collects (offset, hex, field, value) rows for the docs."""

    def __init__(self, frame: bytes) -> None:
        self.frame = frame
        self.pos = 0
        self.rows: list[tuple[int, str, str, str]] = []

    def take(self, fmt: str, field: str, show: Callable[[Any], str] = str) -> Any:
        size = struct.calcsize(fmt)
        value = struct.unpack_from(fmt, self.frame, self.pos)
        v = value[0] if len(value) == 1 else value
        self.rows.append((self.pos, self.frame[self.pos : self.pos + size].hex(" "), field, show(v)))
        self.pos += size
        return v

    def text(self, field: str) -> str:
        n = self.frame[self.pos]
        raw = self.frame[self.pos + 1 : self.pos + 1 + n]
        self.rows.append(
            (self.pos, self.frame[self.pos : self.pos + 1 + n].hex(" "), field, f"len {n}, {raw.decode()!r}")
        )
        self.pos += 1 + n
        return raw.decode()


TYPE_NAMES = {1: "BIRTH", 2: "DATA", 3: "EVENT", 4: "HEALTH", 5: "DEATH", 6: "ACK", 7: "CMD", 8: "LOSS"}


def annotate(frame: bytes) -> list[tuple[int, str, str, str]]:  # noqa: C901 (one branch per frame type)
    """Byte-by-byte breakdown of a valid frame (used for docs/protocol.md)."""
    c = _Cursor(frame)
    c.take("<B", "version")
    ftype = c.take("<B", "type", lambda v: f"{v} = {TYPE_NAMES[v]}")
    flags = c.take("<B", "flags", lambda v: f"0x{v:02x}")
    c.take("<H", "boot")
    c.take("<I", "seq")
    c.take("<I", "ticks", lambda v: f"{v} ms")
    if ftype == 2:
        c.take("<I", "period_us", lambda v: f"{v} us")
        nch = c.take("<B", "nchannels")
        st = c.take("<B", "sample_type", lambda v: f"{v} = {'int16' if v == 1 else 'int32'}")
        ns = c.take("<H", "nsamples")
        c.take("<H", "schema_id", lambda v: f"0x{v:04x}")
        code = "h" if st == 1 else "i"
        if flags & FLAG_DELTA:
            c.take(f"<{nch}{code}", "sample 0 (raw)", lambda v: ", ".join(map(str, v)))
            for s in range(1, ns):
                c.take(f"<{nch}b", f"sample {s} - sample {s - 1} (int8)", lambda v: ", ".join(map(str, v)))
        else:
            for s in range(ns):
                c.take(f"<{nch}{code}", f"sample {s} (c0..c{nch - 1})", lambda v: ", ".join(map(str, v)))
    elif ftype == 1:
        c.text("fw_version")
        c.take("<B", "tick_bits", lambda v: f"{v} (ticks wrap at 2**{v} ms)")
        c.take("<H", "schema_id", lambda v: f"0x{v:04x}")
        nch = c.take("<B", "nchannels")
        for i in range(nch):
            c.text(f"ch{i} name")
            c.text(f"ch{i} unit")
            c.take("<d", f"ch{i} scale (f64)", repr)
            c.take("<d", f"ch{i} offset (f64)", repr)
            c.take("<d", f"ch{i} rate_hz (f64)", repr)
            c.take("<B", f"ch{i} sample_type")
    elif ftype == 3:
        n = c.take("<B", "count")
        for i in range(n):
            c.take("<BIi", f"event {i}: channel, ticks, value", lambda v: ", ".join(map(str, v)))
    elif ftype == 4:
        for name, fmt in zip(HEALTH_FIELDS, "IIbHIIIII", strict=True):
            c.take("<" + fmt, "rssi (dBm)" if name == "rssi" else name)
    elif ftype == 6:
        n = c.take("<B", "count")
        for i in range(n):
            c.take("<HII", f"range {i}: boot, first_seq, last_seq", lambda v: ", ".join(map(str, v)))
    elif ftype == 8:
        n = c.take("<B", "count")
        for i in range(n):
            c.take("<HIIB", f"range {i}: boot, first, last, reason", lambda v: ", ".join(map(str, v)))
    elif ftype == 7:
        c.take("<I", "cmd_id")
        c.take("<B", "op")
        alen = c.take("<H", "arg_len")
        if alen:
            arg = frame[c.pos : c.pos + alen]
            c.rows.append((c.pos, arg.hex(" "), "arg", repr(arg)))
            c.pos += alen
    c.take("<I", "crc32", lambda v: f"0x{v:08x}")
    assert c.pos == len(frame), "annotation did not cover the frame"
    return c.rows


DOC_EXAMPLES = (
    ("data_plain_4x6", "DATA, plain int16: 6 channels x 4 samples"),
    ("data_delta_4x6", "DATA, FLAG_DELTA: the same samples delta-coded"),
    ("birth_6ch", "BIRTH: firmware 0.3.1, 6 channels (first channel shown in full)"),
    ("event_3", "EVENT: 3 interrupt events"),
    ("health", "HEALTH (flagged historical: replayed from the offline queue)"),
    ("death", "DEATH (the MQTT last will)"),
    ("ack_2", "ACK: two persisted ranges"),
    ("cmd_set_rate", "CMD: CMD_SET_RATE 100 Hz"),
    ("cmd_resend", "CMD: CMD_RESEND of two ranges"),
    ("cmd_config_change", "CMD: CMD_CONFIG, a configuration change"),
    ("event_config_ack", "EVENT: the acknowledgement of that change (status codes)"),
    ("loss_2", "LOSS: two ranges the device cannot send again"),
)
DOC_BEGIN = "<!-- BEGIN GENERATED EXAMPLES (python -m tools.gen_vectors) -->"
DOC_END = "<!-- END GENERATED EXAMPLES -->"
DOC_PATH = ROOT / "docs" / "protocol.md"


def render_examples(frames: list[dict[str, Any]]) -> str:
    by = {c["name"]: c for c in frames}
    out = [DOC_BEGIN, ""]
    for name, title in DOC_EXAMPLES:
        frame = bytes.fromhex(by[name]["hex"])
        out += [f"#### {title}", "", f"Vector `{name}` ({len(frame)} bytes):", "", "```", frame.hex(), "```", ""]
        out += ["| offset | bytes | field | value |", "|---|---|---|---|"]
        rows = annotate(frame)
        if name == "birth_6ch":  # keep the table short: header, fw, first channel, CRC
            first_ch1 = next(i for i, r in enumerate(rows) if r[2].startswith("ch1 "))
            rows = [*rows[:first_ch1], (rows[first_ch1][0], "...", "ch1 .. ch5", "same layout"), rows[-1]]
        for off, hx, field, value in rows:
            out.append(f"| {off} | `{hx}` | {field} | {value} |")
        out.append("")
    out.append(DOC_END)
    return "\n".join(out)


def render_doc(frames: list[dict[str, Any]]) -> str | None:
    """docs/protocol.md with its generated block replaced (None if the doc has no block)."""
    if not DOC_PATH.exists():
        return None
    text = DOC_PATH.read_text()
    if DOC_BEGIN not in text or DOC_END not in text:
        return None
    head, rest = text.split(DOC_BEGIN, 1)
    _, tail = rest.split(DOC_END, 1)
    return head + render_examples(frames) + tail


def render() -> dict[str, str]:
    frames = build_frames()
    rejects = build_rejects(frames)
    doc = {"schema_channels": CHANNELS, "schema_id": SCHEMA_ID, "frames": frames}
    out = {
        "frames.json": json.dumps(doc, indent=1, sort_keys=True) + "\n",
        "rejects.json": json.dumps({"schema_channels": CHANNELS, "rejects": rejects}, indent=1, sort_keys=True) + "\n",
    }
    doc_text = render_doc(frames)
    if doc_text is not None:
        out["../../docs/protocol.md"] = doc_text
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    opts = parser.parse_args(argv)
    status = 0
    for name, text in render().items():
        path = (VECTOR_DIR / name).resolve()
        if opts.check:
            if not path.exists() or path.read_text() != text:
                print(f"{path} is out of date: run python -m tools.gen_vectors")
                status = 1
        else:
            path.write_text(text)
            print(f"wrote {path}")
    return status


if __name__ == "__main__":
    sys.exit(main())
