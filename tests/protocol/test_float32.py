"""ST_FLOAT32 DATA frames: every float32 value arrives bit-exact through both decoders, and
float32 samples are never delta-coded (the encoder writes them plain, decoders refuse the flag)."""

from __future__ import annotations

from array import array

import numpy as np
import pytest

from shared_protocol import FLAG_DELTA, ST_FLOAT32
from shared_protocol.decode import Schema, decode, schema_from_birth
from shared_protocol.encode import DataEncoder, encode_birth, schema_id
from shared_protocol.errors import BadField, BadFlags, ProtocolError
from shared_protocol.header import seal
from shared_protocol.np_decode import decode_data, decode_data_many

CHANNELS = [("a", "g", 1.0, 0.0, ST_FLOAT32, 100.0), ("b", "deg/s", 1.0, 0.0, ST_FLOAT32, 100.0)]


def _schema() -> Schema:
    buf = bytearray(256)
    n = encode_birth(buf, 1, 0, 5, "x", CHANNELS)
    return schema_from_birth(bytes(buf[:n]))


def _values() -> np.ndarray:
    rng = np.random.default_rng(7)
    v = (rng.standard_normal(64) * np.logspace(-30, 30, 64)).astype(np.float32)
    v[:4] = np.array([0.0, -0.0, 1.0 / 131, np.finfo(np.float32).tiny / 8], np.float32)  # a subnormal too
    return v.reshape(32, 2)


def test_float32_values_arrive_bit_exact() -> None:
    schema = _schema()
    v = _values()
    enc = DataEncoder(2, 32, ST_FLOAT32, schema_id(CHANNELS))
    samples = array("f")
    samples.frombytes(v.tobytes())
    n = enc.encode(1, 1, 100, 10_000, samples, 32, FLAG_DELTA)  # asked for delta: written plain
    frame = bytes(enc.frame[:n])
    assert n == 27 + 32 * 2 * 4 and frame[2] & FLAG_DELTA == 0
    assert enc.plain_frames == 1 and enc.delta_frames == 0
    plain = np.asarray(decode(frame, schema).fields["raw"], dtype=np.float32).reshape(32, 2)
    assert plain.tobytes() == v.tobytes()
    assert decode_data(frame, schema).values.tobytes() == v.tobytes()
    (batch,) = decode_data_many([frame, frame], schema)
    assert batch.values.tobytes() == np.stack([v, v]).tobytes()


def test_float32_frame_with_delta_flag_is_refused() -> None:
    schema = _schema()
    enc = DataEncoder(2, 32, ST_FLOAT32, schema_id(CHANNELS))
    samples = array("f", [1.0] * 64)
    n = enc.encode(1, 1, 100, 10_000, samples, 32)
    forged = bytearray(enc.frame[:n])
    forged[2] |= FLAG_DELTA
    seal(forged, n - 4)
    with pytest.raises(BadFlags):
        decode(bytes(forged), schema)
    with pytest.raises(BadFlags):
        decode_data(bytes(forged), schema)
    errors: list[tuple[int, ProtocolError]] = []
    assert decode_data_many([bytes(forged)], schema, errors) == []
    assert len(errors) == 1 and isinstance(errors[0][1], BadFlags)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_float32_sample_is_refused(bad: float) -> None:
    schema = _schema()
    enc = DataEncoder(2, 4, ST_FLOAT32, schema_id(CHANNELS))
    enc.encode(1, 1, 100, 10_000, array("f", [1.0] * 8), 4)
    good = bytes(enc.frame)
    values = [1.0] * 8
    values[5] = bad
    enc.encode(1, 2, 140, 10_000, array("f", values), 4)
    frame = bytes(enc.frame)
    with pytest.raises(BadField, match="non-finite float32 sample"):
        decode(frame, schema)
    with pytest.raises(BadField, match="non-finite float32 sample"):
        decode_data(frame, schema)
    errors: list[tuple[int, ProtocolError]] = []
    (batch,) = decode_data_many([good, frame, good], schema, errors)
    assert batch.index.tolist() == [0, 2] and [i for i, _ in errors] == [1]
