"""What a queued record looks like on the wire toward the cloud (JSON by default, or Sparkplug B).

JSON (default), topic ``<topic_prefix>/<gateway_id>/<lane>``::

    {"key": "<gateway>/<lane>/<epoch>-<seq>", "gateway": "gw1", "lane": "alert", "epoch": "9f1c03aa",
     "seq": 17, "created": 1700000000.123, "record": {...the submitted record...}}

``key`` is the idempotency key: the same record always carries the same key, however often it is
sent (after a reconnect, a crash or a restart).  ``seq`` increases within a lane and is never
reused in the queue file, also after a kill -9 (it may then jump ahead: see ``queue.py``); a
compacted summary gets a new ``seq`` and lists the ones it replaces under
``record.compaction.replaces``.  ``epoch`` is the forwarder run that committed the record: a new
one on every start, so a sequence number reused after a power cut never makes a key reused.

Sparkplug B is in ``gateway/forward/sparkplug.py`` (imported only when configured).
"""

from __future__ import annotations

import json

from gateway.forward.queue import LANES, QueuedRecord


def idempotency_key(gateway_id: str, lane: int, epoch: str, seq: int) -> str:
    return f"{gateway_id}/{LANES[lane]}/{epoch}-{seq}"


def json_topic(topic_prefix: str, gateway_id: str, lane: int) -> str:
    return f"{topic_prefix}/{gateway_id}/{LANES[lane]}"


def command_topic_filter(topic_prefix: str, gateway_id: str) -> str:
    return f"{topic_prefix}/{gateway_id}/cmd/#"


def encode_json(gateway_id: str, record: QueuedRecord) -> bytes:
    """The JSON envelope, built around the stored JSON text (the record is not parsed again)."""
    lane = LANES[record.lane]
    key = json.dumps(f"{gateway_id}/{lane}/{record.epoch}-{record.seq}")
    return (
        f'{{"key":{key},"gateway":{json.dumps(gateway_id)},"lane":"{lane}","epoch":{json.dumps(record.epoch)},'
        f'"seq":{record.seq},"created":{record.created!r},"record":{record.body}}}'
    ).encode()
