"""Summaries of an interval the gateway did not finish (a crash, a kill -9, a stop between flushes).

Summaries are built in memory and sent once per ``summary.interval_s``; the readings
themselves are in the raw log. The gateway keeps a watermark, ``summary_end`` in the
registry, advanced only once the summary records up to it are durable in the forward
queue. At start-up everything the raw log received between the watermark and now is
summarised again, per device and interval (the same statistics, from the stored frames),
and sent flagged ``"rebuilt": true`` (anomaly scores are not recomputed: those records
have none). Where the raw log no longer holds the readings (its size or age limit
removed them), a ``summary_missing`` record says which span is not covered. So every
interval is either summarised or reported missing; a consumer may see an interval
twice (a crash after the records were queued, before the watermark moved) and can
drop the copy by (device, start).
"""

from __future__ import annotations

from typing import Any

from gateway.decisions import Summaries
from gateway.rawlog import LogRow, RawLog
from shared_protocol import DATA
from shared_protocol.decode import Schema
from shared_protocol.errors import ProtocolError
from shared_protocol.np_decode import decode_data_many

WATERMARK = "summary_end"


def rebuild(
    rawlog: RawLog, schemas: dict[str, Schema], *, interval_s: float, since: float, until: float
) -> list[dict[str, Any]]:
    """Summary records (and a ``summary_missing`` record where readings are gone) for what the raw
    log received after ``since`` (the watermark: the last receive time already summarised)."""
    out: list[dict[str, Any]] = []
    evicted = rawlog.evicted_through()
    if evicted is not None and evicted > since:
        out.append(
            {
                "event": "summary_missing",
                "start": since,
                "end": evicted,
                "reason": "the raw log no longer holds these readings (rawlog.max_bytes / max_age_s)",
            }
        )
        since = evicted
    rows = rawlog.received_between(since, until, types=(DATA,))
    if not rows:
        return out
    values: dict[int, Any] = {}  # id(row) -> (nsamples, nchannels) physical values
    undecodable = 0
    by_device: dict[str, list[LogRow]] = {}
    for r in rows:
        by_device.setdefault(r.device, []).append(r)
    for device, drows in by_device.items():
        schema = schemas.get(device)
        if schema is None:
            undecodable += len(drows)
            continue
        errors: list[tuple[int, ProtocolError]] = []
        for batch in decode_data_many([r.payload for r in drows], schema, errors):
            for j, idx in enumerate(batch.index.tolist()):
                values[id(drows[idx])] = batch.values[j]
        undecodable += len(errors)
    summaries = Summaries(interval_s, start=since)
    names = {d: tuple(s.names) for d, s in schemas.items()}
    blocks: list[tuple[str, tuple[str, ...], Any]] = []  # of the interval in progress
    for r in rows:
        while r.received >= summaries.start + interval_s:
            summaries.add_blocks(blocks)
            blocks = []
            out.extend(summaries.flush(summaries.start + interval_s))
        block = values.get(id(r))
        if block is not None:
            blocks.append((r.device, names[r.device], block))
    summaries.add_blocks(blocks)
    out.extend(summaries.flush(rows[-1].received))
    for rec in out:
        if "event" not in rec:
            rec["rebuilt"] = True
            if undecodable:
                rec["undecodable_frames"] = undecodable
    return out
