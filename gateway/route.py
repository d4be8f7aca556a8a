"""Route: each raw frame to its device and kind by topic, past admission.

Zero-length messages (a retained BIRTH/DEATH being cleared) are not frames; a
topic that is not a device topic of this site is counted bad; a device that
admission refuses is counted there (nothing stored, ACKed or asked).
"""

from __future__ import annotations

from gateway.admission import Admission
from gateway.batch import Batch
from gateway.counters import BadFrames, Counters
from gateway.ingest import RawFrame
from shared_protocol.errors import ProtocolError
from shared_protocol.topics import DEVICE_KINDS, levels, parse_topic

MAX_TOPIC_CACHE = 100_000


class Router:
    def __init__(self, *, prefix: str, site: str, admission: Admission, bad: BadFrames, counters: Counters) -> None:
        self.prefix = prefix
        self.site = site
        self.admission = admission
        self.bad = bad
        self.counters = counters
        self._cache: dict[str, tuple[str, str] | None] = {}

    def cached_topics(self) -> int:
        return len(self._cache)

    def route(self, batch: Batch) -> None:
        now = batch.now
        cache = self._cache
        admit = self.admission.admit
        data = batch.data
        touched = batch.touched
        for fr in batch.frames:
            if not fr.payload:
                self.counters.empty += 1
                continue
            parsed = cache.get(fr.topic) if fr.topic in cache else self._parse(fr, now)
            if parsed is None:
                continue
            device, kind = parsed
            if not admit(device, now):
                continue
            if fr.topic not in cache and len(cache) < MAX_TOPIC_CACHE:
                cache[fr.topic] = parsed
            if kind == "data":
                lst = data.get(device)
                if lst is None:
                    data[device] = [fr]
                else:
                    lst.append(fr)
            else:
                batch.inbox.append((device, kind, fr))
            if kind != "death" and touched.get(device, 0.0) < fr.received:
                touched[device] = fr.received

    def _parse(self, fr: RawFrame, now: float) -> tuple[str, str] | None:
        try:
            prefix, site, device, kind = parse_topic(fr.topic)
        except ProtocolError as exc:
            # Count it against the device when the topic names one, else against "?".
            try:
                who = levels(fr.topic)[2]
            except ProtocolError:
                who = "?"
            self.bad.add(who, exc.reason, message=str(exc), topic=fr.topic, payload=fr.payload, at=now)
            return None
        if prefix != self.prefix or site != self.site or kind not in DEVICE_KINDS:
            self.bad.add(
                device,
                "topic",
                message=f"topic {fr.topic!r} is not a device topic of this site",
                topic=fr.topic,
                payload=fr.payload,
                at=now,
            )
            return None
        return device, kind
