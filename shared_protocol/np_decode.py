"""Vectorised DATA decoding with numpy (CPython gateway hot path).

decode_data() decodes one frame; decode_data_many() checks a list of frames
(CRC per frame, every other check vectorised) and decodes all frames of the
same layout with one np.frombuffer over their concatenation. Both return
float32 physical values (raw * scale + offset) of shape (nsamples, nchannels)
per frame. Every rejected frame gets the same ProtocolError the plain decoder
(decode.py) would raise for it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from zlib import crc32

import numpy as np
import numpy.typing as npt

from shared_protocol import DATA, FLAG_DELTA, FLAGS_KNOWN, PROTOCOL_VERSION, ST_INT16, ST_INT32
from shared_protocol.decode import Schema, decode
from shared_protocol.decode_device import data_layout
from shared_protocol.errors import BadField, ProtocolError, UnknownFrameType

__all__ = ["DataBatch", "DataBlock", "decode_blocks", "decode_data", "decode_data_many"]

Buffer = bytes | bytearray | memoryview

_PREFIX = struct.Struct("<BBBHIIIBBHH")  # header + DATA fixed fields (23 bytes)
_PREFIX_SIZE = 23
_CRC = struct.Struct("<I")
_DTYPES: dict[int, np.dtype[Any]] = {ST_INT16: np.dtype("<i2"), ST_INT32: np.dtype("<i4")}
_LIMITS = {ST_INT16: (-32768, 32767), ST_INT32: (-(2**31), 2**31 - 1)}
_PREFIX_DTYPE = np.dtype(
    [
        ("version", "u1"),
        ("type", "u1"),
        ("flags", "u1"),
        ("boot", "<u2"),
        ("seq", "<u4"),
        ("ticks", "<u4"),
        ("period_us", "<u4"),
        ("nch", "u1"),
        ("stype", "u1"),
        ("nsamples", "<u2"),
        ("schema_id", "<u2"),
    ]
)


@dataclass(frozen=True)
class DataBlock:
    """One decoded DATA frame. values: float32 (nsamples, nchannels)."""

    boot: int
    seq: int
    ticks: int
    flags: int
    period_us: int
    values: npt.NDArray[np.float32]
    raw: npt.NDArray[np.signedinteger[Any]]

    @property
    def nsamples(self) -> int:
        return int(self.values.shape[0])

    @property
    def nchannels(self) -> int:
        return int(self.values.shape[1])


@dataclass(frozen=True)
class DataBatch:
    """Frames of one layout decoded together.

    index: position of each frame in the list given to decode_data_many;
    boot/seq/ticks/flags/period_us: per-frame header arrays, shape (F,);
    values: float32 (F, nsamples, nchannels); raw: int16/int32 same shape.
    """

    index: npt.NDArray[np.intp]
    boot: npt.NDArray[np.uint16]
    seq: npt.NDArray[np.uint32]
    ticks: npt.NDArray[np.uint32]
    flags: npt.NDArray[np.uint8]
    period_us: npt.NDArray[np.uint32]
    values: npt.NDArray[np.float32]
    raw: npt.NDArray[np.signedinteger[Any]]

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def __iter__(self) -> Iterator[DataBlock]:
        for i in range(len(self)):
            yield self.block(i)

    def block(self, i: int) -> DataBlock:
        return DataBlock(
            boot=int(self.boot[i]),
            seq=int(self.seq[i]),
            ticks=int(self.ticks[i]),
            flags=int(self.flags[i]),
            period_us=int(self.period_us[i]),
            values=self.values[i],
            raw=self.raw[i],
        )


def _scale_arrays(schema: Schema) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    cached = getattr(schema, "_np_scale", None)
    if cached is None:
        cached = (
            np.asarray(schema.scales, dtype=np.float32),
            np.asarray(schema.offsets, dtype=np.float32),
        )
        schema._np_scale = cached  # type: ignore[attr-defined]  # cache on the board-side class
    return cached


def _physical(raw: npt.NDArray[Any], schema: Schema) -> npt.NDArray[np.float32]:
    scales, offsets = _scale_arrays(schema)
    values = raw.astype(np.float32)
    values *= scales
    values += offsets
    return values


def _check_crc(frame: Buffer) -> bool:
    n = len(frame)
    if n < _PREFIX_SIZE + 4:
        return False
    stored: int = _CRC.unpack_from(frame, n - 4)[0]
    return crc32(memoryview(frame)[: n - 4]) == stored


def decode_data(frame: Buffer, schema: Schema) -> DataBlock:
    """Decode one DATA frame against schema; raises a ProtocolError subclass."""
    if len(frame) < _PREFIX_SIZE + 4 or not _check_crc(frame):
        decode(frame, schema)  # raises the specific error (truncated, crc, ...)
        raise BadField("frame rejected")  # pragma: no cover - decode() raised
    version, ftype, flags, boot, seq, ticks, period_us, nch, stype, ns, sid = _PREFIX.unpack_from(frame, 0)
    if version != PROTOCOL_VERSION or ftype != DATA or flags & ~FLAGS_KNOWN or ns == 0 or nch == 0:
        if version == PROTOCOL_VERSION and 1 <= ftype <= 7 and ftype != DATA:
            raise UnknownFrameType("decode_data got a frame of type %d, not DATA" % ftype, "type")
        decode(frame, schema)
        raise BadField("frame rejected")  # pragma: no cover
    width, want = data_layout(nch, stype, ns, flags)
    if len(frame) != want or (ns > 1 and period_us == 0):
        decode(frame, schema)
        raise BadField("frame rejected")  # pragma: no cover
    schema.check(nch, sid)
    dtype = _DTYPES[stype]
    if flags & FLAG_DELTA:
        first = np.frombuffer(frame, dtype=dtype, count=nch, offset=_PREFIX_SIZE)
        deltas = np.frombuffer(frame, dtype=np.int8, count=(ns - 1) * nch, offset=_PREFIX_SIZE + nch * width)
        acc = np.empty((ns, nch), dtype=np.int64)
        acc[0] = first
        acc[1:] = deltas.reshape(ns - 1, nch)
        np.cumsum(acc, axis=0, out=acc)
        lo, hi = _LIMITS[stype]
        if acc.min() < lo or acc.max() > hi:
            raise BadField("delta-coded DATA leaves the sample range")
        raw = acc.astype(dtype)
    else:
        raw = np.frombuffer(frame, dtype=dtype, count=ns * nch, offset=_PREFIX_SIZE).reshape(ns, nch)
    return DataBlock(boot, seq, ticks, flags, period_us, _physical(raw, schema), raw)


def _reject(frame: Buffer, schema: Schema) -> ProtocolError:
    """The specific error for a frame the vectorised checks refused."""
    try:
        decode_data(frame, schema)
    except ProtocolError as exc:
        return exc
    return BadField("frame rejected by the vectorised checks")  # pragma: no cover


def decode_data_many(
    frames: Sequence[Buffer],
    schema: Schema,
    errors: list[tuple[int, ProtocolError]] | None = None,
) -> list[DataBatch]:
    """Decode many DATA frames of one device/schema.

    Returns one DataBatch per frame layout (usually exactly one), ordered by
    the first frame index of each. Rejected frames are appended to `errors` as
    (index, ProtocolError) and skipped; with errors=None the first rejection is
    raised instead.
    """
    by_len: dict[int, list[int]] = {}
    bad: list[int] = []
    for i, f in enumerate(frames):
        n = len(f)
        if n >= _PREFIX_SIZE + 4 and crc32(memoryview(f)[: n - 4]) == _CRC.unpack_from(f, n - 4)[0]:
            lst = by_len.get(n)
            if lst is None:
                by_len[n] = [i]
            else:
                lst.append(i)
        else:
            bad.append(i)
    batches: list[DataBatch] = []
    nch = schema.nchannels
    for n, idx in by_len.items():
        joined = b"".join([frames[i] for i in idx])
        rec = np.frombuffer(joined, dtype=np.dtype({"names": ["p"], "formats": [_PREFIX_DTYPE], "itemsize": n}))
        p = rec["p"]
        ok = (
            (p["version"] == PROTOCOL_VERSION)
            & (p["type"] == DATA)
            & ((p["flags"] & ~np.uint8(FLAGS_KNOWN)) == 0)
            & (p["nch"] == nch)
            & ((p["schema_id"] == 0) | (p["schema_id"] == schema.schema_id))
            & (p["nsamples"] > 0)
            & (((p["flags"] & FLAG_DELTA) == 0) | (p["nsamples"] > 1))
            & ((p["period_us"] > 0) | (p["nsamples"] == 1))
        )
        idx_arr = np.asarray(idx, dtype=np.intp)
        done = np.zeros(len(idx), dtype=bool)
        key = (
            (p["flags"] & FLAG_DELTA).astype(np.uint32) << 24
            | p["stype"].astype(np.uint32) << 16
            | p["nsamples"].astype(np.uint32)
        )
        for k in np.unique(key[ok]).tolist():
            delta = bool(k >> 24)
            stype = (k >> 16) & 0xFF
            ns = k & 0xFFFF
            if stype not in _DTYPES or data_layout(nch, stype, ns, FLAG_DELTA if delta else 0)[1] != n:
                continue  # these rows stay "not done" and get their specific error below
            sel = ok & (key == k)
            rows = np.flatnonzero(sel)
            batch, good = _decode_group(joined, n, p, rows, idx_arr, schema, stype, ns, delta)
            done[rows[good]] = True
            if batch is not None:
                batches.append(batch)
        bad.extend(idx_arr[~done].tolist())
    if bad:
        bad.sort()
        if errors is None:
            raise _reject(frames[bad[0]], schema)
        for i in bad:
            errors.append((i, _reject(frames[i], schema)))
    batches.sort(key=lambda b: int(b.index[0]))
    return batches


def _decode_group(  # noqa: PLR0917
    joined: bytes,
    n: int,
    p: npt.NDArray[Any],
    rows: npt.NDArray[np.intp],
    idx_arr: npt.NDArray[np.intp],
    schema: Schema,
    stype: int,
    ns: int,
    delta: bool,
) -> tuple[DataBatch | None, npt.NDArray[np.bool_]]:
    """Decode the frames at `rows` (all of length n and one layout)."""
    nch = schema.nchannels
    dtype = _DTYPES[stype]
    width = dtype.itemsize
    if delta:
        rec_dtype = np.dtype(
            {
                "names": ["first", "d"],
                "formats": [(dtype, (nch,)), (np.int8, ((ns - 1) * nch,))],
                "offsets": [_PREFIX_SIZE, _PREFIX_SIZE + nch * width],
                "itemsize": n,
            }
        )
        rec = np.frombuffer(joined, dtype=rec_dtype)[rows]
        acc = np.empty((len(rows), ns, nch), dtype=np.int64)
        acc[:, 0, :] = rec["first"]
        acc[:, 1:, :] = rec["d"].reshape(len(rows), ns - 1, nch)
        np.cumsum(acc, axis=1, out=acc)
        lo, hi = _LIMITS[stype]
        good = (acc.min(axis=(1, 2)) >= lo) & (acc.max(axis=(1, 2)) <= hi)
        raw = acc[good].astype(dtype)
    else:
        rec_dtype = np.dtype(
            {"names": ["s"], "formats": [(dtype, (ns, nch))], "offsets": [_PREFIX_SIZE], "itemsize": n}
        )
        all_rec = np.frombuffer(joined, dtype=rec_dtype)
        raw = all_rec["s"] if len(rows) == len(all_rec) else all_rec["s"][rows]
        good = np.ones(len(rows), dtype=bool)
    keep = rows[good]
    if len(keep) == 0:
        return None, good
    hp = p[keep]
    batch = DataBatch(
        index=idx_arr[keep],
        boot=hp["boot"],
        seq=hp["seq"],
        ticks=hp["ticks"],
        flags=hp["flags"],
        period_us=hp["period_us"],
        values=_physical(raw, schema),
        raw=raw,
    )
    return batch, good


def decode_blocks(
    frames: Sequence[Buffer],
    schema: Schema,
    errors: list[tuple[int, ProtocolError]] | None = None,
) -> list[DataBlock]:
    """decode_data_many() flattened to one DataBlock per accepted frame, in input order."""
    blocks: list[tuple[int, DataBlock]] = []
    for batch in decode_data_many(frames, schema, errors):
        for j in range(len(batch)):
            blocks.append((int(batch.index[j]), batch.block(j)))
    blocks.sort(key=lambda t: t[0])
    return [b for _, b in blocks]
