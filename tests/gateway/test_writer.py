"""The writer thread: commits in order, then ACKs; when it falls behind, processing waits and
the log says so."""

from __future__ import annotations

import logging
import threading

import pytest

from gateway.acker import Acker, Header
from gateway.batch import Commit
from gateway.writer import Writer
from shared_protocol.decode import decode
from tests.support.waiting import wait_until


class Published(list[tuple[str, bytes]]):
    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> bool:
        self.append((topic, payload))
        return True


def _commit(seq: int) -> Commit:
    return Commit(rows=[], seq_states={}, registry_ops=[], acks={"d": [(1, seq)]}, now=float(seq))


def test_a_writer_that_falls_behind_makes_processing_wait_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    release, entered = threading.Event(), threading.Event()
    stored: list[Commit] = []

    def store(commit: Commit) -> None:
        entered.set()
        assert release.wait(10)  # a slow disk
        stored.append(commit)

    pub = Published()
    writer = Writer(store, Acker(pub, Header(1), lambda d: f"el/s1/{d}/ack"), depth=1)
    writer.submit(_commit(1))
    assert entered.wait(10)  # the writer holds the first commit
    writer.submit(_commit(2))  # the queue (depth 1) holds the second
    with caplog.at_level(logging.WARNING, logger="gateway.writer"):
        t = threading.Thread(target=writer.submit, args=(_commit(3),))
        t.start()
        wait_until(lambda: writer.stats.waits == 1, what="processing to wait for the writer")
        release.set()
        t.join(10)
    assert any("falls behind" in r.getMessage() for r in caplog.records)
    assert writer.close()
    assert stored[0].acks["d"] == [(1, 1)]  # in order; 2 and 3 may share a commit
    acked = {s for _t, p in pub for _b, first, last in decode(p).fields["ranges"] for s in range(first, last + 1)}
    assert acked == {1, 2, 3} and writer.stats.waits == 1
