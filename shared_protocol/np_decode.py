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

from shared_protocol import DATA, FLAG_DELTA, FLAGS_KNOWN, PROTOCOL_VERSION, ST_FLOAT32, ST_INT16, ST_INT32
from shared_protocol.decode import Schema, decode
from shared_protocol.decode_device import data_layout
from shared_protocol.errors import BadField, ProtocolError, UnknownFrameType

__all__ = ["DataBatch", "DataBlock", "decode_blocks", "decode_data", "decode_data_many"]

Buffer = bytes | bytearray | memoryview

_PREFIX = struct.Struct("<BBBHIIIBBHH")  # header + DATA fixed fields (23 bytes)
_PREFIX_SIZE = 23
_CRC = struct.Struct("<I")
_DTYPES: dict[int, np.dtype[Any]] = {ST_INT16: np.dtype("<i2"), ST_INT32: np.dtype("<i4"), ST_FLOAT32: np.dtype("<f4")}
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


def _scale_arrays(schema: Schema, ns: int = 1) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32] | None]:
    """Scales and offsets (None when all zero) tiled to ns samples: one multiply over whole
    frames runs far faster than broadcasting a handful of channels."""
    cache: dict[int, tuple[npt.NDArray[np.float32], npt.NDArray[np.float32] | None]] | None = getattr(
        schema, "_np_scale", None
    )
    if cache is None:
        cache = {}
        schema._np_scale = cache  # type: ignore[attr-defined]  # cache on the board-side class
    cached = cache.get(ns)
    if cached is None:
        scales = np.asarray(schema.scales, dtype=np.float32)
        offsets = np.asarray(schema.offsets, dtype=np.float32)
        cached = (np.tile(scales, ns), np.tile(offsets, ns) if offsets.any() else None)
        if len(cache) > 64:
            cache.clear()
        cache[ns] = cached
    return cached


def _physical(raw: npt.NDArray[Any], schema: Schema) -> npt.NDArray[np.float32]:
    """float32 raw * scale + offset, the same arithmetic whatever the shape of raw."""
    ns, nch = raw.shape[-2], raw.shape[-1]
    scales, offsets = _scale_arrays(schema, ns)
    values: npt.NDArray[np.float32] = raw.astype(np.float32)
    flat = values.reshape(-1, ns * nch)
    flat *= scales
    if offsets is not None:
        flat += offsets
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
        if stype == ST_FLOAT32 and not np.isfinite(raw).all():
            decode(frame, schema)
            raise BadField("frame rejected")  # pragma: no cover - decode() raised
    return DataBlock(boot, seq, ticks, flags, period_us, _physical(raw, schema), raw)


def _reject(frame: Buffer, schema: Schema) -> ProtocolError:
    """The specific error for a frame the vectorised checks refused."""
    try:
        decode_data(frame, schema)
    except ProtocolError as exc:
        return exc
    return BadField("frame rejected by the vectorised checks")  # pragma: no cover


_RecKey = tuple[int, int, int, int, bool]
_rec_dtypes: dict[_RecKey, np.dtype[Any]] = {}


def _rec_dtype(n: int, nch: int, stype: int, ns: int, delta: bool) -> np.dtype[Any]:
    """The record dtype of one frame layout (cached: building a dtype costs microseconds)."""
    key = (n, nch, stype, ns, delta)
    dt = _rec_dtypes.get(key)
    if dt is None:
        dtype = _DTYPES[stype]
        if delta:
            dt = np.dtype(
                {
                    "names": ["first", "d"],
                    "formats": [(dtype, (nch,)), (np.int8, ((ns - 1) * nch,))],
                    "offsets": [_PREFIX_SIZE, _PREFIX_SIZE + nch * dtype.itemsize],
                    "itemsize": n,
                }
            )
        else:
            dt = np.dtype({"names": ["s"], "formats": [(dtype, (ns, nch))], "offsets": [_PREFIX_SIZE], "itemsize": n})
        if len(_rec_dtypes) > 256:
            _rec_dtypes.clear()
        _rec_dtypes[key] = dt
    return dt


def _layout_fits(nch: int, stype: int, ns: int, delta: bool, n: int) -> bool:
    if stype not in _DTYPES or (delta and stype == ST_FLOAT32):
        return False  # the frame gets its specific error from the plain decoder
    return data_layout(nch, stype, ns, FLAG_DELTA if delta else 0)[1] == n


def _uniform(
    joined: bytes, pre: npt.NDArray[np.uint8], p: npt.NDArray[Any], n: int, schema: Schema
) -> tuple[int, int, bool] | None:
    """(stype, nsamples, delta) when every frame passes every header check with one layout
    (the usual case: the first frame checked in plain Python, the others against it with a
    few whole-column comparisons); None otherwise."""
    version, ftype, flags, _boot, _seq, _ticks, period_us, nch, stype, ns, sid = _PREFIX.unpack_from(joined, 0)
    delta = bool(flags & FLAG_DELTA)
    if (
        version != PROTOCOL_VERSION
        or ftype != DATA
        or flags & ~FLAGS_KNOWN
        or nch != schema.nchannels
        or ns == 0
        or (delta and ns < 2)
        or (ns > 1 and period_us == 0)
        or sid not in (0, schema.schema_id)
        or not _layout_fits(nch, stype, ns, delta, n)
    ):
        return None
    if len(pre) > 1:
        first = pre[0]
        # version, type (bytes 0-1) and nch, stype, nsamples (17-20) equal in every frame
        if not ((pre[:, 0:2] == first[0:2]).all() and (pre[:, 17:21] == first[17:21]).all()):
            return None
        fl = pre[:, 2]
        if ((fl & np.uint8(~FLAGS_KNOWN & 0xFF)) != 0).any() or (
            (fl & np.uint8(FLAG_DELTA)) != (flags & FLAG_DELTA)
        ).any():
            return None
        sids = p["schema_id"]
        if not ((sids == 0) | (sids == schema.schema_id)).all():
            return None
        if ns > 1 and not (p["period_us"] > 0).all():
            return None
    return stype, ns, delta


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
    unpack_crc = _CRC.unpack_from
    for i, f in enumerate(frames):
        n = len(f)
        if n >= _PREFIX_SIZE + 4 and crc32(memoryview(f)[: n - 4]) == unpack_crc(f, n - 4)[0]:
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
        joined = b"".join([frames[i] for i in idx]) if len(idx) < len(frames) else b"".join(frames)
        # The headers, copied out into a compact array: every check below runs on it.
        pre = np.frombuffer(joined, dtype=np.uint8).reshape(len(idx), n)[:, :_PREFIX_SIZE].copy()
        p = pre.view(_PREFIX_DTYPE).reshape(len(idx))
        idx_arr = np.asarray(idx, dtype=np.intp)
        fast = _uniform(joined, pre, p, n, schema)
        if fast is not None:
            stype, ns, delta = fast
            rows = np.arange(len(idx), dtype=np.intp)
            batch, good = _decode_group(joined, n, p, rows, idx_arr, schema, stype, ns, delta)
            if batch is not None:
                batches.append(batch)
            if not good.all():
                bad.extend(idx_arr[~good].tolist())
            continue
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
            if not _layout_fits(nch, stype, ns, delta, n):
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
    if len(batches) > 1:
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
    rec_dtype = _rec_dtype(n, nch, stype, ns, delta)
    all_rec = np.frombuffer(joined, dtype=rec_dtype)
    every = len(rows) == len(all_rec)
    if delta:
        rec = all_rec if every else all_rec[rows]
        acc = np.empty((len(rows), ns, nch), dtype=np.int64)
        acc[:, 0, :] = rec["first"]
        acc[:, 1:, :] = rec["d"].reshape(len(rows), ns - 1, nch)
        np.cumsum(acc, axis=1, out=acc)
        lo, hi = _LIMITS[stype]
        good = (acc.min(axis=(1, 2)) >= lo) & (acc.max(axis=(1, 2)) <= hi)
        raw = acc[good].astype(dtype)
        every = every and bool(good.all())
    else:
        raw = all_rec["s"] if every else all_rec["s"][rows]
        good = np.ones(len(rows), dtype=bool)
        if stype == ST_FLOAT32:
            good = np.isfinite(raw).all(axis=(1, 2))  # a NaN or inf sample: refused, as decode() does
            if not good.all():
                raw = raw[good]
                every = False
    if every:
        keep = rows
        hp = p
    else:
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
