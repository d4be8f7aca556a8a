"""What a board runs on the frames the gateway sends: gw_decode.parse (ACK, CMD) and
cmd_args.arg_values (the argument of each op), checked against the golden vectors and the
full decoder, which reads ACK and CMD with the same code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import shared_protocol as sp
from shared_protocol.cmd_args import CMD_ARGS, arg_size, arg_values
from shared_protocol.decode import decode
from shared_protocol.errors import ProtocolError
from shared_protocol.gw_decode import parse
from shared_protocol.gw_encode import cmd_arg

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
FRAMES: list[dict[str, Any]] = json.loads((VECTORS / "frames.json").read_text())["frames"]
REJECTS: list[dict[str, Any]] = json.loads((VECTORS / "rejects.json").read_text())["rejects"]


@pytest.mark.parametrize("case", [c for c in FRAMES if c["encoder"] in ("ack", "cmd")], ids=lambda c: c["name"])
def test_parse_reads_what_decode_reads(case: dict[str, Any]) -> None:
    frame = bytes.fromhex(case["hex"])
    ftype, payload = parse(frame)
    full = decode(frame)
    assert ftype == full.type
    if ftype == sp.ACK:
        assert payload == full.fields["ranges"]
        return
    assert isinstance(payload, tuple)
    cmd_id, op, arg = payload
    assert (cmd_id, op, arg) == (full.fields["cmd_id"], full.fields["op"], full.fields["arg"])
    values = arg_values(op, arg)
    spec = CMD_ARGS[op]
    if spec is None:
        assert values is None and op in (sp.CMD_CONFIG, sp.CMD_RESEND)
    else:
        assert values == tuple(full.fields[name] for name in spec[1])
        assert cmd_arg(op, *values) == arg  # the encoder reads the same table


# Length and range errors a board sees in parse(); op and argument errors in arg_values().
_LAYOUT = ("ack_reversed_range", "ack_count_mismatch", "cmd_arg_len_past_end")
_ARGUMENT = ("cmd_unknown_op", "cmd_wrong_arg_size")


@pytest.mark.parametrize("case", [c for c in REJECTS if c["name"] in _LAYOUT + _ARGUMENT], ids=lambda c: c["name"])
def test_a_board_rejects_with_the_decoders_reason(case: dict[str, Any]) -> None:
    frame = bytes.fromhex(case["hex"])
    with pytest.raises(ProtocolError) as err:
        if case["name"] in _LAYOUT:
            parse(frame)
        else:
            _ftype, payload = parse(frame)
            assert isinstance(payload, tuple)
            arg_values(payload[1], payload[2])
    assert err.value.reason == case["reason"]


def test_parse_refuses_device_frames() -> None:
    data = bytes.fromhex(next(c["hex"] for c in FRAMES if c["encoder"] == "data"))
    with pytest.raises(ProtocolError) as err:
        parse(data)
    assert err.value.reason == "field"


def test_table_covers_every_op() -> None:
    ops = {getattr(sp, n) for n in dir(sp) if n.startswith("CMD_")}
    assert set(CMD_ARGS) == ops
    assert [arg_size(op) for op in sorted(ops)] == [4, 2, 0, 2, 6, 0, None, None, None]
